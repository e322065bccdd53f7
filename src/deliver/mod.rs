//! Deliver: the fifth stage. Send to the chosen backend over a pooled connection, fail over while
//! nothing has reached the client, translate between API dialects, stream SSE through, count usage.

mod body;
mod client;
mod h1;
mod plan;
mod proxy;
mod stream;

pub use body::{ReadError, read_whole};
pub use client::{UpstreamBody, UpstreamClient, client_set, set_worker, tls_client_config};
pub use plan::{Endpoint, RequestBody};
pub use proxy::{Call, Deliver, Delivered, RespBody, UsageSink, error_response, full_body};
pub use stream::{BoxError, StreamOutcome};
