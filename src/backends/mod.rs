//! Backends: the live table of upstreams between Route and Deliver. Config plus what we learn
//! (health, latency, in-flight, cooldown). Balance reads it through [`BackendView`]; Deliver and the
//! health prober write to it; the cluster layer can merge gossip into the same view later.

mod prober;
mod state;

pub use prober::spawn_probers;
pub use state::{Backend, BackendStatus, InFlightGuard};

use std::sync::Arc;
use std::time::Instant;

/// What the balancer needs to know about a backend right now. The local table implements it;
/// a cluster-wide view (gossip-fed) wraps the local one and merges the peers' reports.
pub trait BackendView: Send + Sync {
    fn status(&self, backend: &Backend, now: Instant) -> BackendStatus;
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
