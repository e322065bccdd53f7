//! The session key a request carries, when affinity is configured: a header's value, or a body
//! field's (read by the body scan, so the body is parsed once).

use crate::config::AffinityConfig;
use crate::translate::RequestScan;
use http::HeaderMap;

/// The body field that pins a session, when affinity is keyed by one (and not by a header).
pub fn body_field(cfg: Option<&AffinityConfig>) -> Option<&str> {
    let a = cfg?;
    if a.header.is_some() {
        return None;
    }
    a.body_field.as_deref()
}

/// The session key: the affinity header's value, or the body field's.
pub fn key(
    cfg: Option<&AffinityConfig>,
    headers: &HeaderMap,
    scan: &RequestScan,
) -> Option<String> {
    match &cfg?.header {
        Some(h) => headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        None => scan.affinity.clone(),
    }
}
