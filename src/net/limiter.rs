//! Per-app, per-IP limit on WebSocket upgrade attempts per minute (a fixed window per
//! app and address),
//! checked on the connect path only. Node-wide, behind striped mutexes; the sweeper
//! prunes finished windows so the table cannot grow without bound.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const STRIPES: usize = 16;

/// Most addresses tracked at once; beyond it the oldest windows are dropped early.
const MAX_TRACKED: usize = 200_000;

/// (app, address) → (minute, attempts in it).
type Windows = HashMap<(u16, IpAddr), (u64, u32)>;

#[derive(Default)]
pub struct AttemptLimiter {
    stripes: [Mutex<Windows>; STRIPES],
}

impl AttemptLimiter {
    /// Count one attempt from `ip` on `app`; false when it is over `per_minute` in this
    /// minute. `per_minute == 0` means no limit (and nothing is tracked).
    pub fn allow(&self, app: u16, ip: IpAddr, per_minute: u32) -> bool {
        per_minute == 0 || self.allow_at(app, ip, per_minute, minute_now())
    }

    fn allow_at(&self, app: u16, ip: IpAddr, per_minute: u32, minute: u64) -> bool {
        let mut m = self.stripe(&ip);
        if m.len() > MAX_TRACKED / STRIPES {
            m.retain(|_, (w, _)| *w == minute);
        }
        let e = m.entry((app, ip)).or_insert((minute, 0));
        if e.0 != minute {
            *e = (minute, 0);
        }
        e.1 += 1;
        e.1 <= per_minute
    }

    /// Forget windows that have ended.
    pub fn prune(&self) {
        let minute = minute_now();
        for s in &self.stripes {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, (w, _)| *w == minute);
        }
    }

    fn stripe(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, Windows> {
        let h = match ip {
            IpAddr::V4(v) => u32::from(*v) as usize,
            IpAddr::V6(v) => u128::from(*v) as usize,
        };
        self.stripes[h % STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_and_resets() {
        let l = AttemptLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.allow_at(0, ip, 2, 5));
        assert!(l.allow_at(0, ip, 2, 5));
        assert!(!l.allow_at(0, ip, 2, 5));
        assert!(l.allow_at(0, other, 2, 5), "per address");
        assert!(l.allow_at(1, ip, 2, 5), "per app");
        assert!(l.allow_at(0, ip, 2, 6), "new minute");
    }
}
