//! One attempt on one backend: plan the upstream request, send it within the timeouts, classify the
//! answer (retry elsewhere, or done), and pass a success back whole or streamed.

use super::call::Call;
use super::client::{UpstreamBody, UpstreamClient};
use super::stream::{OnFinish, OnFirst, StreamBody, StreamClock, StreamEnd, StreamSides};
use super::upstream::{
    build_request, error_chain, observe_quota, read_limited, retry_after, upstream_error,
};
use crate::balance::{Backend, InFlightGuard, candidates};
use crate::config::BoundsConfig;
use crate::error::GatewayError;
use crate::observe::{AttemptSpan, Metrics};
use crate::protocol::{RespBody, full_body, pieces_body};
use crate::shape::{Outcome, Shed};
use crate::translate::{
    Plan, Usage, Wire, checked_usage, hollow, plan, response_back, response_facts, scan_usage,
    stream_transform, tag_response_ids, usage_from_body,
};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(super) enum Attempt {
    Done(Response<RespBody>),
    /// Retryable: try another backend if attempts remain. Carries what to answer if none remain.
    Retry(&'static str, Failure),
}

pub(super) enum Failure {
    Error(GatewayError),
    Upstream(Response<RespBody>),
}

/// One try on `backend`, whose slot `guard` holds until the response ends. `span` (traces on) names
/// the attempt upstream; a streamed answer takes it, to end it with the stream.
pub(super) async fn attempt(
    call: &mut Call<'_>,
    backend: &Arc<Backend>,
    client: &UpstreamClient,
    guard: InFlightGuard,
    default_max_tokens: u32,
    bounds: &BoundsConfig,
    span: &mut Option<AttemptSpan>,
) -> Attempt {
    let cfg = &backend.cfg;
    let client_proto = call.endpoint.client_protocol();
    let model = cfg.model_for(call.model);
    let tag = cfg
        .serves_responses()
        .then(|| crate::translate::response_tag(&cfg.name));
    let plan = match plan(
        &call.plan_input(),
        cfg.protocol,
        tag.as_deref(),
        model,
        default_max_tokens,
    ) {
        Ok(p) => p,
        Err(e) => return Attempt::Done(e.response(client_proto)),
    };
    let mut req = match build_request(backend, client, call, &plan) {
        Ok(r) => r,
        Err(e) => return Attempt::Retry("build", Failure::Error(e)),
    };
    if let Some(s) = span {
        s.inject(req.headers_mut());
    }
    // A request whose client deadline passed is never sent upstream.
    let now = Instant::now();
    let left = call
        .admitted
        .deadline
        .map(|d| d.saturating_duration_since(now));
    if left.is_some_and(|l| l.is_zero()) {
        return Attempt::Done(GatewayError::Shed(Shed::DeadlineExpired).response(client_proto));
    }
    let sent_at = now;
    let deadline = sent_at + cfg.timeouts.total();
    let first_byte = left.map_or(cfg.timeouts.first_byte(), |l| {
        l.min(cfg.timeouts.first_byte())
    });
    let client_bound = left.is_some_and(|l| l < cfg.timeouts.first_byte());
    let resp = match tokio::time::timeout(first_byte, client.send(req)).await {
        Err(_) if client_bound => {
            return Attempt::Done(GatewayError::Shed(Shed::DeadlineExpired).response(client_proto));
        }
        Err(_) => {
            backend.congestion_sample(Outcome::Dropped);
            backend.passive(false, std::time::Instant::now());
            return Attempt::Retry(
                "timeout",
                Failure::Error(GatewayError::UpstreamTimeout(backend.name().into())),
            );
        }
        Ok(Err(e)) => {
            backend.congestion_sample(Outcome::Dropped);
            backend.passive(false, std::time::Instant::now());
            let reason = if e.is_connect() { "connect" } else { "io" };
            let err = GatewayError::UpstreamUnavailable {
                backend: backend.name().into(),
                reason: error_chain(&e),
            };
            return Attempt::Retry(reason, Failure::Error(err));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    observe_quota(backend, resp.headers(), sent_at);
    let now = std::time::Instant::now();
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        backend.congestion_sample(Outcome::Dropped);
    }
    // A 429, or a 503 that says when to come back: the backend cools down until then and the
    // request fails over; the client hears when to retry if every backend is cooling down.
    let cooling = match status {
        StatusCode::TOO_MANY_REQUESTS => {
            Some(retry_after(resp.headers()).unwrap_or(Duration::from_secs(1)))
        }
        StatusCode::SERVICE_UNAVAILABLE => retry_after(resp.headers()),
        _ => None,
    };
    if let Some(wait) = cooling {
        backend.cooldown(now + wait);
        let body = error_body(backend, resp.into_body(), deadline, bounds).await;
        return Attempt::Retry(
            if status == StatusCode::TOO_MANY_REQUESTS {
                "rate_limited"
            } else {
                "5xx"
            },
            Failure::Upstream(upstream_error(
                client_proto,
                status,
                &body,
                &plan,
                Some(wait),
            )),
        );
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // Sluice never forwards the client's key: a 401/403 is the gateway's own credentials
        // (the backend's key) being refused. Not the client's fault, and not passed on as if it were.
        backend.passive(false, now);
        Metrics::credentials_rejected(backend.name());
        tracing::error!(backend = %backend.name(), status = status.as_u16(), "upstream rejected the gateway's credentials");
        let _ = error_body(backend, resp.into_body(), deadline, bounds).await;
        return Attempt::Retry(
            "credentials",
            Failure::Error(GatewayError::UpstreamCredentials(backend.name().into())),
        );
    }
    if status.is_server_error() {
        backend.passive(false, now);
        let body = error_body(backend, resp.into_body(), deadline, bounds).await;
        return Attempt::Retry(
            "5xx",
            Failure::Upstream(upstream_error(client_proto, status, &body, &plan, None)),
        );
    }
    backend.passive(true, now);
    if !status.is_success() {
        let body = error_body(backend, resp.into_body(), deadline, bounds).await;
        return Attempt::Done(upstream_error(client_proto, status, &body, &plan, None));
    }
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_sse {
        let clock = StreamClock {
            sent_at,
            idle_for: cfg.timeouts.idle(),
            deadline,
        };
        return Attempt::Done(stream_response(
            call,
            backend,
            resp,
            &plan,
            guard,
            clock,
            bounds,
            span.take(),
        ));
    }
    // Whole body: read, count usage, translate if needed.
    let body = match read_limited(
        backend,
        resp.into_body(),
        deadline,
        bounds.max_upstream_body_bytes,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return Attempt::Retry("body", Failure::Error(e)),
    };
    // A body that is not JSON is never passed on as an answer (validated in one pass that also
    // reads its usage, no tree; translated bodies are parsed below anyway). Nothing reached the
    // client: another backend may.
    let passed_usage = if plan.translated {
        None
    } else {
        match checked_usage(&body) {
            Some(usage) => Some(usage),
            None => {
                backend.passive(false, now);
                let e = GatewayError::UpstreamMalformed {
                    backend: backend.name().into(),
                    reason: "invalid json".into(),
                };
                return Attempt::Retry("malformed", Failure::Error(e));
            }
        }
    };
    let elapsed = sent_at.elapsed();
    backend.observe_latency(elapsed, std::time::Instant::now());
    backend.congestion_sample(Outcome::Success(elapsed));
    backend.metrics.upstream.record(elapsed.as_secs_f64());
    drop(guard);
    // Translated bodies are parsed, their long answer strings cut out first (see
    // `translate::hollow`: about 1× the body in all).
    let holes = plan.translated.then(|| hollow(&body)).flatten();
    let parsed: Option<Value> = if plan.translated {
        let skeleton = holes.as_ref().map_or(&body[..], |h| &h.skeleton[..]);
        serde_json::from_slice(skeleton).ok()
    } else {
        None
    };
    let usage = match (&parsed, passed_usage) {
        (Some(v), _) => usage_from_body(v),
        (None, Some(usage)) => usage,
        (None, None) => scan_usage(&body),
    };
    record_usage(call, backend, usage);
    if let Some(t) = call.trace.as_ref().filter(|t| t.recording()) {
        let (model, finish) = response_facts(&body);
        t.response(model, finish);
    }
    let out = if plan.translated {
        let Some(v) = parsed else {
            let e = GatewayError::UpstreamMalformed {
                backend: backend.name().into(),
                reason: "invalid json".into(),
            };
            return Attempt::Done(e.response(client_proto));
        };
        let out = match response_back(&call.plan_input(), &plan, &v) {
            Ok(v) => Bytes::from(v.to_string()),
            Err(e) => return Attempt::Done(e.response(client_proto)),
        };
        match holes {
            Some(h) => pieces_body(h.fill(&body, out)),
            None => full_body(out),
        }
    } else if let Some(tag) = &plan.tag {
        full_body(tag_response_ids(body, tag))
    } else {
        full_body(body)
    };
    let response = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(out)
        .expect("valid response");
    Attempt::Done(response)
}

/// End an attempt's span with what came of it.
pub(super) fn end_span(span: AttemptSpan, out: &Attempt) {
    match out {
        Attempt::Done(r) => {
            let ok = r.status().is_success();
            span.end(r.status().as_u16(), if ok { "ok" } else { "error" }, None);
        }
        Attempt::Retry(reason, Failure::Upstream(r)) => {
            span.end(r.status().as_u16(), "failed", Some(reason))
        }
        Attempt::Retry(reason, Failure::Error(_)) => span.end(0, "failed", Some(reason)),
    }
}

#[allow(clippy::too_many_arguments)]
fn stream_response(
    call: &mut Call<'_>,
    backend: &Arc<Backend>,
    resp: Response<UpstreamBody>,
    plan: &Plan,
    guard: InFlightGuard,
    clock: StreamClock,
    bounds: &BoundsConfig,
    span: Option<AttemptSpan>,
) -> Response<RespBody> {
    let sent_at = clock.sent_at;
    let transform = stream_transform(&call.plan_input(), plan);
    let b = backend.clone();
    let tenant: Arc<str> = Arc::from(call.tenant);
    let sink = call.on_usage.take();
    let first = backend.clone();
    let trace = call.trace.clone();
    if let Some(t) = &trace {
        t.streaming();
    }
    let keep_model = trace.as_ref().is_some_and(|t| t.recording());
    let on_first: OnFirst = Box::new(move |ttft| {
        first.congestion_sample(Outcome::Success(ttft));
        first.observe_ttft(ttft, std::time::Instant::now());
        first.metrics.ttft.record(ttft.as_secs_f64());
    });
    let on_finish: OnFinish = Box::new(move |out| {
        // Success was sampled at the first token; a stream that broke is a drop, and counts against
        // the backend's health like a failed request.
        if let StreamEnd::Fault(fault) = out.end {
            b.congestion_sample(Outcome::Dropped);
            b.passive(false, std::time::Instant::now());
            Metrics::stream_fault(fault.label());
            if let Some(suppressed) = crate::observe::log_gate::allow("stream_not_whole") {
                tracing::warn!(backend = %b.name(), fault = fault.label(), suppressed, "upstream stream not passed on whole");
            }
        }
        b.metrics.upstream.record(sent_at.elapsed().as_secs_f64());
        record_usage_parts(&tenant, &b, out.usage);
        if let Some(s) = sink {
            s(out.usage.map(|u| used(&b, u)));
        }
        drop(guard);
        if let Some(t) = trace {
            let end = match out.end {
                StreamEnd::Complete => "complete",
                StreamEnd::Fault(f) => f.label(),
                StreamEnd::ClientGone => "client_gone",
            };
            if let Some(u) = out.usage {
                t.usage(u.input_tokens, u.output_tokens);
            }
            let finish = out.finish_reason.map(|r| vec![r.to_string()]);
            t.response(out.model, finish.unwrap_or_default());
            if let Some(s) = span {
                let ok = out.end == StreamEnd::Complete;
                s.end(200, if ok { "ok" } else { "error" }, None);
            }
            t.stream_done(out.ttft, end);
        }
    });
    let sides = StreamSides {
        upstream: plan.wire,
        client: Wire::client(call.endpoint),
        secret: backend.api_key.clone(),
        keep_model,
    };
    let body = StreamBody::new(
        resp.into_body(),
        transform,
        sides,
        bounds,
        clock,
        on_first,
        on_finish,
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body.boxed_unsync())
        .expect("valid response")
}

fn record_usage(call: &mut Call<'_>, backend: &Backend, usage: Option<Usage>) {
    record_usage_parts(call.tenant, backend, usage);
    if let (Some(t), Some(u)) = (&call.trace, usage) {
        t.usage(u.input_tokens, u.output_tokens);
    }
    if let Some(s) = call.on_usage.take() {
        s(usage.map(|u| used(backend, u)));
    }
}

/// What a response used, and its cost at `backend`'s price (spend budgets).
fn used(backend: &Backend, u: Usage) -> crate::shape::Used {
    crate::shape::Used {
        tokens: u.total(),
        cost: crate::ratelimit::budget::cost_micros(
            backend.cfg.price,
            u.input_tokens,
            u.output_tokens,
        ),
    }
}

fn record_usage_parts(tenant: &str, backend: &Backend, usage: Option<Usage>) {
    if let Some(u) = usage {
        let cost = candidates::cost(backend.cfg.price, u.input_tokens, u.output_tokens);
        Metrics::tokens(
            tenant,
            backend.name(),
            u.input_tokens,
            u.output_tokens,
            cost,
        );
    }
}

/// An upstream's error body, bounded, with the key Sluice injected masked wherever it is echoed.
async fn error_body(
    backend: &Backend,
    body: UpstreamBody,
    deadline: Instant,
    bounds: &BoundsConfig,
) -> Bytes {
    let body = read_limited(backend, body, deadline, bounds.max_upstream_body_bytes)
        .await
        .unwrap_or_default();
    match backend.api_key.as_deref() {
        Some(key) => mask(body, key),
        None => body,
    }
}

/// `body` with every occurrence of `secret` replaced by `***`.
pub(super) fn mask(body: Bytes, secret: &str) -> Bytes {
    let secret = secret.as_bytes();
    if secret.len() < 4 || memchr::memmem::find(&body, secret).is_none() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest: &[u8] = &body;
    while let Some(i) = memchr::memmem::find(rest, secret) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"***");
        rest = &rest[i + secret.len()..];
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_injected_key_is_masked_wherever_it_appears() {
        let b = bytes::Bytes::from_static(b"{\"error\":\"bad key sk-secret-1 (sk-secret-1)\"}");
        assert_eq!(
            &super::mask(b, "sk-secret-1")[..],
            b"{\"error\":\"bad key *** (***)\"}"
        );
        let b = bytes::Bytes::from_static(b"nothing here");
        assert_eq!(&super::mask(b.clone(), "sk-secret-1")[..], &b[..]);
    }
}
