//! The upstream side of an attempt: the request as the backend's API wants it (its key injected),
//! its whole answer read within bounds, and its errors in the client's dialect.

use super::call::Call;
use super::client::{UpstreamBody, UpstreamClient};
use crate::balance::Backend;
use crate::balance::quota::{self, Observation, Window};
use crate::error::GatewayError;
use crate::protocol::headers::{X_API_KEY, X_REQUEST_ID};
use crate::protocol::{Endpoint, Protocol, RespBody, full_body, ratelimit, read_whole};
use crate::translate::{Plan, error_back};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use serde_json::Value;

/// OpenAI's millisecond companion of `Retry-After`: waiting clients do not all return at the same
/// whole second.
pub(super) const RETRY_AFTER_MS: &str = "retry-after-ms";
use std::time::Duration;
use tokio::time::Instant;

/// The OpenAI client headers passed on to an OpenAI upstream. Looked up by name, not by string: a
/// string is parsed and hashed on every lookup.
static OPENAI_PASSED: [HeaderName; 3] = [
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
    HeaderName::from_static("openai-beta"),
];
static ANTHROPIC_VERSION_H: HeaderName = HeaderName::from_static("anthropic-version");
static ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

pub(super) fn build_request(
    backend: &Backend,
    client: &UpstreamClient,
    call: &Call<'_>,
    plan: &Plan,
) -> Result<Request<Bytes>, GatewayError> {
    let target = client
        .target(plan.path)
        .map_err(|e| GatewayError::UpstreamUnavailable {
            backend: backend.name().into(),
            reason: format!("invalid upstream url: {e}"),
        })?;
    let mut b = Request::post(target)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(X_REQUEST_ID.clone(), call.request_id);
    b = with_key(b, backend);
    match backend.cfg.protocol {
        Protocol::Openai => {
            for h in &OPENAI_PASSED {
                if let Some(v) = call.client_headers.get(h) {
                    b = b.header(h, v);
                }
            }
        }
        Protocol::Anthropic => {
            b = anthropic_headers(b, call.client_headers, call.endpoint == Endpoint::Messages);
        }
    }
    for name in &backend.cfg.forward_headers {
        for v in call.client_headers.get_all(name.as_str()) {
            b = b.header(name.as_str(), v);
        }
    }
    b.body(plan.body.clone())
        .map_err(|e| GatewayError::UpstreamUnavailable {
            backend: backend.name().into(),
            reason: format!("cannot build request: {e}"),
        })
}

/// The `anthropic-version` sent when the client names none.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `anthropic-version` (the client's, else [`ANTHROPIC_VERSION`]) and, for a client that speaks
/// Anthropic's API itself (`beta`), its `anthropic-beta`.
pub(super) fn anthropic_headers(
    mut b: http::request::Builder,
    client: &HeaderMap,
    beta: bool,
) -> http::request::Builder {
    let version = client
        .get(&ANTHROPIC_VERSION_H)
        .cloned()
        .unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION));
    b = b.header(&ANTHROPIC_VERSION_H, version);
    if beta && let Some(v) = client.get(&ANTHROPIC_BETA) {
        b = b.header(&ANTHROPIC_BETA, v);
    }
    b
}

/// The backend's key, injected the way its API wants it.
pub(super) fn with_key(b: http::request::Builder, backend: &Backend) -> http::request::Builder {
    match (&backend.api_key, backend.cfg.protocol) {
        (Some(k), Protocol::Openai) => b.header(AUTHORIZATION, format!("Bearer {k}")),
        (Some(k), Protocol::Anthropic) => b.header(&X_API_KEY, k.as_str()),
        (None, _) => b,
    }
}

/// What a probe of the backend's API (`GET /v1/models`) carries: its key, and for Anthropic the
/// API version, as real requests do.
pub(super) fn api_probe_headers(backend: &Backend) -> HeaderMap {
    let mut b = with_key(Request::get("/"), backend);
    if backend.cfg.protocol == Protocol::Anthropic {
        b = b.header(&ANTHROPIC_VERSION_H, ANTHROPIC_VERSION);
    }
    b.body(())
        .map(|r| r.into_parts().0.headers)
        .unwrap_or_default()
}

/// A whole upstream body, bounded in size and by the request's total deadline.
pub(super) async fn read_limited(
    backend: &Backend,
    body: UpstreamBody,
    deadline: Instant,
    max: usize,
) -> Result<Bytes, GatewayError> {
    match tokio::time::timeout_at(deadline, read_whole(body, max)).await {
        Err(_) => Err(GatewayError::UpstreamTimeout(backend.name().into())),
        Ok(Err(e)) => Err(GatewayError::UpstreamUnavailable {
            backend: backend.name().into(),
            reason: e.to_string(),
        }),
        Ok(Ok(b)) => Ok(b),
    }
}

/// The provider's rate-limit headers on an answer to a request sent at `sent_at`, into the
/// backend's quota view (stamped with the send: the provider counted the request then).
pub(super) fn observe_quota(backend: &Backend, h: &HeaderMap, sent_at: Instant) {
    let now_ms = quota::unix_now_ms();
    let windows = ratelimit::read(h, now_ms);
    if windows.iter().all(Option::is_none) {
        return;
    }
    let since_sent = u64::try_from(sent_at.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut obs = Observation {
        at_ms: now_ms.saturating_sub(since_sent),
        ..Observation::default()
    };
    for (slot, w) in obs.windows.iter_mut().zip(windows) {
        *slot = w.map(|l| Window {
            limit: l.limit,
            remaining: l.remaining,
            reset_ms: l.reset_ms.saturating_add(since_sent),
        });
    }
    backend.observe_quota(obs);
}

pub(super) fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// An upstream error answer, in the client's dialect when the protocols differ.
pub(super) fn upstream_error(
    client: Protocol,
    status: StatusCode,
    body: &Bytes,
    plan: &Plan,
    wait: Option<Duration>,
) -> Response<RespBody> {
    let out = if plan.translated || serde_json::from_slice::<Value>(body).is_err() {
        Bytes::from(error_back(client, status.as_u16(), body).to_string())
    } else {
        body.clone()
    };
    let mut b = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json");
    if let Some(w) = wait {
        b = b
            .header(RETRY_AFTER, w.as_secs_f64().ceil().max(1.0).to_string())
            .header(RETRY_AFTER_MS, w.as_millis().max(1).to_string());
    }
    b.body(full_body(out)).expect("valid response")
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
