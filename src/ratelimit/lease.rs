//! Request leases: a node takes several request tokens from the global bucket in one Redis call and
//! hands them out locally, so a tenant with a large request limit costs a fraction of a Redis call per
//! request. The lease is sized so that the cluster can never over-admit by more than about 1% of the
//! limit: `lease = limit / (100 × live nodes)`, at most [`MAX_LEASE`]; below 2 there is no leasing.
//! Unused tokens of a lease older than [`LEASE_TTL`] are dropped (under-admission, bounded the same
//! way), so leased tokens are spent close to when they were taken from the bucket.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub const MAX_LEASE: u32 = 64;
pub const LEASE_TTL: Duration = Duration::from_millis(500);

/// How many requests one Redis call takes for a tenant with `rpm` and `burst`, `nodes` live nodes.
pub fn lease_size(rpm: u32, burst: u32, nodes: usize) -> u32 {
    let cap = rpm.min(burst) as usize;
    let n = cap / (100 * nodes.max(1));
    (n as u32).min(MAX_LEASE)
}

#[derive(Debug, Default)]
pub struct Lease {
    state: Mutex<Option<(u32, Instant)>>,
}

impl Lease {
    /// Take one leased request if a fresh one is left.
    pub fn take(&self, now: Instant) -> bool {
        let mut s = self.state.lock().expect("lease lock");
        match s.as_mut() {
            Some((left, at)) if *left > 0 && now.duration_since(*at) < LEASE_TTL => {
                *left -= 1;
                true
            }
            _ => {
                *s = None;
                false
            }
        }
    }

    /// A new lease of `n` requests, one of which the caller uses now. Requests that raced for a lease
    /// add theirs to what is left rather than dropping it (those tokens are already out of the bucket).
    pub fn grant(&self, n: u32, now: Instant) {
        let mut s = self.state.lock().expect("lease lock");
        let kept = match *s {
            Some((left, at)) if now.duration_since(at) < LEASE_TTL => left,
            _ => 0,
        };
        *s = Some((kept + n.saturating_sub(1), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_to_one_percent_of_the_limit_across_nodes() {
        assert_eq!(lease_size(300, 300, 3), 1);
        assert_eq!(lease_size(60_000, 60_000, 3), MAX_LEASE);
        assert_eq!(lease_size(6_000, 6_000, 3), 20);
        assert_eq!(lease_size(6_000, 600, 3), 2);
        assert_eq!(lease_size(100_000_000, 1_000_000, 1), MAX_LEASE);
    }

    #[test]
    fn hands_out_what_was_granted_then_expires() {
        let l = Lease::default();
        let t = Instant::now();
        assert!(!l.take(t));
        l.grant(3, t);
        assert!(l.take(t));
        assert!(l.take(t));
        assert!(!l.take(t));
        // Two racing grants add up.
        l.grant(2, t);
        l.grant(2, t);
        assert!(l.take(t) && l.take(t) && !l.take(t));
        l.grant(5, t);
        assert!(!l.take(t + LEASE_TTL));
    }
}
