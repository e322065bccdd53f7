//! Receive: the first stage. Accept connections (HTTP/1.1, HTTP/2, TLS), give every request an id,
//! enforce size limits, find the tenant from its API key, parse the body, then hand on.

mod auth;
mod handler;
mod server;
mod tls;

pub use auth::{Tenant, TenantTable};
pub use handler::handle;
pub use server::{reuseport_listeners, serve};
pub use tls::load_tls;
