//! One request through the pipeline: Receive (id, auth, body) → Shape (admission) → Route → Deliver.

use crate::app::App;
use crate::backends::Backend;
use crate::config::Priority;
use crate::deliver::{
    Call, Delivered, Endpoint, ReadError, RequestBody, RespBody, UsageSink, error_response,
    full_body, read_whole,
};
use crate::error::GatewayError;
use crate::observe::Metrics;
use crate::protocol::Protocol;
use crate::ratelimit::{Decision, LimitRequest};
use crate::route::{RequestMeta, RouteDecision};
use crate::shape::{classify, parse_deadline};
use crate::translate::scan_request;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// Output tokens assumed for cost estimates when the client sets no `max_tokens`.
const DEFAULT_EST_OUTPUT: u64 = 256;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_SLUICE_NODE: HeaderName = HeaderName::from_static("x-sluice-node");
static X_SLUICE_ROUTE: HeaderName = HeaderName::from_static("x-sluice-route");
static X_SLUICE_BACKEND: HeaderName = HeaderName::from_static("x-sluice-backend");

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<RespBody> {
    let started = Instant::now();
    let request_id = app.request_id(req.headers());
    let mut out = Outcome {
        route: None,
        backend: None,
        limit: None,
    };
    let mut resp = dispatch(&app, req, &request_id, &mut out).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert(X_REQUEST_ID.clone(), v);
    }
    h.insert(X_SLUICE_NODE.clone(), app.node_header.clone());
    if let Some(r) = out.route.and_then(|r| r.header.clone()) {
        h.insert(X_SLUICE_ROUTE.clone(), r);
    }
    if let Some(b) = out.backend.as_ref().and_then(|b| b.name_header.clone()) {
        h.insert(X_SLUICE_BACKEND.clone(), b);
    }
    if let Some(d) = out.limit {
        rate_limit_headers(h, &d);
    }
    if out.route.is_some() {
        Metrics::request(
            out.route.map_or("-", |r| &r.route),
            out.backend.as_ref().map_or("-", |b| b.name()),
            resp.status().as_u16(),
            started.elapsed(),
        );
    }
    tracing::debug!(
        request_id = %request_id,
        route = out.route.map_or("-", |r| &r.route),
        backend = out.backend.as_ref().map_or("-", |b| b.name()),
        status = resp.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

struct Outcome<'a> {
    route: Option<&'a RouteDecision>,
    backend: Option<Arc<Backend>>,
    limit: Option<Decision>,
}

async fn dispatch<'a>(
    app: &'a App,
    req: Request<Incoming>,
    request_id: &str,
    out: &mut Outcome<'a>,
) -> Response<RespBody> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            let ready = app.ready();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(status, &json!({"ready": ready}))
        }
        (&Method::GET, "/metrics") => Response::builder()
            .header(CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(full_body(app.metrics.render()))
            .expect("valid response"),
        (&Method::GET, "/admin/cluster") => {
            if app.is_admin(req.headers()) {
                json_response(StatusCode::OK, &app.admin_cluster())
            } else {
                error_response(&GatewayError::AdminForbidden, Protocol::Openai)
            }
        }
        (&Method::GET, "/v1/models" | "/models") => match app.tenants.authenticate(req.headers()) {
            Some(_) => json_response(StatusCode::OK, &app.models()),
            None => error_response(&GatewayError::Unauthorized, Protocol::Openai),
        },
        (m, p) => match Endpoint::from_path(p) {
            Some(ep) if m == Method::POST => {
                let proto = ep.client_protocol();
                match proxy(app, req, ep, request_id, out).await {
                    Ok(r) => r,
                    Err(e) => {
                        if let GatewayError::RateLimited { decision, .. } = &e {
                            out.limit = Some(**decision);
                        }
                        error_response(&e, proto)
                    }
                }
            }
            Some(ep) => error_response(
                &GatewayError::MethodNotAllowed(p.to_string()),
                ep.client_protocol(),
            ),
            None => error_response(&GatewayError::NotFound(p.to_string()), Protocol::Openai),
        },
    }
}

async fn proxy<'a>(
    app: &'a App,
    req: Request<Incoming>,
    endpoint: Endpoint,
    request_id: &str,
    out: &mut Outcome<'a>,
) -> Result<Response<RespBody>, GatewayError> {
    let tenant = app
        .tenants
        .authenticate(req.headers())
        .cloned()
        .ok_or(GatewayError::Unauthorized)?;
    let max = app.cfg.listen.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(GatewayError::PayloadTooLarge(max));
    }
    let (parts, body) = req.into_parts();
    let raw: Bytes = match read_whole(body, max).await {
        Ok(b) => b,
        Err(ReadError::TooLarge(_)) => return Err(GatewayError::PayloadTooLarge(max)),
        Err(ReadError::Body(e)) => {
            return Err(GatewayError::BadJson(format!(
                "could not read the body: {e}"
            )));
        }
    };
    let scan = scan_request(&raw, app.affinity_body_field())
        .map_err(|e| GatewayError::BadJson(e.to_string()))?;
    let model = scan
        .model
        .as_deref()
        .ok_or_else(|| GatewayError::BadRequest {
            field: "model".into(),
            reason: "a non-empty string is required".into(),
        })?;
    let (stream, include_usage) = (scan.stream, scan.include_usage);

    // Shape: priority class and client deadline.
    let shaping = &app.cfg.shaping;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let priority = classify(
        &shaping.priority,
        header(&shaping.priority.header),
        &tenant.tier,
        endpoint.request_type(),
    );
    let now = tokio::time::Instant::now();
    let deadline = parse_deadline(header(&shaping.deadline_header), now).map_err(|e| {
        GatewayError::BadDeadline(format!("header `{}`: {e}", shaping.deadline_header))
    })?;

    // Admission through the rate-limiter seam. Tokens: reserve the estimate now, reconcile with the
    // actual usage when the response (or the stream) ends.
    let est_input = scan.prompt_tokens;
    let est_output = scan.max_tokens.unwrap_or(DEFAULT_EST_OUTPUT);
    let reserve = est_input + est_output;
    let decision = admit(app, &tenant.id, reserve, priority, now, deadline).await;
    out.limit = Some(decision);
    if !decision.allowed {
        Metrics::limiter(&tenant.id, "limited");
        return Err(GatewayError::RateLimited {
            tenant: tenant.id.clone(),
            retry_after_ms: decision.retry_after.unwrap_or_default().as_millis() as u64,
            decision: Box::new(decision),
        });
    }
    Metrics::limiter(&tenant.id, "allowed");

    // Route.
    let meta = RequestMeta {
        path: parts.uri.path(),
        headers: &parts.headers,
        tier: &tenant.tier,
        model,
        request_id,
    };
    let route = app.router.decide(&meta);
    out.route = Some(route);

    // Balance + Deliver.
    let affinity_key = app.affinity_key(&parts.headers, &scan);
    let body = RequestBody::new(raw);
    let call = Call {
        endpoint,
        body: &body,
        stream,
        include_usage,
        model,
        tenant: &tenant.id,
        route,
        request_id,
        client_headers: &parts.headers,
        affinity_key: affinity_key.as_deref(),
        est_input_tokens: est_input,
        est_output_tokens: est_output,
        // Only a token bucket needs the actual usage back.
        on_usage: decision
            .tokens_limit
            .map(|_| reconcile_sink(app.limiter.clone(), &tenant.id, reserve)),
        priority,
        deadline,
        weight: tenant.weight,
    };
    let Delivered { response, backend } = app.deliver.forward(call).await?;
    out.backend = backend;
    Ok(response)
}

/// Ask the limiter; when the bucket is empty, wait for it to refill instead of refusing at once, as long
/// as the wait fits the request's budget (`shaping.max_wait_ms`, the client deadline) and the number of
/// waiters stays under `shaping.max_queue`. Critical requests do not wait: they are refused or admitted.
async fn admit(
    app: &App,
    tenant: &str,
    tokens: u64,
    priority: Priority,
    now: tokio::time::Instant,
    deadline: Option<tokio::time::Instant>,
) -> Decision {
    let budget = now + std::time::Duration::from_millis(app.cfg.shaping.max_wait_ms);
    let until = deadline.map_or(budget, |d| d.min(budget));
    let mut waiting: Option<TokenWait> = None;
    loop {
        let d = app
            .limiter
            .check(LimitRequest {
                tenant,
                requests: 1,
                tokens,
            })
            .await;
        if d.allowed {
            return d;
        }
        let wait = d.retry_after.unwrap_or(std::time::Duration::from_secs(1));
        if priority == Priority::Critical || tokio::time::Instant::now() + wait > until {
            return d;
        }
        let Some(_slot) = app.rate_waiters.enter(app.cfg.shaping.max_queue) else {
            return d;
        };
        if waiting.is_none() {
            Metrics::limiter(tenant, "queued");
            waiting = Some(TokenWait::start(priority, now));
        }
        tokio::time::sleep(wait).await;
    }
}

/// A request waiting for its tenant's bucket shows in the same queue metrics as one waiting for a
/// backend slot: `sluice_queue_length` while it waits, `sluice_queue_wait_seconds` when it leaves.
struct TokenWait {
    priority: Priority,
    since: tokio::time::Instant,
}

impl TokenWait {
    fn start(priority: Priority, since: tokio::time::Instant) -> TokenWait {
        metrics::gauge!(crate::shape::QUEUE_LENGTH, "priority" => priority.as_str()).increment(1.0);
        TokenWait { priority, since }
    }
}

impl Drop for TokenWait {
    fn drop(&mut self) {
        let p = self.priority.as_str();
        metrics::gauge!(crate::shape::QUEUE_LENGTH, "priority" => p).decrement(1.0);
        metrics::histogram!(crate::shape::QUEUE_WAIT, "priority" => p)
            .record(self.since.elapsed().as_secs_f64());
    }
}

/// After the response: give back (or charge) the difference between reserved and used tokens.
fn reconcile_sink(
    limiter: Arc<dyn crate::ratelimit::RateLimiter>,
    tenant: &str,
    reserved: u64,
) -> UsageSink {
    let tenant = tenant.to_string();
    Box::new(move |usage| {
        let Some(u) = usage else { return };
        let actual = u.input_tokens + u.output_tokens;
        if actual != reserved {
            tokio::spawn(async move { limiter.reconcile(&tenant, reserved, actual).await });
        }
    })
}

fn json_response(status: StatusCode, v: &Value) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(full_body(v.to_string()))
        .expect("valid response")
}

/// OpenAI-style `x-ratelimit-*` headers for the request and token buckets.
fn rate_limit_headers(h: &mut http::HeaderMap, d: &Decision) {
    if let Some(limit) = d.limit {
        h.insert("x-ratelimit-limit-requests", HeaderValue::from(limit));
        if let Some(r) = d.remaining {
            h.insert("x-ratelimit-remaining-requests", HeaderValue::from(r));
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{:.3}s", d.reset.as_secs_f64())) {
            h.insert("x-ratelimit-reset-requests", v);
        }
    }
    if let Some(limit) = d.tokens_limit {
        h.insert("x-ratelimit-limit-tokens", HeaderValue::from(limit));
        if let Some(r) = d.tokens_remaining {
            h.insert("x-ratelimit-remaining-tokens", HeaderValue::from(r));
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{:.3}s", d.tokens_reset.as_secs_f64())) {
            h.insert("x-ratelimit-reset-tokens", v);
        }
    }
}
