//! Cluster: beside the pipeline (Receive → Shape → Route → Balance → Deliver), gossip membership
//! (chitchat) feeding the shared backend view (the Balancer's `view`) and the live-node count the
//! rate limiter divides its fallback by. Imports `crate::config` and the backend table
//! (`crate::balance`) and records through `crate::observe`, never `receive`, `deliver` or the other stages.
//!
//! ```text
//!  BackendTable ──local_status──► publisher ──set_self──► chitchat ◄──gossip──► peers
//!        │                                                    │
//!        │                                      live-nodes watcher (each round)
//!        │                                                    ▼
//!        └──local_status──► ClusterView::status ◄── PeerAggregate per backend (refresh task)
//! ```
//! - [`Cluster`] ([`membership`]) is the only code that touches chitchat: `join`, `live_nodes`,
//!   `live_count_watch`, `divisor_watch`, `set_self` / `delete_self`, `leave`. Gossip keys live in
//!   [`keys`].
//! - [`divisor`]: the count the limiter's fallback divides by; a node that hears no gossip keeps the
//!   last stable count instead of believing it is alone.
//! - [`publisher`] gossips this node's [`BackendReport`] per backend on meaningful change, and its
//!   latest quota observation per backend ([`quota`]: merged by the freshest observation).
//! - [`ClusterView`] implements [`crate::balance::BackendView`]: this node's own status merged with
//!   the live peers' fresh reports; the rule is documented and tested in [`merge`].
//!
//! Wiring (in `app`):
//! ```ignore
//! let transport = cluster::transport::from_config(&cfg.cluster)?; // sealed, or plain if insecure
//! let cluster = Cluster::join(&cfg.cluster, &cfg.node.id, transport.as_ref()).await?;
//! let _publisher = cluster::publisher(&cluster, backends.clone());
//! let view = ClusterView::new(&cluster, backends.clone()); // Arc<ClusterView>: the Balancer's `view`
//! // /admin/cluster → view.admin_json(); on shutdown → cluster.leave().await
//! ```
//!
//! Gossip is sealed ([`transport::SealedTransport`], [`seal`]): every packet authenticated and
//! encrypted with the cluster key, replays dropped. Plaintext gossip only with `cluster.insecure: true`.

pub mod divisor;
mod join;
pub mod keys;
mod leave;
mod member;
pub mod membership;
pub mod merge;
pub mod publisher;
pub mod quota;
pub mod report;
pub mod seal;
mod self_keys;
pub mod transport;
pub mod view;
mod watcher;

#[cfg(test)]
mod tests;

pub use keys::NodeStatus;
pub use membership::{Cluster, Member, NodeInfo, failure_detector_config};
pub use merge::PeerAggregate;
pub use publisher::publisher;
pub use report::{BackendReport, MAX_REPORT_AGE, ReportError};
pub use view::ClusterView;

use std::net::SocketAddr;

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("cannot resolve gossip address `{addr}`: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("cannot start gossip on {addr}: {reason}")]
    Start { addr: SocketAddr, reason: String },
}
