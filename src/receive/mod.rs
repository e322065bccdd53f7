//! Receive: the first stage (**receive** → shape → route → balance → deliver). Accept connections
//! (HTTP/1.1, HTTP/2, TLS), give every request an id, enforce size limits, find the tenant from its
//! API key, read and scan the body once, then walk the request through the later stages
//! ([`handle`]) and hand back their response. The only module that calls every stage; nothing
//! imports it but `app` and `main`.

mod affinity;
mod auth;
mod body;
mod handler;
pub mod models;
mod pipeline;
mod request_id;
mod server;
mod tls;

pub use auth::{Tenant, TenantTable};
pub use body::BodyBudget;
pub use handler::{handle, handle_admin};
pub use pipeline::{Live, Pipeline};
pub use request_id::RequestIds;
pub use server::{refuse_shared_port, reuseport_listeners, serve, serve_admin};
pub use tls::{TlsCerts, load_tls, load_tls_reloadable};
