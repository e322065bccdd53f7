//! The local fallback of the cluster limiter: each tenant's quota divided by the live node count, so
//! the nodes together still admit about the global limit while Redis is away. Rebuilt (fresh, full
//! buckets) whenever the node count changes.

use super::LocalLimiter;
use super::local::Quotas;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

pub(crate) struct Fallback {
    quotas: Vec<(String, Quotas)>,
    current: RwLock<Arc<LocalLimiter>>,
    divisor: AtomicUsize,
}

impl Fallback {
    pub(crate) fn new(quotas: Vec<(String, Quotas)>, live_nodes: usize) -> Fallback {
        let n = live_nodes.max(1);
        let limiter = Arc::new(build(&quotas, n));
        Fallback {
            quotas,
            current: RwLock::new(limiter),
            divisor: AtomicUsize::new(n),
        }
    }

    /// The current local limiter (the read lock is held only to clone the Arc).
    pub(crate) fn get(&self) -> Arc<LocalLimiter> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn divisor(&self) -> usize {
        self.divisor.load(Ordering::Relaxed)
    }

    /// Re-divide among `live_nodes`. Returns the previous divisor when it changed.
    pub(crate) fn resize(&self, live_nodes: usize) -> Option<usize> {
        let n = live_nodes.max(1);
        let previous = self.divisor();
        if previous == n {
            return None;
        }
        let limiter = Arc::new(build(&self.quotas, n));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = limiter;
        self.divisor.store(n, Ordering::Relaxed);
        Some(previous)
    }
}

fn build(quotas: &[(String, Quotas)], n: usize) -> LocalLimiter {
    LocalLimiter::with_quotas(quotas.iter().map(|(id, q)| (id.clone(), q.divided(n))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::LimitRequest;

    fn admitted(f: &Fallback, n: usize) -> usize {
        (0..n)
            .filter(|_| {
                f.get()
                    .decide(LimitRequest {
                        tenant: "t",
                        requests: 1,
                        tokens: 0,
                    })
                    .allowed
            })
            .count()
    }

    #[test]
    fn divides_and_redivides() {
        let q = Quotas {
            requests_per_minute: Some(60),
            burst: Some(30),
            tokens_per_minute: None,
        };
        let f = Fallback::new(vec![("t".into(), q)], 3);
        assert_eq!(f.divisor(), 3);
        assert_eq!(admitted(&f, 50), 10);
        assert_eq!(f.resize(3), None);
        assert_eq!(f.resize(2), Some(3));
        assert_eq!(admitted(&f, 50), 15);
        assert_eq!(f.resize(0), Some(2), "0 live nodes counts as 1");
        assert_eq!(f.divisor(), 1);
    }
}
