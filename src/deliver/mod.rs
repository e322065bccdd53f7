//! Deliver: the fifth stage (receive → shape → route → balance → **deliver**): only the attempt.
//! Ask Balance for a backend (through Shape's slot pass), send over a pooled connection, fail over
//! while nothing has reached the client, stream SSE back, report outcomes to the backend. Protocol
//! knowledge (plans, translation, usage) comes from `translate`. May import every earlier stage's
//! types, `translate`, `protocol` and `observe`; never `receive` or `cluster`.
//!
//! Files: [`forward`] the attempt loop; `attempt` one try; `upstream` the request and its answer;
//! `stream` the streamed body; `client` and `h1` the connections; `probe` active health checks.

mod attempt;
mod call;
mod client;
mod count_tokens;
mod forward;
mod h1;
mod probe;
mod stream;
mod upstream;
mod upstream_error;

pub use call::{Call, Delivered};
pub use client::{UpstreamBody, UpstreamClient, client_set, set_worker, tls_client_config};
pub use forward::Deliver;
pub use probe::spawn_probers;
pub use stream::{StreamEnd, StreamOutcome};
pub use upstream_error::UpstreamError;
