//! Balance: the fourth stage of a request's path (receive → shape → route →
//! **balance** → deliver). Given the pool a route picked, it chooses one
//! backend.
//!
//! Everything here is pure logic: no I/O, no clocks, no tasks. Time comes in
//! as [`std::time::Instant`] arguments and randomness as a `FnMut() -> f64`,
//! so every decision is deterministic under test. The gateway keeps the live
//! per-backend state ([`Health`], [`PeakEwma`], in-flight counts) and a
//! [`PoolState`] per pool, then per request:
//!
//! 1. builds a [`Candidate`] for every backend of the pool and keeps the
//!    [`eligible`] ones (healthy, not ejected, not cooling down after a 429);
//! 2. picks one with [`rendezvous`] when the request carries an affinity key,
//!    otherwise with [`select`] and the pool's [`Algorithm`];
//! 3. feeds the outcome back: [`PeakEwma::observe`] with the latency (time to
//!    first token for streams), [`Health::passive`] with success/failure and
//!    [`Health::cooldown_until`] on an upstream 429 with `Retry-After`.
//!
//! Active probes report through [`Health::probe`].

mod affinity;
mod algorithm;
mod ewma;
mod health;
mod select;

pub use affinity::{rendezvous, stable_hash};
pub use algorithm::Algorithm;
pub use ewma::PeakEwma;
pub use health::{Health, HealthPolicy, HealthState, eligible};
pub use select::{Candidate, PoolState, select};
