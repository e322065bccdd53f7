//! The local fallback of the cluster limiter: each tenant's quota divided by the live node count, so
//! the nodes together still admit about the global limit while Redis is away.
//!
//! A mode switch never hands out capacity: the fallback starts empty when the node starts, and when
//! the breaker opens it is rebuilt from this node's share of each tenant's last known global level
//! (debt included; a tenant never seen starts empty). A change of the node count re-divides what each
//! bucket holds. Returning to global mode carries nothing over: Redis holds the truth.

use super::LocalLimiter;
use super::local::{Levels, Quotas};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub(crate) struct Fallback {
    /// Each tenant's global quota (a config reload replaces them).
    quotas: RwLock<Vec<(String, Quotas)>>,
    current: RwLock<Arc<LocalLimiter>>,
    divisor: AtomicUsize,
    /// Tenants whose buckets started from a global level this node saw: their level, times the
    /// divisor, is what the cluster's buckets hold as far as this node knows.
    anchored: Mutex<HashSet<String>>,
}

/// What to tell Redis of one tenant when it answers again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settle {
    pub(crate) tenant: String,
    /// Admitted locally (requests, tokens): charged to the global buckets.
    pub(crate) spent: (i64, i64),
    /// The most the global buckets can hold as this node knows them (requests, tokens; None:
    /// nothing known): the cluster's debt survives a Redis that restarted empty.
    pub(crate) ceiling: (Option<i64>, Option<i64>),
}

impl Fallback {
    /// Empty buckets, divided among `live_nodes`.
    pub(crate) fn new(quotas: Vec<(String, Quotas)>, live_nodes: usize) -> Fallback {
        let n = live_nodes.max(1);
        let limiter = Arc::new(build(&quotas, n, |_| Levels::EMPTY));
        Fallback {
            quotas: RwLock::new(quotas),
            current: RwLock::new(limiter),
            divisor: AtomicUsize::new(n),
            anchored: Mutex::new(HashSet::new()),
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

    fn quotas(&self) -> Vec<(String, Quotas)> {
        self.quotas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// New global quotas (a config reload): the current buckets are retuned to this node's share,
    /// keeping what they hold (see [`LocalLimiter::retune`]).
    pub(crate) fn retune(&self, quotas: Vec<(String, Quotas)>) {
        let n = self.divisor();
        self.get()
            .retune(quotas.iter().map(|(id, q)| (id.clone(), q.divided(n))));
        *self.quotas.write().unwrap_or_else(|e| e.into_inner()) = quotas;
    }

    fn install(&self, limiter: LocalLimiter) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(limiter);
    }

    /// Start over from the tenants' global levels (what the whole cluster's buckets held): each
    /// bucket gets this node's share. Tenants missing from `global` start empty.
    pub(crate) fn seed(&self, global: &HashMap<String, Levels>) {
        let n = self.divisor();
        let share = |id: &str| {
            global
                .get(id)
                .map_or(Levels::EMPTY, |l| scaled(*l, 1.0 / n as f64))
        };
        self.install(build(&self.quotas(), n, share));
        *self.anchored.lock().unwrap_or_else(|e| e.into_inner()) = global.keys().cloned().collect();
    }

    /// What the fallback admitted since the last call, and for anchored tenants the ceiling their
    /// levels put on the global buckets (before their own admissions, which the charge takes).
    /// Anchors are used once.
    pub(crate) fn settle(&self) -> Vec<Settle> {
        let n = self.divisor() as f64;
        let anchored =
            std::mem::take(&mut *self.anchored.lock().unwrap_or_else(|e| e.into_inner()));
        self.get()
            .take_spent()
            .into_iter()
            .filter_map(|s| {
                let spent = (s.requests.round() as i64, s.tokens.round() as i64);
                let ceiling = if anchored.contains(&s.tenant) {
                    let c = |level: Option<f64>, spent: f64| {
                        level.map(|l| ((l + spent) * n).floor() as i64)
                    };
                    (
                        c(s.levels.requests, s.requests),
                        c(s.levels.tokens, s.tokens),
                    )
                } else {
                    (None, None)
                };
                (spent != (0, 0) || ceiling != (None, None)).then_some(Settle {
                    tenant: s.tenant,
                    spent,
                    ceiling,
                })
            })
            .collect()
    }

    /// Re-divide among `live_nodes`, keeping the share each bucket holds. Returns the previous
    /// divisor when it changed.
    pub(crate) fn resize(&self, live_nodes: usize) -> Option<usize> {
        let n = live_nodes.max(1);
        let previous = self.divisor();
        if previous == n {
            return None;
        }
        let now = self.get().levels();
        let factor = previous as f64 / n as f64;
        let keep = |id: &str| now.get(id).map_or(Levels::EMPTY, |l| scaled(*l, factor));
        self.install(build(&self.quotas(), n, keep));
        self.divisor.store(n, Ordering::Relaxed);
        Some(previous)
    }
}

/// `l` times `f`; a full bucket (`None`) stays full.
fn scaled(l: Levels, f: f64) -> Levels {
    Levels {
        requests: l.requests.map(|x| x * f),
        tokens: l.tokens.map(|x| x * f),
    }
}

fn build(quotas: &[(String, Quotas)], n: usize, start: impl Fn(&str) -> Levels) -> LocalLimiter {
    LocalLimiter::with_quotas(
        quotas
            .iter()
            .map(|(id, q)| (id.clone(), q.divided(n), start(id))),
    )
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
                        max_wait: std::time::Duration::ZERO,
                    })
                    .allowed
            })
            .count()
    }

    fn quota() -> Vec<(String, Quotas)> {
        let q = Quotas {
            requests_per_minute: Some(60),
            burst: Some(30),
            tokens_per_minute: None,
        };
        vec![("t".into(), q)]
    }

    #[tokio::test(start_paused = true)]
    async fn starts_empty_then_seeds_this_nodes_share_of_the_global_level() {
        let f = Fallback::new(quota(), 3);
        assert_eq!(f.divisor(), 3);
        assert_eq!(admitted(&f, 50), 0, "a starting node hands out no burst");
        let global = HashMap::from([(
            "t".to_string(),
            Levels {
                requests: Some(12.0),
                tokens: None,
            },
        )]);
        f.seed(&global);
        assert_eq!(
            admitted(&f, 50),
            4,
            "a third of the 12 the cluster had left"
        );
        f.seed(&HashMap::new());
        assert_eq!(admitted(&f, 50), 0, "a tenant never seen starts empty");
        let full = HashMap::from([("t".to_string(), Levels::FULL)]);
        f.seed(&full);
        assert_eq!(
            admitted(&f, 50),
            10,
            "a full global bucket: a third of the burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_node_count_redivides_what_the_buckets_hold() {
        let f = Fallback::new(quota(), 3);
        f.seed(&HashMap::from([("t".to_string(), Levels::FULL)]));
        assert_eq!(admitted(&f, 4), 4);
        assert_eq!(f.resize(3), None);
        // 6 of 10 left on 1/3 of the cluster; on 1/2 of it that share is 9.
        assert_eq!(f.resize(2), Some(3));
        assert_eq!(admitted(&f, 50), 9);
        assert_eq!(f.resize(0), Some(2), "0 live nodes counts as 1");
        assert_eq!(f.divisor(), 1);
        assert_eq!(admitted(&f, 50), 0, "nothing appears from a re-division");
    }

    #[tokio::test(start_paused = true)]
    async fn settling_charges_the_spend_and_caps_at_what_the_node_knows() {
        let f = Fallback::new(quota(), 3);
        // Never anchored: only the spend (nothing) is reported.
        assert!(f.settle().is_empty());
        // The cluster's bucket was in debt: -9, so -3 here.
        f.seed(&HashMap::from([(
            "t".to_string(),
            Levels {
                requests: Some(-9.0),
                tokens: None,
            },
        )]));
        assert_eq!(admitted(&f, 5), 0);
        let s = f.settle();
        assert_eq!(
            s,
            vec![Settle {
                tenant: "t".into(),
                spent: (0, 0),
                ceiling: (Some(-9), None),
            }]
        );
        // Anchors are used once; spend alone is reported after that.
        assert!(f.settle().is_empty());
    }
}
