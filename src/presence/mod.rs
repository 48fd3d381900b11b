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

/// The node's presence registry.
pub struct Presence {
    /// A user's connections; most users have one, kept inline.
    users: Striped<UserKey, conn_ids::Ids>,
    conns: Striped<u64, ConnInfo>,
    /// Scoped topic key (app + topic) → subscribed connection ids.
    topics: Striped<Arc<str>, HashSet<u64>>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            users: Striped::new(),
            conns: Striped::new(),
            topics: Striped::new(),
        }
    }
}

impl Presence {
    pub fn connection_opened(&self, id: u64, info: ConnInfo) {
        self.conns.lock(&id).insert(id, info);
    }

    /// Record that connection `id` is `user`; returns how many connections the user has now.
    pub fn user_joined(&self, id: u64, user: UserKey) -> usize {
        if let Some(info) = self.conns.lock(&id).get_mut(&id) {
            info.user = Some(user.clone());
        }
        let mut users = self.users.lock(&user);
        let list = users.entry(user).or_default();
        list.insert(id);
        list.len()
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
            self.forget_user_conn(&user, id);
        }
    }

    pub fn connection_closed(&self, id: u64) {
        let info = self.conns.lock(&id).remove(&id);
        if let Some(user) = info.and_then(|i| i.user) {
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
    }

    pub fn unsubscribed(&self, topic: &str, id: u64) {
        let mut t = self.topics.lock(topic);
        if let Some(set) = t.get_mut(topic) {
            set.remove(&id);
            if set.is_empty() {
                t.remove(topic);
            }
        }
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
        let mut total = 0;
        let mut authed = 0;
        for m in self.conns.all() {
            for info in m.values().filter(|i| app.is_none_or(|a| i.app == a)) {
                total += 1;
                authed += info.user.is_some() as usize;
            }
        }
        (total, authed)
    }
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

    #[test]
    fn topics_track_subscribers() {
        let p = Presence::default();
        let t: Arc<str> = "a|chat:1".into();
        p.subscribed(&t, 5);
        p.subscribed(&t, 4);
        assert_eq!(p.topic_subscribers("a|chat:1"), vec![4, 5]);
        p.unsubscribed("a|chat:1", 4);
        p.unsubscribed("a|chat:1", 5);
        assert!(p.topic_subscribers("a|chat:1").is_empty());
    }
}
