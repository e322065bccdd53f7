//! Beside the pipeline: what one request tells when the access log or traces are on. The handler
//! asks [`Observer::begin`] once (both off: `None`, and nothing else runs); the stages fill the
//! [`Record`] carried alongside the request; it finishes when the response is answered, or for a
//! stream when the stream ends: the server span ends with its attributes and the access log line is
//! written. Never a key, a prompt or a completion.

use super::trace::{self, Tracing};
use crate::config::ObserveConfig;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::SdkTracer;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The access log and tracing switches, checked once per request.
pub struct Observer {
    tracing: Option<Tracing>,
    access_log: bool,
}

impl Observer {
    pub fn off() -> Observer {
        Observer {
            tracing: None,
            access_log: false,
        }
    }

    /// From `observe:` and the `OTEL_*` environment; starts the export task when traces are on.
    pub fn start(cfg: &ObserveConfig, node: &str) -> Result<Observer, String> {
        let env = |k: &str| std::env::var(k).ok();
        let otlp = super::otlp::resolve(cfg.otlp.as_ref().map(|o| &o.value), &env)?;
        let tracing = otlp.map(|s| Tracing::start(&s, node)).transpose()?;
        Ok(Observer {
            tracing,
            access_log: cfg.access_log,
        })
    }

    /// The record of a request on `path`, when anything is on and the path is an API call.
    #[inline]
    pub fn begin(
        &self,
        headers: &http::HeaderMap,
        path: &str,
        request_id: &str,
    ) -> Option<Arc<Record>> {
        if self.tracing.is_none() && !self.access_log {
            return None;
        }
        if !api_path(path) {
            return None;
        }
        let server = self
            .tracing
            .as_ref()
            .and_then(|t| t.server_span(headers, path, SystemTime::now()));
        if server.is_none() && !self.access_log {
            // Not sampled, and no access log: nothing to record.
            return None;
        }
        Some(Arc::new(Record {
            request_id: request_id.to_string(),
            started: Instant::now(),
            server,
            tracer: self.tracing.as_ref().map(|t| t.tracer().clone()),
            access_log: self.access_log,
            owners: AtomicU8::new(1),
            attempts: AtomicU32::new(0),
            f: Mutex::new(Fields::default()),
        }))
    }

    /// Export what is queued before the process ends (at most `bound`).
    pub async fn flush(&self, bound: Duration) {
        if let Some(t) = &self.tracing {
            t.flush(bound).await;
        }
    }
}

/// The API calls (not probes, metrics or admin): what gets a record.
fn api_path(path: &str) -> bool {
    !matches!(path, "/healthz" | "/readyz" | "/metrics") && !path.starts_with("/admin")
}

/// What the stages tell of one request.
#[derive(Default)]
struct Fields {
    tenant: Option<String>,
    operation: &'static str,
    request_model: Option<String>,
    response_model: Option<String>,
    provider: &'static str,
    route: Option<String>,
    backend: Option<String>,
    priority: &'static str,
    limiter_mode: &'static str,
    queue_wait: Option<Duration>,
    ttft: Option<Duration>,
    usage: Option<(u64, u64)>,
    finish_reasons: Vec<String>,
    status: u16,
    stream_end: Option<&'static str>,
}

pub struct Record {
    request_id: String,
    started: Instant,
    /// The server span's context (traces on).
    server: Option<Context>,
    tracer: Option<SdkTracer>,
    access_log: bool,
    /// Who still has to let go before the record finishes: the handler, and a stream it handed on.
    owners: AtomicU8,
    attempts: AtomicU32,
    f: Mutex<Fields>,
}

/// One upstream attempt's span (traces on).
pub struct AttemptSpan {
    cx: Context,
}

impl Record {
    fn fields(&self) -> std::sync::MutexGuard<'_, Fields> {
        self.f.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A child span of the server span from `since` to now (traces on and sampled).
    fn span_since(&self, name: &'static str, since: SystemTime, attrs: Vec<KeyValue>) {
        if let (Some(t), Some(parent)) = (&self.tracer, &self.server)
            && parent.span().is_recording()
        {
            trace::child(t, parent, name, SpanKind::Internal, since, attrs)
                .span()
                .end();
        }
    }

    /// Whether the request's trace is sampled (worth reading a response for its facts).
    pub fn recording(&self) -> bool {
        self.server
            .as_ref()
            .is_some_and(|c| c.span().is_recording())
    }

    /// The tenant, the operation (`chat`, `embeddings`, …) and the model asked for.
    pub fn request(&self, tenant: &str, operation: &'static str, model: &str) {
        let mut f = self.fields();
        f.tenant = Some(tenant.to_string());
        f.operation = operation;
        f.request_model = Some(model.to_string());
    }

    /// Shape's door, entered at `since`: `outcome` (`allowed`, `limited`, `shed`).
    pub fn rate_limit(
        &self,
        since: SystemTime,
        outcome: &'static str,
        priority: Option<&'static str>,
        limiter_mode: &'static str,
    ) {
        {
            let mut f = self.fields();
            f.priority = priority.unwrap_or("");
            f.limiter_mode = limiter_mode;
        }
        let mut attrs = vec![
            KeyValue::new("sluice.outcome", outcome),
            KeyValue::new("sluice.limiter_mode", limiter_mode),
        ];
        if let Some(p) = priority {
            attrs.push(KeyValue::new("sluice.priority", p));
        }
        self.span_since("rate_limit", since, attrs);
    }

    /// A wait in Shape's queue for a backend slot, entered at `since`.
    pub fn queued(&self, since: SystemTime, waited: Duration, outcome: &'static str) {
        {
            let mut f = self.fields();
            f.queue_wait = Some(f.queue_wait.unwrap_or_default() + waited);
        }
        self.span_since(
            "queue_wait",
            since,
            vec![
                KeyValue::new("sluice.outcome", outcome),
                KeyValue::new("sluice.queue_wait_ms", millis(waited)),
            ],
        );
    }

    /// An attempt on `backend` starts: counted, and its span (traces on) to carry upstream.
    pub fn attempt(&self, backend: &str, provider: &'static str) -> Option<AttemptSpan> {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut f = self.fields();
            f.backend = Some(backend.to_string());
            f.provider = provider;
        }
        let (t, parent) = (self.tracer.as_ref()?, self.server.as_ref()?);
        let cx = trace::child(
            t,
            parent,
            "attempt",
            SpanKind::Client,
            SystemTime::now(),
            vec![
                KeyValue::new("sluice.attempt", i64::from(n)),
                KeyValue::new("sluice.backend", backend.to_string()),
                KeyValue::new("gen_ai.provider.name", provider),
            ],
        );
        Some(AttemptSpan { cx })
    }

    /// Tokens used, as the response (or the stream) counted them.
    pub fn usage(&self, input: u64, output: u64) {
        self.fields().usage = Some((input, output));
    }

    /// What the response says of itself: its model and finish reasons.
    pub fn response(&self, model: Option<String>, finish_reasons: Vec<String>) {
        let mut f = self.fields();
        if model.is_some() {
            f.response_model = model;
        }
        if !finish_reasons.is_empty() {
            f.finish_reasons = finish_reasons;
        }
    }

    /// The response is a stream: the record finishes when it ends ([`Record::stream_done`]).
    pub fn streaming(&self) {
        self.owners.fetch_add(1, Ordering::AcqRel);
    }

    /// The stream ended: its time to first token and how it ended.
    pub fn stream_done(&self, ttft: Option<Duration>, end: &'static str) {
        {
            let mut f = self.fields();
            f.ttft = ttft;
            f.stream_end = Some(end);
        }
        self.release();
    }

    /// The handler answered `status` on `route` through `backend`.
    pub fn answered(&self, status: u16, route: Option<&str>, backend: Option<&str>) {
        {
            let mut f = self.fields();
            f.status = status;
            f.route = route.map(str::to_string);
            if let Some(b) = backend {
                f.backend = Some(b.to_string());
            }
        }
        self.release();
    }

    fn release(&self) {
        if self.owners.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let total = self.started.elapsed();
        let f = std::mem::take(&mut *self.fields());
        let attempts = self.attempts.load(Ordering::Relaxed);
        if let Some(cx) = &self.server {
            let span = cx.span();
            if span.is_recording() {
                if let Some(m) = &f.request_model
                    && !f.operation.is_empty()
                {
                    span.update_name(format!("{} {m}", f.operation));
                }
                span.set_attributes(server_attributes(&f, attempts));
                if f.status >= 500 {
                    span.set_status(Status::error(format!("status {}", f.status)));
                }
            }
            span.end();
        }
        if self.access_log {
            let trace_id = self.server.as_ref().map(trace::trace_id);
            super::access_log::write(&super::access_log::Line {
                request_id: &self.request_id,
                tenant: f.tenant.as_deref().unwrap_or("-"),
                route: f.route.as_deref().unwrap_or("-"),
                backend: f.backend.as_deref().unwrap_or("-"),
                model: f.request_model.as_deref().unwrap_or("-"),
                status: f.status,
                total,
                queue_wait: f.queue_wait,
                ttft: f.ttft,
                attempts,
                usage: f.usage,
                stream_end: f.stream_end,
                trace_id: trace_id.as_deref(),
            });
        }
    }
}

impl AttemptSpan {
    /// `traceparent`/`tracestate` naming this attempt, for the upstream request.
    pub fn inject(&self, headers: &mut http::HeaderMap) {
        trace::inject(&self.cx, headers);
    }

    /// The attempt ended: the upstream's status (0: none), `outcome` and why it failed over.
    pub fn end(self, status: u16, outcome: &'static str, reason: Option<&'static str>) {
        let span = self.cx.span();
        if span.is_recording() {
            if status > 0 {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
            }
            span.set_attribute(KeyValue::new("sluice.outcome", outcome));
            if let Some(r) = reason {
                span.set_attribute(KeyValue::new("sluice.failover_reason", r));
                span.set_status(Status::error(r));
            }
        }
        span.end();
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The server span's attributes: GenAI semantic conventions, then Sluice's own.
fn server_attributes(f: &Fields, attempts: u32) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(20);
    let mut s = |k: &'static str, v: &str| {
        if !v.is_empty() {
            a.push(KeyValue::new(k, v.to_string()));
        }
    };
    s("gen_ai.operation.name", f.operation);
    s("gen_ai.provider.name", f.provider);
    s("gen_ai.system", f.provider);
    s(
        "gen_ai.request.model",
        f.request_model.as_deref().unwrap_or(""),
    );
    s(
        "gen_ai.response.model",
        f.response_model.as_deref().unwrap_or(""),
    );
    s("sluice.tenant", f.tenant.as_deref().unwrap_or(""));
    s("sluice.route", f.route.as_deref().unwrap_or(""));
    s("sluice.backend", f.backend.as_deref().unwrap_or(""));
    s("sluice.priority", f.priority);
    s("sluice.limiter_mode", f.limiter_mode);
    s("sluice.stream_end", f.stream_end.unwrap_or(""));
    if let Some((i, o)) = f.usage {
        a.push(KeyValue::new("gen_ai.usage.input_tokens", i as i64));
        a.push(KeyValue::new("gen_ai.usage.output_tokens", o as i64));
    }
    if !f.finish_reasons.is_empty() {
        let reasons: Vec<StringValue> = f
            .finish_reasons
            .iter()
            .map(|r| StringValue::from(r.clone()))
            .collect();
        a.push(KeyValue::new(
            "gen_ai.response.finish_reasons",
            Value::Array(Array::String(reasons)),
        ));
    }
    if let Some(w) = f.queue_wait {
        a.push(KeyValue::new("sluice.queue_wait_ms", millis(w)));
    }
    if let Some(t) = f.ttft {
        a.push(KeyValue::new("sluice.ttft_ms", millis(t)));
    }
    a.push(KeyValue::new("sluice.attempts", i64::from(attempts)));
    if f.status > 0 {
        a.push(KeyValue::new(
            "http.response.status_code",
            i64::from(f.status),
        ));
    }
    a
}
