//! Sluice: a clustered AI API gateway.
//!
//! ```text
//!  client ──► Receive ──► Shape ──► Route ──► Balance ──► Deliver ──► backend
//!             (tls, id,   (the door:  (rules →  (which      (the attempt:
//!              auth,       class,      pool)     backend,    send, fail
//!              body)       buckets,              health,     over, stream
//!                          slot queue)           affinity)   back)
//! ```
//! One folder per stage; a request visits each once, in this order (`receive::handle` reads top to
//! bottom), and stages hand each other typed values (`Arrival`/`Admitted`, `RouteDecision`, `Want`,
//! `Call`), never globals. Beside the pipeline: `protocol` (what both sides speak), `translate`
//! (protocol knowledge), `ratelimit` (Shape's seam), `cluster` (Balance's shared view), `observe`
//! (metrics, admin endpoints), `config`. `app` builds the whole thing from a `config::Config`.
#![forbid(unsafe_code)]

pub mod app;
pub mod balance;
pub mod calendar;
pub mod cluster;
pub mod config;
pub mod deliver;
pub mod error;
pub mod hash;
pub mod mock;
pub mod observe;
pub mod protocol;
pub mod ratelimit;
pub mod receive;
pub mod reload;
pub mod route;
pub mod shape;
pub mod translate;
