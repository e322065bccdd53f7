//! The attempt loop: pick a backend, send, fail over on connect error / timeout / 5xx / 429 while
//! nothing has reached the client, then hand back a full or streamed response.

use super::body::read_whole;
use super::client::{UpstreamBody, UpstreamClient};
use super::plan::{self, Endpoint, Plan, RequestBody};
use super::stream::{BoxError, OnFinish, StreamBody};
use crate::backends::{Backend, BackendTable, BackendView, InFlightGuard};
use crate::balance::{self, Candidate};
use crate::config::Priority;
use crate::error::GatewayError;
use crate::observe::Metrics;
use crate::protocol::Protocol;
use crate::route::RouteDecision;
use crate::shape::{Outcome, Shed, Ticket};
use crate::translate::{Usage, usage_from_body, usage_from_object};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full_body(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Largest non-streamed upstream body we read into memory.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;

/// Called once with the actual usage (or None when unknown) after the response completes.
pub type UsageSink = Box<dyn FnOnce(Option<Usage>) + Send + Sync>;

/// One client request, parsed and admitted, as Deliver needs it.
pub struct Call<'a> {
    pub endpoint: Endpoint,
    pub body: &'a RequestBody,
    pub stream: bool,
    pub include_usage: bool,
    pub model: &'a str,
    pub tenant: &'a str,
    pub route: &'a RouteDecision,
    pub request_id: &'a str,
    pub client_headers: &'a HeaderMap,
    pub affinity_key: Option<&'a str>,
    pub est_input_tokens: u64,
    pub est_output_tokens: u64,
    pub on_usage: Option<UsageSink>,
    /// Shape: the request's class, its client deadline, and its tenant's fair-queuing weight.
    pub priority: Priority,
    pub deadline: Option<Instant>,
    pub weight: u32,
}

/// What Deliver returns: the response and the backend that answered (for headers and metrics).
pub struct Delivered {
    pub response: Response<RespBody>,
    pub backend: Option<Arc<Backend>>,
}

pub struct Deliver {
    pub backends: BackendTable,
    /// `[client set][backend id]`: set 0 for background tasks, one per serving worker after it.
    pub clients: Vec<Vec<UpstreamClient>>,
    pub view: Arc<dyn BackendView>,
    pub max_attempts: u32,
    pub default_max_tokens: u32,
    /// Longest a request may wait (for a slot, or for a cooldown to end): `shaping.max_wait_ms`.
    pub max_wait: Duration,
}

enum Attempt {
    Done(Response<RespBody>),
    /// Retryable: try another backend if attempts remain. Carries what to answer if none remain.
    Retry(&'static str, Failure),
}

enum Failure {
    Error(GatewayError),
    Upstream(Response<RespBody>),
}

/// Why the pool had nothing to offer.
struct Pool {
    cands: Vec<Candidate>,
    /// Some backend of the route serves this model and endpoint.
    any_serves: bool,
    /// Some untried backend is available (healthy, not cooling down), whatever its load.
    any_available: bool,
    /// When none is available and every one of them is only cooling down (a 429's Retry-After), the
    /// earliest end of those cooldowns.
    cooldown_end: Option<std::time::Instant>,
}

impl Deliver {
    /// Candidates of the route's pool for this call. With `capacity`, only backends with a free slot
    /// under their concurrency limit for this call's priority.
    fn candidates(&self, call: &Call<'_>, tried: &[usize], capacity: bool) -> Pool {
        let now = std::time::Instant::now();
        let mut pool = Pool {
            cands: Vec::with_capacity(call.route.pool.len()),
            any_serves: false,
            any_available: false,
            cooldown_end: None,
        };
        let mut only_cooling = true;
        for &id in call.route.pool.iter() {
            let b = &self.backends[id];
            if !b.cfg.serves(call.model) || !call.endpoint.servable_by(b.cfg.protocol) {
                continue;
            }
            pool.any_serves = true;
            if tried.contains(&id) {
                continue;
            }
            let st = self.view.status(b, now);
            if call.route.health_check && !st.available {
                match st.cooldown_until.filter(|c| *c > now && st.healthy) {
                    Some(c) => pool.cooldown_end = Some(pool.cooldown_end.map_or(c, |e| e.min(c))),
                    None => only_cooling = false,
                }
                continue;
            }
            pool.any_available = true;
            // The slot check uses this node's own in-flight count: the concurrency limit is per node.
            if capacity && !b.has_room(b.in_flight(), call.priority) {
                continue;
            }
            let latency_ms = if call.stream {
                st.ttft_ms.or(st.latency_ms)
            } else {
                st.latency_ms
            };
            let p = b.cfg.price;
            let cost = (p.input_per_1m * call.est_input_tokens as f64
                + p.output_per_1m * call.est_output_tokens as f64)
                / 1e6;
            pool.cands.push(Candidate {
                id,
                weight: b.cfg.weight,
                in_flight: st.in_flight,
                latency_ms,
                cost,
            });
        }
        if pool.any_available || !only_cooling {
            pool.cooldown_end = None;
        }
        pool
    }

    fn pick(&self, call: &Call<'_>, cands: &[Candidate]) -> Option<usize> {
        if let Some(key) = call.affinity_key {
            return balance::rendezvous(key, cands);
        }
        let mut state = call.route.state.lock().expect("pool state lock");
        balance::select(call.route.algorithm, cands, &mut state, &mut || {
            rand::random::<f64>()
        })
    }

    /// Pick a backend with a free slot and take the slot, waiting in the route's queue (by priority,
    /// deadline and tenant share) while every backend is at its limit.
    async fn acquire(
        &self,
        call: &Call<'_>,
        tried: &[usize],
    ) -> Result<(Arc<Backend>, InFlightGuard), GatewayError> {
        let ticket = Ticket {
            priority: call.priority,
            tenant: Arc::from(call.tenant),
            weight: call.weight,
            deadline: call.deadline,
            enqueued: Instant::now(),
        };
        let got = call
            .route
            .queue
            .wait(ticket, || {
                let pool = self.candidates(call, tried, true);
                let id = self.pick(call, &pool.cands)?;
                let b = self.backends[id].clone();
                let guard = b.try_start(call.priority)?;
                Some((b, guard))
            })
            .await;
        got.map_err(GatewayError::Shed)
    }

    pub async fn forward(&self, mut call: Call<'_>) -> Result<Delivered, GatewayError> {
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<Failure> = None;
        let mut last_backend: Option<Arc<Backend>> = None;
        let mut waited_cooldown = false;
        for attempt in 0..self.max_attempts {
            let pool = self.candidates(&call, &tried, false);
            if !pool.any_serves {
                return Err(GatewayError::ModelNotFound(call.model.to_string()));
            }
            if !pool.any_available {
                // Every backend is only cooling down after upstream 429s: wait for the first to come
                // back when that fits the request's budget, else answer 429 with when to retry.
                let Some(end) = pool.cooldown_end else { break };
                let wait = end.saturating_duration_since(std::time::Instant::now());
                let budget = call.deadline.map_or(self.max_wait, |d| {
                    d.saturating_duration_since(Instant::now())
                        .min(self.max_wait)
                });
                if wait > budget || waited_cooldown {
                    return Err(GatewayError::UpstreamsRateLimited {
                        route: call.route.route.to_string(),
                        retry_after: wait.max(Duration::from_millis(1)),
                    });
                }
                waited_cooldown = true;
                tokio::time::sleep(wait).await;
                continue;
            }
            let (backend, guard) = self.acquire(&call, &tried).await?;
            tried.push(backend.id);
            Metrics::routing(
                &call.route.route,
                backend.name(),
                call.route.algorithm.as_str(),
            );
            last_backend = Some(backend.clone());
            match self.attempt(&mut call, &backend, guard).await {
                Attempt::Done(response) => {
                    return Ok(Delivered {
                        response,
                        backend: last_backend,
                    });
                }
                Attempt::Retry(reason, failure) => {
                    if attempt + 1 < self.max_attempts {
                        Metrics::failover(backend.name(), reason);
                        tracing::info!(request_id = %call.request_id, backend = %backend.name(), reason, "failing over");
                    }
                    last = Some(failure);
                }
            }
        }
        match last {
            Some(Failure::Upstream(response)) => Ok(Delivered {
                response,
                backend: last_backend,
            }),
            Some(Failure::Error(e)) => Err(e),
            None => Err(GatewayError::NoHealthyBackend(call.route.route.to_string())),
        }
    }

    async fn attempt(
        &self,
        call: &mut Call<'_>,
        backend: &Arc<Backend>,
        guard: InFlightGuard,
    ) -> Attempt {
        let cfg = &backend.cfg;
        let client_proto = call.endpoint.client_protocol();
        let model = cfg.model_for(call.model);
        let plan = match plan::plan(call, cfg.protocol, model, self.default_max_tokens) {
            Ok(p) => p,
            Err(e) => return Attempt::Done(error_response(&e, client_proto)),
        };
        let set = super::client::client_set().min(self.clients.len() - 1);
        let client = &self.clients[set][backend.id];
        let req = match build_request(backend, client, call, &plan) {
            Ok(r) => r,
            Err(e) => return Attempt::Retry("build", Failure::Error(e)),
        };
        // Smoothing: space request starts to this backend.
        if let Some(p) = &backend.pacer {
            let wait = p.reserve(Instant::now());
            if !wait.is_zero() {
                if call.deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    return Attempt::Done(error_response(
                        &GatewayError::Shed(Shed::DeadlineExpired),
                        client_proto,
                    ));
                }
                tokio::time::sleep(wait).await;
            }
        }
        // A request whose client deadline passed is never sent upstream.
        let now = Instant::now();
        let left = call.deadline.map(|d| d.saturating_duration_since(now));
        if left.is_some_and(|l| l.is_zero()) {
            return Attempt::Done(error_response(
                &GatewayError::Shed(Shed::DeadlineExpired),
                client_proto,
            ));
        }
        let sent_at = now;
        let deadline = sent_at + cfg.timeouts.total();
        let first_byte = left.map_or(cfg.timeouts.first_byte(), |l| {
            l.min(cfg.timeouts.first_byte())
        });
        let client_bound = left.is_some_and(|l| l < cfg.timeouts.first_byte());
        let resp = match tokio::time::timeout(first_byte, client.send(req)).await {
            Err(_) if client_bound => {
                return Attempt::Done(error_response(
                    &GatewayError::Shed(Shed::DeadlineExpired),
                    client_proto,
                ));
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
        let now = std::time::Instant::now();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            backend.congestion_sample(Outcome::Dropped);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after(resp.headers()).unwrap_or(Duration::from_secs(1));
            backend.cooldown(now + wait);
            let body = read_limited(backend, resp.into_body(), deadline)
                .await
                .unwrap_or_default();
            return Attempt::Retry(
                "rate_limited",
                Failure::Upstream(upstream_error(
                    client_proto,
                    status,
                    &body,
                    &plan,
                    Some(wait),
                )),
            );
        }
        if status.is_server_error() {
            backend.passive(false, now);
            let body = read_limited(backend, resp.into_body(), deadline)
                .await
                .unwrap_or_default();
            return Attempt::Retry(
                "5xx",
                Failure::Upstream(upstream_error(client_proto, status, &body, &plan, None)),
            );
        }
        backend.passive(true, now);
        if !status.is_success() {
            let body = read_limited(backend, resp.into_body(), deadline)
                .await
                .unwrap_or_default();
            return Attempt::Done(upstream_error(client_proto, status, &body, &plan, None));
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_sse {
            return Attempt::Done(
                self.stream_response(call, backend, resp, &plan, guard, sent_at, deadline),
            );
        }
        // Whole body: read, count usage, translate if needed.
        let body = match read_limited(backend, resp.into_body(), deadline).await {
            Ok(b) => b,
            Err(e) => return Attempt::Retry("body", Failure::Error(e)),
        };
        let elapsed = sent_at.elapsed();
        backend.observe_latency(elapsed, std::time::Instant::now());
        backend.congestion_sample(Outcome::Success(elapsed));
        backend.metrics.upstream.record(elapsed.as_secs_f64());
        drop(guard);
        // Pass-through bodies are only scanned for `usage` (no JSON tree); translated ones are parsed whole.
        let parsed: Option<Value> = if plan.translated {
            serde_json::from_slice(&body).ok()
        } else {
            None
        };
        let usage = match &parsed {
            Some(v) => usage_from_body(v),
            None => scan_usage(&body),
        };
        record_usage(call, backend, usage);
        let out = if plan.translated {
            let Some(v) = parsed else {
                let e = GatewayError::UpstreamUnavailable {
                    backend: backend.name().into(),
                    reason: "upstream answered invalid json".into(),
                };
                return Attempt::Done(error_response(&e, client_proto));
            };
            match plan::response_back(call.endpoint, &v, call.model) {
                Ok(v) => Bytes::from(v.to_string()),
                Err(e) => return Attempt::Done(error_response(&e, client_proto)),
            }
        } else {
            body
        };
        let response = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .body(full_body(out))
            .expect("valid response");
        Attempt::Done(response)
    }

    #[allow(clippy::too_many_arguments)]
    fn stream_response(
        &self,
        call: &mut Call<'_>,
        backend: &Arc<Backend>,
        resp: Response<UpstreamBody>,
        plan: &Plan,
        guard: crate::backends::InFlightGuard,
        sent_at: Instant,
        deadline: Instant,
    ) -> Response<RespBody> {
        let transform = plan::stream_transform(call.endpoint, plan, call.model, call.include_usage);
        let b = backend.clone();
        let tenant: Arc<str> = Arc::from(call.tenant);
        let sink = call.on_usage.take();
        let on_finish: OnFinish = Box::new(move |out| {
            let now = std::time::Instant::now();
            match (out.ttft, out.error) {
                (Some(ttft), None | Some("client_gone")) => {
                    b.congestion_sample(Outcome::Success(ttft))
                }
                _ => b.congestion_sample(Outcome::Dropped),
            }
            if let Some(ttft) = out.ttft {
                b.observe_ttft(ttft, now);
                b.metrics.ttft.record(ttft.as_secs_f64());
            }
            b.metrics.upstream.record(sent_at.elapsed().as_secs_f64());
            if let Some(kind) = out.error {
                Metrics::error(kind);
            }
            record_usage_parts(&tenant, &b, out.usage);
            if let Some(s) = sink {
                s(out.usage);
            }
            drop(guard);
        });
        let body = StreamBody::new(
            resp.into_body(),
            transform,
            call.endpoint.client_protocol(),
            sent_at,
            backend.cfg.timeouts.idle(),
            deadline,
            on_finish,
        );
        Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "text/event-stream")
            .header("cache-control", "no-cache")
            .body(body.boxed_unsync())
            .expect("valid response")
    }
}

/// `usage` of an OpenAI or Anthropic body without building a tree of the whole body: only the object
/// after its last `"usage"` key is parsed (both APIs put it last, at the top level; inside a JSON string
/// the quotes would be escaped, so the match is a key). Same result as [`usage_from_body`].
fn scan_usage(body: &[u8]) -> Option<Usage> {
    let at = memchr::memmem::rfind(body, b"\"usage\"")?;
    let rest = body[at + 7..].trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start();
    if rest.first() != Some(&b'{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(rest);
    match serde::Deserialize::deserialize(&mut de) {
        Ok(fields) => UsageFields::usage(fields),
        // Anything unusual (a duplicate key, say): the tree decides.
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(rest);
            let v: Value = serde::Deserialize::deserialize(&mut de).ok()?;
            usage_from_object(&v)
        }
    }
}

/// The `usage` fields either API uses, read without building a tree; a field counts as present even
/// when null, as in [`usage_from_object`].
#[derive(serde::Deserialize)]
struct UsageFields {
    #[serde(default, deserialize_with = "present")]
    prompt_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    completion_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    input_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    output_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cache_read_input_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cache_creation_input_tokens: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

impl UsageFields {
    fn usage(self) -> Option<Usage> {
        let num = |v: &Option<Value>| v.as_ref().and_then(Value::as_u64).unwrap_or(0);
        if self.prompt_tokens.is_some() || self.completion_tokens.is_some() {
            return Some(Usage {
                input_tokens: num(&self.prompt_tokens),
                output_tokens: num(&self.completion_tokens),
            });
        }
        if self.input_tokens.is_some() || self.output_tokens.is_some() {
            return Some(Usage {
                input_tokens: num(&self.input_tokens)
                    + num(&self.cache_read_input_tokens)
                    + num(&self.cache_creation_input_tokens),
                output_tokens: num(&self.output_tokens),
            });
        }
        None
    }
}

fn record_usage(call: &mut Call<'_>, backend: &Backend, usage: Option<Usage>) {
    record_usage_parts(call.tenant, backend, usage);
    if let Some(s) = call.on_usage.take() {
        s(usage);
    }
}

fn record_usage_parts(tenant: &str, backend: &Backend, usage: Option<Usage>) {
    if let Some(u) = usage {
        let p = backend.cfg.price;
        let cost = (p.input_per_1m * u.input_tokens as f64
            + p.output_per_1m * u.output_tokens as f64)
            / 1e6;
        Metrics::tokens(
            tenant,
            backend.name(),
            u.input_tokens,
            u.output_tokens,
            cost,
        );
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn build_request(
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
    match backend.cfg.protocol {
        Protocol::Openai => {
            if let Some(k) = &backend.api_key {
                b = b.header("authorization", format!("Bearer {k}"));
            }
            for h in ["openai-organization", "openai-project"] {
                if let Some(v) = call.client_headers.get(h) {
                    b = b.header(h, v);
                }
            }
        }
        Protocol::Anthropic => {
            if let Some(k) = &backend.api_key {
                b = b.header("x-api-key", k.as_str());
            }
            let version = call
                .client_headers
                .get("anthropic-version")
                .cloned()
                .unwrap_or(HeaderValue::from_static("2023-06-01"));
            b = b.header("anthropic-version", version);
            if call.endpoint == Endpoint::Messages
                && let Some(v) = call.client_headers.get("anthropic-beta")
            {
                b = b.header("anthropic-beta", v);
            }
        }
    }
    b.body(plan.body.clone())
        .map_err(|e| GatewayError::UpstreamUnavailable {
            backend: backend.name().into(),
            reason: format!("cannot build request: {e}"),
        })
}

/// A whole upstream body, bounded in size and by the request's total deadline.
async fn read_limited(
    backend: &Backend,
    body: UpstreamBody,
    deadline: Instant,
) -> Result<Bytes, GatewayError> {
    match tokio::time::timeout_at(deadline, read_whole(body, MAX_UPSTREAM_BODY)).await {
        Err(_) => Err(GatewayError::UpstreamTimeout(backend.name().into())),
        Ok(Err(e)) => Err(GatewayError::UpstreamUnavailable {
            backend: backend.name().into(),
            reason: e.to_string(),
        }),
        Ok(Ok(b)) => Ok(b),
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// An upstream error answer, in the client's dialect when the protocols differ.
fn upstream_error(
    client: Protocol,
    status: StatusCode,
    body: &Bytes,
    plan: &Plan,
    wait: Option<Duration>,
) -> Response<RespBody> {
    let out = if plan.translated || serde_json::from_slice::<Value>(body).is_err() {
        Bytes::from(plan::error_back(client, status.as_u16(), body).to_string())
    } else {
        body.clone()
    };
    let mut b = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json");
    if let Some(w) = wait {
        b = b.header(RETRY_AFTER, w.as_secs().max(1).to_string());
    }
    b.body(full_body(out)).expect("valid response")
}

/// A gateway error as a response in the client's dialect.
pub fn error_response(e: &GatewayError, proto: Protocol) -> Response<RespBody> {
    Metrics::error(e.kind());
    let mut b = Response::builder()
        .status(e.status())
        .header(CONTENT_TYPE, "application/json");
    if let Some(w) = e.retry_after() {
        b = b.header(RETRY_AFTER, w.as_secs_f64().ceil().max(1.0).to_string());
    }
    b.body(full_body(e.body(proto).to_string()))
        .expect("valid response")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::scan_usage;
    use crate::translate::{Usage, usage_from_body};

    fn both(raw: &str) -> (Option<Usage>, Option<Usage>) {
        let tree = serde_json::from_str(raw).ok();
        (
            scan_usage(raw.as_bytes()),
            tree.as_ref().and_then(usage_from_body),
        )
    }

    #[test]
    fn scanned_usage_equals_the_tree_usage() {
        for raw in [
            r#"{"id":"c","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
            r#"{"usage" : {"input_tokens":5,"output_tokens":7,"cache_read_input_tokens":2,"cache_creation_input_tokens":1},"content":[{"type":"text","text":"x"}]}"#,
            r#"{"choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 999} is quoted"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            r#"{"usage":null}"#,
            r#"{"choices":[]}"#,
            r#"{"usage":{"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":null,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            r#"{"usage":{"input_tokens":"x","output_tokens":2.5,"cache_read_input_tokens":3}}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens":7,"completion_tokens":2}}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"usage":{}}"#,
        ] {
            let (scanned, tree) = both(raw);
            assert_eq!(scanned, tree, "{raw}");
        }
        assert_eq!(
            scan_usage(br#"{"usage":{"prompt_tokens":4,"completion_tokens":5}}"#),
            Some(Usage {
                input_tokens: 4,
                output_tokens: 5
            })
        );
    }
}
