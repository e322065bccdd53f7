//! The live backend table and the view the balancer reads it through: this node's own knowledge,
//! or (in a cluster) the same merged with the peers' reports.

use super::quota::Basis;
use super::{Backend, BackendStatus};
use std::sync::Arc;
use std::time::Instant;

/// What the balancer needs to know about a backend right now. The local table implements it;
/// a cluster-wide view (gossip-fed) wraps the local one and merges the peers' reports.
pub trait BackendView: Send + Sync {
    fn status(&self, backend: &Backend, now: Instant) -> BackendStatus;

    /// The quota observation to pace `backend` by at `now_ms` (unix ms), and how many nodes share
    /// it; `None` when no answer said anything (yet, or any more). Alone: this node's own, share 1.
    fn quota(&self, backend: &Backend, now_ms: u64) -> Option<Basis> {
        backend
            .local_quota(now_ms)
            .map(|obs| Basis { obs, share: 1 })
    }
}

/// This node's own knowledge only.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalView;

impl BackendView for LocalView {
    fn status(&self, backend: &Backend, now: Instant) -> BackendStatus {
        backend.local_status(now)
    }
}

pub type BackendTable = Arc<Vec<Arc<Backend>>>;
