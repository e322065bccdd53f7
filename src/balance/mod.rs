//! Balance: the fourth stage (receive → shape → route → **balance** → deliver). Given the pool a
//! route picked, it chooses one backend. May import `config`, `protocol`, `route` (its input),
//! `shape` (a backend's concurrency gate) and `observe`; never `deliver`, `receive` or `cluster`,
//! and no I/O.
//!
//! [`Balancer`] owns the live [`BackendTable`] and answers "which backend for this call, excluding
//! these" ([`Balancer::take`]), or why there is none ([`Balancer::survey`]). Underneath, everything
//! is pure logic with time and randomness injected, so every decision is deterministic under test:
//!
//! 1. [`candidates::filter`] keeps the backends of the pool that serve the model and endpoint, are
//!    available ([`Health`]: healthy, not ejected, not cooling down after a 429) and have a free
//!    slot, and estimates the call's cost on each;
//! 2. [`rendezvous`] picks one when the call carries an affinity key, otherwise [`select`] with the
//!    route's [`Algorithm`];
//! 3. Deliver feeds the outcome back to the [`Backend`]: latency (time to first token for streams)
//!    into its [`PeakEwma`], success/failure into [`Health::passive`], an upstream's Retry-After into
//!    [`Health::cooldown_until`], the provider's rate-limit headers into the backend's [`quota`]
//!    view (a backend whose remaining quota will not cover the call is not a candidate; see
//!    [`quota::assess`]). Active probes report through [`Health::probe`].

mod affinity;
mod backend;
mod balancer;
pub mod candidates;
mod ewma;
mod health;
pub mod quota;
mod select;
mod table;

pub use crate::config::Algorithm;
pub use affinity::rendezvous;
pub use backend::{Backend, BackendStatus, DEFAULT_MAX_COOLDOWN, InFlightGuard};
pub use balancer::{Balancer, Survey};
pub use candidates::Want;
pub use ewma::PeakEwma;
pub use health::{Health, HealthPolicy, HealthState};
pub use select::{Candidate, PoolState, select};
pub use table::{BackendTable, BackendView, LocalView};
