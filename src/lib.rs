//! Sluice: a clustered AI API gateway.
//!
//! ```text
//!  client ──► Receive ──► Shape ──► Route ──► Balance ──► Deliver ──► backend
//!             (tls, id,   (rate      (rules →  (algorithm, (pooled client,
//!              auth,       limiter    pool)     health,     failover, SSE,
//!              limits)     seam)               affinity)   translation)
//! ```
//! Each stage is a module; stages hand each other typed values (`RequestMeta`, `RouteDecision`,
//! `Candidate`), never globals. `app` builds the whole thing from a `config::Config`.
#![forbid(unsafe_code)]

pub mod app;
pub mod backends;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod deliver;
pub mod error;
pub mod mock;
pub mod observe;
pub mod protocol;
pub mod ratelimit;
pub mod receive;
pub mod route;
pub mod shape;
pub mod translate;
