//! One request through the pipeline, read top to bottom: Receive (id, auth, body) → Shape (the door)
//! → Route → Balance + Deliver (the attempt loop) → the response, with Sluice's headers.

use super::Pipeline;
use super::affinity;
use super::body::read_body;
use crate::balance::Backend;
use crate::deliver::{Call, Delivered};
use crate::error::GatewayError;
use crate::observe::Metrics;
use crate::observe::admin::json_response_bytes;
use crate::protocol::{Endpoint, Protocol, RequestBody, RespBody};
use crate::ratelimit::Decision;
use crate::route::{RequestMeta, RouteDecision};
use crate::shape::Arrival;
use crate::translate::scan_request;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_SLUICE_NODE: HeaderName = HeaderName::from_static("x-sluice-node");
static X_SLUICE_ROUTE: HeaderName = HeaderName::from_static("x-sluice-route");
static X_SLUICE_BACKEND: HeaderName = HeaderName::from_static("x-sluice-backend");

pub async fn handle(p: Arc<Pipeline>, req: Request<Incoming>) -> Response<RespBody> {
    let started = Instant::now();
    let request_id = p.ids.for_request(req.headers());
    let mut out = Outcome {
        route: None,
        backend: None,
        limit: None,
    };
    let mut resp = dispatch(&p, req, &request_id, &mut out).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert(X_REQUEST_ID.clone(), v);
    }
    h.insert(X_SLUICE_NODE.clone(), p.node_header.clone());
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

/// A request on the admin listener (`admin.listen`): the operator endpoints, anything else a 404 in
/// the API's error shape.
pub async fn handle_admin(p: Arc<Pipeline>, req: Request<Incoming>) -> Response<RespBody> {
    let path = req.uri().path();
    let mut resp = p
        .admin
        .answer(req.method(), path, req.headers())
        .unwrap_or_else(|| GatewayError::NotFound(path.to_string()).response(Protocol::Openai));
    resp.headers_mut()
        .insert(X_SLUICE_NODE.clone(), p.node_header.clone());
    resp
}

/// What the response headers and metrics report of the request's way through.
struct Outcome<'a> {
    route: Option<&'a RouteDecision>,
    backend: Option<Arc<Backend>>,
    limit: Option<Decision>,
}

async fn dispatch<'a>(
    p: &'a Pipeline,
    req: Request<Incoming>,
    request_id: &str,
    out: &mut Outcome<'a>,
) -> Response<RespBody> {
    let path = req.uri().path();
    if let Some(r) = p.admin.answer_public(req.method(), path, req.headers()) {
        return r;
    }
    match (req.method(), path) {
        (&Method::GET, "/v1/models" | "/models") => match p.tenants.authenticate(req.headers()) {
            Some(_) => json_response_bytes(StatusCode::OK, p.models.clone()),
            None => GatewayError::Unauthorized.response(Protocol::Openai),
        },
        (m, path) => match Endpoint::from_path(path) {
            Some(ep) if m == Method::POST => {
                let proto = ep.client_protocol();
                match proxy(p, req, ep, request_id, out).await {
                    Ok(r) => r,
                    Err(e) => {
                        if let GatewayError::RateLimited { decision, .. } = &e {
                            out.limit = Some(**decision);
                        }
                        e.response(proto)
                    }
                }
            }
            Some(ep) => {
                GatewayError::MethodNotAllowed(path.to_string()).response(ep.client_protocol())
            }
            None => GatewayError::NotFound(path.to_string()).response(Protocol::Openai),
        },
    }
}

async fn proxy<'a>(
    p: &'a Pipeline,
    req: Request<Incoming>,
    endpoint: Endpoint,
    request_id: &str,
    out: &mut Outcome<'a>,
) -> Result<Response<RespBody>, GatewayError> {
    // Receive: the tenant, the body (bounded), one scan of it.
    let tenant = p
        .tenants
        .authenticate(req.headers())
        .cloned()
        .ok_or(GatewayError::Unauthorized)?;
    let (parts, raw) = read_body(req, p.max_body_bytes, &p.bounds, &p.body_budget).await?;
    let scan = scan_request(&raw, affinity::body_field(p.affinity.as_ref()))
        .map_err(|e| GatewayError::BadJson(e.to_string()))?;
    let model = scan
        .model
        .as_deref()
        .ok_or_else(|| GatewayError::BadRequest {
            field: "model".into(),
            reason: "a non-empty string is required".into(),
        })?;

    // Shape: class, deadline, the tenant's buckets (waiting for a refill when that fits).
    let admitted = p
        .door
        .admit(Arrival {
            tenant: &tenant.id,
            tier: &tenant.tier,
            weight: tenant.weight,
            headers: &parts.headers,
            request_type: endpoint.request_type(),
            prompt_tokens: scan.prompt_tokens,
            max_tokens: scan.max_tokens,
        })
        .await?;
    out.limit = Some(admitted.decision);

    // Route.
    let route = p.router.decide(&RequestMeta {
        path: parts.uri.path(),
        headers: &parts.headers,
        tier: &tenant.tier,
        model,
        request_id,
    });
    out.route = Some(route);

    // Balance + Deliver.
    let affinity_key = affinity::key(p.affinity.as_ref(), &parts.headers, &scan);
    let body = RequestBody::new(raw);
    let call = Call {
        endpoint,
        body: &body,
        stream: scan.stream,
        include_usage: scan.include_usage,
        model,
        tenant: &tenant.id,
        route,
        request_id,
        client_headers: &parts.headers,
        affinity_key: affinity_key.as_deref(),
        est_input_tokens: scan.prompt_tokens,
        admitted: &admitted,
        on_usage: admitted.usage_sink(),
    };
    let Delivered { response, backend } = p.deliver.forward(call).await?;
    out.backend = backend;
    Ok(response)
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
