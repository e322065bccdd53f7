//! One request through the pipeline, read top to bottom: Receive (id, auth, body) → Shape (the door)
//! → Route → Balance + Deliver (the attempt loop) → the response, with Sluice's headers.

use super::Pipeline;
use super::affinity;
use super::body::read_body;
use super::models;
use crate::balance::Backend;
use crate::deliver::{Call, Delivered};
use crate::error::GatewayError;
use crate::observe::admin::json_response_bytes;
use crate::observe::{Metrics, Record};
use crate::protocol::headers::X_REQUEST_ID;
use crate::protocol::{Endpoint, Protocol, RequestBody, RespBody};
use crate::ratelimit::Decision;
use crate::route::{RequestMeta, RouteDecision};
use crate::shape::{AdmitError, Arrival};
use crate::translate::{RequestScan, responses_native_field, scan_request, split_response_id};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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
        trace: p
            .observe
            .begin(req.headers(), req.uri().path(), &request_id),
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
    if let Some(t) = &out.trace {
        t.answered(
            resp.status().as_u16(),
            out.route.map(|r| &*r.route),
            out.backend.as_ref().map(|b| b.name()),
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
    let mut resp = match reload_call(&p, &req).await {
        Some(r) => r,
        None => match p
            .admin
            .answer_tenants(req.method(), path, req.headers(), false)
            .await
        {
            Some(r) => r,
            None => p
                .admin
                .answer(req.method(), path, req.headers())
                .unwrap_or_else(|| {
                    GatewayError::NotFound(path.to_string()).response(Protocol::Openai)
                }),
        },
    };
    resp.headers_mut()
        .insert(X_SLUICE_NODE.clone(), p.node_header.clone());
    resp
}

/// What the response headers and metrics report of the request's way through.
struct Outcome<'a> {
    route: Option<&'a RouteDecision>,
    backend: Option<Arc<Backend>>,
    limit: Option<Decision>,
    /// The access log's and traces' record (both off: `None`).
    trace: Option<Arc<Record>>,
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
    if let Some(r) = p
        .admin
        .answer_tenants(req.method(), path, req.headers(), true)
        .await
    {
        return r;
    }
    if p.admin.public(path)
        && let Some(r) = reload_call(p, &req).await
    {
        return r;
    }
    match (req.method(), path) {
        (&Method::GET, path) if model_path(path).is_some() => {
            let proto = models::dialect(req.headers());
            match p.tenants.authenticate(req.headers()) {
                Some(t) => {
                    let callable = |m: &str| callable(p, req.headers(), &t.tier, m);
                    p.models.answer(model_path(path).flatten(), proto, callable)
                }
                None => GatewayError::Unauthorized.response(proto),
            }
        }
        (&Method::POST, "/v1/messages/count_tokens" | "/messages/count_tokens") => {
            count_tokens(p, req, request_id, out)
                .await
                .unwrap_or_else(|e| e.response(Protocol::Anthropic))
        }
        (m, path)
            if stored_path(path).is_some()
                && matches!(*m, Method::GET | Method::DELETE | Method::POST) =>
        {
            stored_response(p, req, out)
                .await
                .unwrap_or_else(|e| e.response(Protocol::Openai))
        }
        (m, path) => match Endpoint::from_path(path) {
            Some(ep) if m == Method::POST => {
                let proto = ep.client_protocol();
                match proxy(p, req, ep, request_id, out).await {
                    Ok(r) => r,
                    Err(e) => {
                        if let GatewayError::RateLimited { decision, .. }
                        | GatewayError::OverBudget { decision, .. } = &e
                        {
                            out.limit = Some(**decision);
                        }
                        e.response(proto)
                    }
                }
            }
            Some(ep) => {
                GatewayError::MethodNotAllowed(path.to_string()).response(ep.client_protocol())
            }
            None => GatewayError::NotFound(path.to_string()).response(path_protocol(path)),
        },
    }
}

/// `POST /admin/reload` (admin token): reload the config file and answer the result as JSON; None
/// for any other request.
async fn reload_call(p: &Pipeline, req: &Request<Incoming>) -> Option<Response<RespBody>> {
    if req.uri().path() != "/admin/reload" || req.method() != Method::POST {
        return None;
    }
    if !p.admin.is_admin(req.headers()) {
        return Some(GatewayError::AdminForbidden.response(Protocol::Openai));
    }
    let outcome = p.reloader.reload("admin").await;
    Some(crate::observe::admin::json_response(
        outcome.status(),
        &outcome.json(),
    ))
}

/// `/v1/models` (`Some(None)`) or `/v1/models/{id}` (`Some(Some(id))`).
fn model_path(path: &str) -> Option<Option<&str>> {
    let rest = path
        .strip_prefix("/v1/models")
        .or_else(|| path.strip_prefix("/models"))?;
    match rest {
        "" | "/" => Some(None),
        _ => rest.strip_prefix('/').filter(|id| !id.is_empty()).map(Some),
    }
}

/// Whether a caller of `tier` sending `headers` can call `model`: a request for it on one of the
/// APIs would be routed to a backend that serves it.
fn callable(p: &Pipeline, headers: &http::HeaderMap, tier: &str, model: &str) -> bool {
    let backends = p.deliver.balancer.backends();
    ["/v1/chat/completions", "/v1/messages", "/v1/responses"]
        .iter()
        .any(|path| {
            let route = p.router.decide(&RequestMeta {
                path,
                headers,
                tier,
                model,
                request_id: "",
            });
            route.pool.iter().any(|&id| backends[id].cfg.serves(model))
        })
}

/// The request's `model`, which every API call must name.
fn model_of(scan: &RequestScan) -> Result<&str, GatewayError> {
    scan.model
        .as_deref()
        .ok_or_else(|| GatewayError::BadRequest {
            field: "model".into(),
            reason: "a non-empty string is required".into(),
        })
}

/// The dialect of errors on `path`: Anthropic's under `/v1/messages`, else OpenAI's.
fn path_protocol(path: &str) -> Protocol {
    if path.starts_with("/v1/messages") || path.starts_with("/messages") {
        Protocol::Anthropic
    } else {
        Protocol::Openai
    }
}

/// Anthropic's `POST /v1/messages/count_tokens`: an Anthropic backend of the route that serves the
/// model counts; otherwise Sluice estimates (as it does for admission), saying so in
/// `x-sluice-token-estimate: true`. Not a generation: no token bucket is charged.
async fn count_tokens<'a>(
    p: &'a Pipeline,
    req: Request<Incoming>,
    request_id: &str,
    out: &mut Outcome<'a>,
) -> Result<Response<RespBody>, GatewayError> {
    let tier = p
        .tenants
        .authenticate(req.headers())
        .ok_or(GatewayError::Unauthorized)?
        .tier
        .clone();
    let (parts, raw) = read_body(req, p.max_body_bytes, &p.bounds, &p.body_budget).await?;
    let scan = scan_request(&raw, None).map_err(|e| GatewayError::BadJson(e.to_string()))?;
    let model = model_of(&scan)?;
    let route = p.router.decide(&RequestMeta {
        path: parts.uri.path(),
        headers: &parts.headers,
        tier: &tier,
        model,
        request_id,
    });
    out.route = Some(route);
    let backends = p.deliver.balancer.backends();
    if !route.pool.iter().any(|&id| backends[id].cfg.serves(model)) {
        return Err(GatewayError::ModelNotFound(model.to_string()));
    }
    if let Some((r, backend)) = p
        .deliver
        .count_tokens(&route.pool, model, &raw, &parts.headers)
        .await
    {
        out.backend = Some(backend);
        return Ok(r);
    }
    let body = serde_json::json!({"input_tokens": scan.prompt_tokens}).to_string();
    let mut r = json_response_bytes(StatusCode::OK, body.into());
    r.headers_mut()
        .insert("x-sluice-token-estimate", HeaderValue::from_static("true"));
    Ok(r)
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
    let model = model_of(&scan)?;
    if let Some(t) = &out.trace {
        t.request(&tenant.id, operation(endpoint), model);
    }

    // The route and a pinned backend are known before Shape (reported after it): spend budgets
    // charge the estimate at their price.
    let route = p.router.decide(&RequestMeta {
        path: parts.uri.path(),
        headers: &parts.headers,
        tier: &tenant.tier,
        model,
        request_id,
    });
    let body = RequestBody::new(raw);
    let pinned = match endpoint {
        Endpoint::Responses => holder(p, &body)?,
        _ => None,
    };
    let price = estimate_price(p, route, model, pinned);

    // Shape: class, deadline, spend budgets, the tenant's buckets (waiting for a refill when that
    // fits).
    let door_at = out.trace.as_ref().map(|_| SystemTime::now());
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
            price,
        })
        .await;
    if let (Some(t), Some(at)) = (&out.trace, door_at) {
        let (outcome, priority) = match &admitted {
            Ok(a) => ("allowed", Some(a.priority.as_str())),
            Err(AdmitError::RateLimited { .. }) => ("limited", None),
            Err(AdmitError::OverBudget { .. }) => ("over_budget", None),
            Err(AdmitError::BadDeadline { .. }) => ("bad_deadline", None),
        };
        t.rate_limit(at, outcome, priority, p.door.limiter().mode());
    }
    let admitted = admitted?;
    out.limit = Some(admitted.decision);
    out.route = Some(route);

    // Balance + Deliver.
    let affinity_key = affinity::key(p.affinity.as_ref(), &parts.headers, &scan);
    let needs_responses = (endpoint == Endpoint::Responses)
        .then(|| responses_native_field(body.tree()))
        .flatten();
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
        needs_responses: needs_responses.as_deref(),
        pinned,
        est_input_tokens: scan.prompt_tokens,
        admitted: &admitted,
        on_usage: admitted.usage_sink(),
        trace: out.trace.clone(),
    };
    let Delivered { response, backend } = p.deliver.forward(call).await?;
    out.backend = backend;
    Ok(response)
}

/// The price a request's estimate is charged at against spend budgets: the pinned backend's, else
/// the highest input and output prices among the route's backends that serve `model`.
fn estimate_price(
    p: &Pipeline,
    route: &RouteDecision,
    model: &str,
    pinned: Option<usize>,
) -> crate::config::PriceConfig {
    let backends = p.deliver.balancer.backends();
    if let Some(id) = pinned {
        return backends[id].cfg.price;
    }
    crate::ratelimit::budget::max_price(
        route
            .pool
            .iter()
            .map(|&id| &backends[id].cfg)
            .filter(|b| b.serves(model))
            .map(|b| b.price),
    )
}

/// The GenAI semantic conventions' `gen_ai.operation.name` of an endpoint.
fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat | Endpoint::Messages | Endpoint::Responses => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
    }
}

/// `/v1/responses/{id}[/more]` as (`id`, `/more`).
fn stored_path(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/v1/responses/")
        .or_else(|| path.strip_prefix("/responses/"))?;
    let (id, more) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    (!id.is_empty()).then_some((id, more))
}

/// A call on a stored response (retrieve, delete, its input items, cancel), sent to the backend
/// that holds it, as the tag in its id says. Not a generation: no token bucket is charged.
async fn stored_response<'a>(
    p: &'a Pipeline,
    req: Request<Incoming>,
    out: &mut Outcome<'a>,
) -> Result<Response<RespBody>, GatewayError> {
    p.tenants
        .authenticate(req.headers())
        .ok_or(GatewayError::Unauthorized)?;
    let method = req.method().clone();
    let (parts, raw) = read_body(req, p.max_body_bytes, &p.bounds, &p.body_budget).await?;
    let path = parts.uri.path();
    let (id, more) = stored_path(path).ok_or_else(|| GatewayError::NotFound(path.into()))?;
    let (bare, tag) = split_response_id(id);
    let backends = p.deliver.balancer.backends();
    let mut serving = backends.iter().filter(|b| b.cfg.serves_responses());
    let backend = match tag {
        Some(tag) => serving.find(|b| crate::translate::response_tag(b.name()) == tag),
        // An id Sluice did not hand out: only a lone Responses backend can be meant.
        None => match (serving.next(), serving.next()) {
            (Some(b), None) => Some(b),
            _ => None,
        },
    }
    .ok_or_else(|| GatewayError::BadRequest {
        field: "response_id".into(),
        reason: format!("no backend of this gateway holds response `{id}`"),
    })?;
    out.backend = Some(backend.clone());
    let query = parts.uri.query().map_or(String::new(), |q| format!("?{q}"));
    let upstream = format!("/v1/responses/{bare}{more}{query}");
    p.deliver
        .stored_response(backend, method, &upstream, raw)
        .await
}

/// The backend holding the response a follow-up continues (`previous_response_id`, tagged by
/// Sluice with the backend that made it): any node finds it, as every node has the same backends.
fn holder(p: &Pipeline, body: &RequestBody) -> Result<Option<usize>, GatewayError> {
    let Some(id) = body
        .tree()
        .get("previous_response_id")
        .and_then(|v| v.as_str())
    else {
        return Ok(None);
    };
    let Some(tag) = split_response_id(id).1 else {
        return Ok(None);
    };
    p.deliver
        .balancer
        .backends()
        .iter()
        .find(|b| b.cfg.serves_responses() && crate::translate::response_tag(b.name()) == tag)
        .map(|b| Some(b.id))
        .ok_or_else(|| GatewayError::BadRequest {
            field: "previous_response_id".into(),
            reason: format!(
                "response `{id}` is held by a backend this gateway no longer has (tag {tag})"
            ),
        })
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
    if let Some(b) = d.budget {
        let usd = |m: u64| crate::ratelimit::budget::usd_text(m as i64);
        if let Ok(v) = HeaderValue::from_str(&usd(b.limit)) {
            h.insert("x-ratelimit-limit-budget-usd", v);
        }
        if let Ok(v) = HeaderValue::from_str(&usd(b.remaining())) {
            h.insert("x-ratelimit-remaining-budget-usd", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{:.3}s", b.reset.as_secs_f64())) {
            h.insert("x-ratelimit-reset-budget", v);
        }
        h.insert(
            "x-ratelimit-budget-period",
            HeaderValue::from_static(b.period.label()),
        );
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
