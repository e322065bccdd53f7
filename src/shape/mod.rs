//! Shape: the second stage (receive → **shape** → route → balance → deliver) — decides when a
//! request may start. May import `config`, `ratelimit` (its seam to the buckets) and `observe`.
//!
//! [`Door`] is the one way in: a request passes it once ([`Door::admit`]: class, deadline, its
//! tenant's buckets) and gets an [`Admitted`] pass, the only way to a backend slot
//! ([`Admitted::slot`]). The mechanisms behind it, each independent and unit-tested:
//! - [`priority`]: a request's class (tier, request type, header) and its client deadline.
//! - [`AdmissionQueue`]: requests that cannot start yet wait here instead of getting an instant
//!   429/503, served by priority, fairly among tenants (weighted fair queuing), earliest deadline first;
//!   bounded, with deadlines, a maximum wait and CoDel shedding of non-critical work under congestion.
//! - [`ConcurrencyLimit`]: a per-backend adaptive concurrency limit (Gradient2), and [`allows`], which
//!   keeps a share of each limit for critical traffic.
//! - [`Pacer`]: GCRA spacing of request starts to a backend.

mod codel;
mod door;
mod fair;
pub mod gradient;
pub mod pacer;
pub mod priority;
pub mod queue;
#[cfg(test)]
mod queue_tests;
mod spend;
mod ticket;

pub use door::{AdmitError, Admitted, Arrival, DEFAULT_EST_OUTPUT, Door, Paced, UsageSink};
pub use gradient::{ConcurrencyLimit, Outcome, allows};
pub use pacer::Pacer;
pub use priority::{classify, parse_deadline};
pub use queue::{AdmissionQueue, Shed, Ticket};
pub use spend::{HeldBudget, Used};
