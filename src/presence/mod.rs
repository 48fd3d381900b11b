//! Who is online on this node: users and their connections, with each connection's
//! details, and each topic's subscribers.
//!
//! This is node-wide state that backends query (`is_online`, `get_online_users`,
//! connection info, topic subscribers) and that the per-user connection limit reads. It
//! changes only when a connection opens, authenticates, subscribes, unsubscribes or
//! closes — never per message — so it is kept behind a few sharded mutexes that every
//! shard may touch on those events, instead of making every query a round trip through
//! all shards. The message path never touches it.
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Lock stripes per map: enough that shards rarely meet on one.
const STRIPES: usize = 16;

/// A user within an app (by app index).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey {
    pub app: u16,
    pub user_type: Box<str>,
    pub user_id: Box<str>,
}

/// What is known of one connection. Kept small: one per connection on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// App index.
    pub app: u16,
    /// Endpoint index within the app.
    pub endpoint: u16,
    /// Unix seconds.
    pub connected_at: u32,
    pub user: Option<UserKey>,
    pub remote: SocketAddr,
}

struct Striped<K, V> {
    stripes: Vec<Mutex<HashMap<K, V>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq, V> Striped<K, V> {
    fn new() -> Self {
        Striped {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn lock<Q: Hash + ?Sized>(&self, k: &Q) -> MutexGuard<'_, HashMap<K, V>> {
        let i = self.hasher.hash_one(k) as usize % STRIPES;
        // A poisoned stripe means a panic elsewhere already; keep serving its data.
        self.stripes[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn all(&self) -> impl Iterator<Item = MutexGuard<'_, HashMap<K, V>>> {
        self.stripes
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A change to the registry, for a mirror that copies it elsewhere (Redis). It names
/// *what* changed; the mirror reads the current state back when it writes, so a burst
/// of changes to one thing costs one write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// A connection opened, closed, or became a user.
    Conn { app: u16, id: u64 },
    /// A user's set of connections changed.
    User(UserKey),
    /// A tracked topic's subscribers changed (scoped key).
    Topic(Arc<str>),
}

/// Told of every change; must be quick and must not block (it runs on the shards).
pub trait Mirror: Send + Sync {
    fn changed(&self, change: Change);
}

/// The node's presence registry.
pub struct Presence {
    mirror: std::sync::OnceLock<Arc<dyn Mirror>>,
    /// Per app: (connections, authenticated connections), kept as they change so
    /// counting is O(apps), not O(connections).
    counts: Mutex<HashMap<u16, (usize, usize)>>,
    /// A user's connections; most users have one, kept inline.
    users: Striped<UserKey, conn_ids::Ids>,
    conns: Striped<u64, ConnInfo>,
    /// Scoped topic key (app + topic) → subscribed connection ids.
    topics: Striped<Arc<str>, HashSet<u64>>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            mirror: std::sync::OnceLock::new(),
            counts: Mutex::new(HashMap::new()),
            users: Striped::new(),
            conns: Striped::new(),
            topics: Striped::new(),
        }
    }
}

impl Presence {
    /// Copy every change to `mirror` from now on (set once, at start).
    pub fn set_mirror(&self, mirror: Arc<dyn Mirror>) -> bool {
        self.mirror.set(mirror).is_ok()
    }

    fn tell(&self, change: impl FnOnce() -> Change) {
        if let Some(m) = self.mirror.get() {
            m.changed(change());
        }
    }

    /// Adjust an app's (connections, authenticated) counts.
    fn count(&self, app: u16, conns: isize, authed: isize) {
        let mut m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.entry(app).or_default();
        c.0 = c.0.saturating_add_signed(conns);
        c.1 = c.1.saturating_add_signed(authed);
        if *c == (0, 0) {
            m.remove(&app);
        }
    }

    pub fn connection_opened(&self, id: u64, info: ConnInfo) {
        let app = info.app;
        self.count(app, 1, info.user.is_some() as isize);
        self.conns.lock(&id).insert(id, info);
        self.tell(|| Change::Conn { app, id });
    }

    /// Record that connection `id` is `user`; returns how many connections the user has now.
    pub fn user_joined(&self, id: u64, user: UserKey) -> usize {
        let was_anonymous = self
            .conns
            .lock(&id)
            .get_mut(&id)
            .is_some_and(|info| info.user.replace(user.clone()).is_none());
        if was_anonymous {
            self.count(user.app, 0, 1);
        }
        self.tell(|| Change::Conn { app: user.app, id });
        let n = {
            let mut users = self.users.lock(&user);
            let list = users.entry(user.clone()).or_default();
            list.insert(id);
            list.len()
        };
        // After the change: the mirror reads the state back later.
        self.tell(|| Change::User(user));
        n
    }

    /// How many connections `user` has now.
    pub fn user_connections(&self, user: &UserKey) -> Vec<u64> {
        self.users
            .lock(user)
            .get(user)
            .map(|l| l.to_vec())
            .unwrap_or_default()
    }

    pub fn is_online(&self, user: &UserKey) -> bool {
        self.users
            .lock(user)
            .get(user)
            .is_some_and(|l| !l.is_empty())
    }

    /// Undo [`user_joined`](Self::user_joined) for a connection refused as a user
    /// (over the per-user limit); it stays known as a connection until it closes.
    pub fn user_refused(&self, id: u64) {
        let user = self
            .conns
            .lock(&id)
            .get_mut(&id)
            .and_then(|i| i.user.take());
        if let Some(user) = user {
            self.count(user.app, 0, -1);
            self.tell(|| Change::Conn { app: user.app, id });
            self.forget_user_conn(&user, id);
        }
    }

    pub fn connection_closed(&self, id: u64) {
        let Some(info) = self.conns.lock(&id).remove(&id) else {
            return;
        };
        self.count(info.app, -1, -(info.user.is_some() as isize));
        self.tell(|| Change::Conn { app: info.app, id });
        if let Some(user) = info.user {
            self.forget_user_conn(&user, id);
        }
    }

    fn forget_user_conn(&self, user: &UserKey, id: u64) {
        {
            let mut users = self.users.lock(user);
            if let Some(list) = users.get_mut(user) {
                list.remove(id);
                if list.is_empty() {
                    users.remove(user);
                }
            }
        }
        self.tell(|| Change::User(user.clone()));
    }

    pub fn connection(&self, id: u64) -> Option<ConnInfo> {
        self.conns.lock(&id).get(&id).cloned()
    }

    pub fn subscribed(&self, topic: &Arc<str>, id: u64) {
        self.topics
            .lock(&**topic)
            .entry(topic.clone())
            .or_default()
            .insert(id);
        self.tell(|| Change::Topic(topic.clone()));
    }

    pub fn unsubscribed(&self, topic: &Arc<str>, id: u64) {
        let removed = {
            let mut t = self.topics.lock(&**topic);
            match t.get_mut(&**topic) {
                Some(set) => {
                    let removed = set.remove(&id);
                    if set.is_empty() {
                        t.remove(&**topic);
                    }
                    removed
                }
                None => false,
            }
        };
        if removed {
            self.tell(|| Change::Topic(topic.clone()));
        }
    }

    /// Every connection of an app on this node (for rewriting a mirror).
    pub fn app_connections(&self, app: u16) -> Vec<u64> {
        let mut v = Vec::new();
        for m in self.conns.all() {
            v.extend(m.iter().filter(|(_, i)| i.app == app).map(|(&id, _)| id));
        }
        v
    }

    /// Every tracked topic with subscribers on this node (for rewriting a mirror).
    pub fn tracked_topics(&self) -> Vec<Arc<str>> {
        let mut v = Vec::new();
        for m in self.topics.all() {
            v.extend(m.keys().cloned());
        }
        v
    }

    pub fn topic_subscribers(&self, topic: &str) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .topics
            .lock(topic)
            .get(topic)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Online users of an app, optionally of one user type, sorted.
    pub fn online_users(&self, app: u16, user_type: Option<&str>) -> Vec<UserKey> {
        let mut out: Vec<UserKey> = self
            .users
            .all()
            .flat_map(|m| {
                m.keys()
                    .filter(|u| u.app == app && user_type.is_none_or(|t| &*u.user_type == t))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }

    /// Connections of an app (all apps when `None`), and how many are authenticated.
    pub fn counts(&self, app: Option<u16>) -> (usize, usize) {
        let m = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|(a, _)| app.is_none_or(|x| x == **a))
            .fold((0, 0), |(t, u), (_, c)| (t + c.0, u + c.1))
    }
}

/// A connection as the API shows it (and as the Redis broker stores it).
pub fn info_json(apps: &[crate::app::App], id: u64, i: &ConnInfo) -> serde_json::Value {
    let app = apps.get(usize::from(i.app));
    info_json_with(
        app.map(|a| &*a.name),
        app.and_then(|a| a.endpoints().get(usize::from(i.endpoint)))
            .map(|e| e.path.as_str()),
        id,
        i,
    )
}

/// [`info_json`] given the app's name and the endpoint's path.
pub fn info_json_with(
    app: Option<&str>,
    endpoint: Option<&str>,
    id: u64,
    i: &ConnInfo,
) -> serde_json::Value {
    let u = i.user.as_ref();
    serde_json::json!({
        "conn_id": crate::hub::conn::format_conn_id(id),
        "app": app,
        "endpoint": endpoint,
        "user_type": u.map(|u| &*u.user_type),
        "user_id": u.map(|u| &*u.user_id),
        "connected_at": i.connected_at,
        "remote_addr": i.remote.to_string(),
    })
}

/// A set of connection ids that stores one id inline and spills to a `Vec` only for
/// users with several connections.
mod conn_ids {
    #[derive(Debug, Default, Clone)]
    pub enum Ids {
        #[default]
        Empty,
        One(u64),
        Many(Vec<u64>),
    }

    impl Ids {
        pub fn insert(&mut self, id: u64) {
            match self {
                Ids::Empty => *self = Ids::One(id),
                Ids::One(a) if *a == id => {}
                Ids::One(a) => *self = Ids::Many(vec![*a, id]),
                Ids::Many(v) if !v.contains(&id) => v.push(id),
                Ids::Many(_) => {}
            }
        }

        pub fn remove(&mut self, id: u64) {
            match self {
                Ids::One(a) if *a == id => *self = Ids::Empty,
                Ids::Many(v) => {
                    v.retain(|&c| c != id);
                    if v.len() == 1 {
                        *self = Ids::One(v[0]);
                    }
                }
                _ => {}
            }
        }

        pub fn len(&self) -> usize {
            match self {
                Ids::Empty => 0,
                Ids::One(_) => 1,
                Ids::Many(v) => v.len(),
            }
        }

        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        pub fn to_vec(&self) -> Vec<u64> {
            match self {
                Ids::Empty => Vec::new(),
                Ids::One(a) => vec![*a],
                Ids::Many(v) => v.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(app: u16, t: &str, id: &str) -> UserKey {
        UserKey {
            app,
            user_type: t.into(),
            user_id: id.into(),
        }
    }

    fn info(app: u16) -> ConnInfo {
        ConnInfo {
            app,
            endpoint: 0,
            user: None,
            connected_at: 1,
            remote: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn users_come_and_go() {
        let p = Presence::default();
        let alice = user(0, "user", "alice");
        p.connection_opened(1, info(0));
        p.connection_opened(2, info(0));
        p.connection_opened(3, info(1));
        assert_eq!(p.user_joined(1, alice.clone()), 1);
        assert_eq!(p.user_joined(2, alice.clone()), 2);
        assert_eq!(p.user_joined(2, alice.clone()), 2, "idempotent");
        p.user_joined(3, user(1, "user", "alice"));
        assert!(p.is_online(&alice));
        assert_eq!(p.online_users(0, None), vec![alice.clone()]);
        assert_eq!(p.online_users(0, Some("staff")), vec![]);
        assert_eq!(p.counts(Some(0)), (2, 2));
        assert_eq!(p.counts(None), (3, 3));
        p.connection_closed(1);
        assert!(p.is_online(&alice));
        p.user_refused(2);
        assert!(!p.is_online(&alice), "offline after the last connection");
        assert_eq!(
            p.counts(Some(0)),
            (1, 0),
            "a refused user stays a connection"
        );
        assert!(p.is_online(&user(1, "user", "alice")), "apps are separate");
        assert_eq!(p.connection(3).unwrap().user.unwrap().app, 1);
    }

    #[derive(Default)]
    struct Log(Mutex<Vec<Change>>);
    impl Mirror for Log {
        fn changed(&self, c: Change) {
            self.0.lock().unwrap().push(c);
        }
    }

    #[test]
    fn a_mirror_hears_of_every_change_after_it_happened() {
        let p = Arc::new(Presence::default());
        let log = Arc::new(Log::default());
        assert!(p.set_mirror(log.clone()));
        let alice = user(0, "user", "alice");
        p.connection_opened(1, info(0));
        p.user_joined(1, alice.clone());
        let t: Arc<str> = "0|room".into();
        p.subscribed(&t, 1);
        p.unsubscribed(&t, 1);
        p.unsubscribed(&t, 1); // not subscribed: no change
        p.connection_closed(1);
        p.connection_closed(1); // already gone: no change
        let got = std::mem::take(&mut *log.0.lock().unwrap());
        assert_eq!(
            got,
            vec![
                Change::Conn { app: 0, id: 1 },
                Change::Conn { app: 0, id: 1 },
                Change::User(alice.clone()),
                Change::Topic(t.clone()),
                Change::Topic(t.clone()),
                Change::Conn { app: 0, id: 1 },
                Change::User(alice),
            ]
        );
        assert_eq!(p.counts(None), (0, 0));
    }

    #[test]
    fn counts_follow_connections_and_users() {
        let p = Presence::default();
        p.connection_opened(1, info(0));
        p.connection_opened(2, info(0));
        p.connection_opened(3, info(1));
        p.user_joined(1, user(0, "user", "a"));
        assert_eq!(p.counts(Some(0)), (2, 1));
        assert_eq!(p.counts(None), (3, 1));
        p.user_refused(1);
        assert_eq!(p.counts(Some(0)), (2, 0));
        p.user_joined(2, user(0, "user", "b"));
        p.connection_closed(2);
        p.connection_closed(3);
        assert_eq!(p.counts(None), (1, 0));
    }

    #[test]
    fn topics_track_subscribers() {
        let p = Presence::default();
        let t: Arc<str> = "a|chat:1".into();
        p.subscribed(&t, 5);
        p.subscribed(&t, 4);
        assert_eq!(p.topic_subscribers("a|chat:1"), vec![4, 5]);
        p.unsubscribed(&t, 4);
        p.unsubscribed(&t, 5);
        assert!(p.topic_subscribers("a|chat:1").is_empty());
    }
}
