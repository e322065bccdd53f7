//! Beside the pipeline: the OpenTelemetry tracer when traces are on. A server span per request
//! (its parent the client's W3C `traceparent`), child spans for the rate-limit decision, the queue
//! wait and each upstream attempt, and the attempt's context injected into the upstream request so
//! provider-side traces join. Finished spans go to [`super::otlp`]'s bounded queue.

use super::otlp::{self, ExportTask, OtlpSettings};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The tracer and its export task (traces on).
pub struct Tracing {
    tracer: SdkTracer,
    /// Kept alive for the tracer; its processor feeds the export task.
    _provider: SdkTracerProvider,
    task: ExportTask,
}

impl Tracing {
    /// Build the tracer and spawn the export task on the current runtime (the background one).
    pub fn start(s: &OtlpSettings, node: &str) -> Result<Tracing, String> {
        let mut resource = Resource::builder()
            .with_attribute(KeyValue::new("service.instance.id", node.to_string()));
        if let Some(name) = &s.service_name {
            resource = resource.with_service_name(name.clone());
        } else if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name("sluice");
        }
        let resource = resource.build();
        let (processor, exporter) = otlp::pipeline(s, &resource)?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(s.sampler())
            .with_resource(resource)
            .build();
        let stop = CancellationToken::new();
        let handle = exporter.spawn(stop.clone());
        tracing::info!(endpoint = %s.endpoint, protocol = ?s.protocol, sample_ratio = s.sample_ratio, "exporting traces over otlp");
        Ok(Tracing {
            tracer: provider.tracer("sluice"),
            _provider: provider,
            task: ExportTask {
                stop,
                handle: std::sync::Mutex::new(Some(handle)),
            },
        })
    }

    /// The server span of a request, continuing the client's `traceparent`/`tracestate`; None
    /// when the sampler drops it (an unsampled request then costs the sampling decision only: no
    /// record, no child spans, no attributes).
    pub fn server_span(
        &self,
        headers: &http::HeaderMap,
        path: &str,
        at: SystemTime,
    ) -> Option<Context> {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let mut span = self.tracer.build_with_context(
            self.tracer
                .span_builder("POST")
                .with_kind(SpanKind::Server)
                .with_start_time(at),
            &parent,
        );
        if !span.span_context().is_sampled() {
            return None;
        }
        span.update_name(format!("POST {path}"));
        span.set_attribute(KeyValue::new("http.request.method", "POST"));
        span.set_attribute(KeyValue::new("url.path", path.to_string()));
        Some(parent.with_span(span))
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Stop the export task once what is queued is exported (at most `bound`).
    pub async fn flush(&self, bound: Duration) {
        self.task.flush(bound).await;
    }
}

/// A child of `parent` started at `at`.
pub fn child(
    tracer: &SdkTracer,
    parent: &Context,
    name: &'static str,
    kind: SpanKind,
    at: SystemTime,
    attrs: Vec<KeyValue>,
) -> Context {
    let span = tracer.build_with_context(
        tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(at)
            .with_attributes(attrs),
        parent,
    );
    parent.with_span(span)
}

/// `traceparent` (and `tracestate`) of `cx`'s span into `headers`.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// The trace id of `cx`'s span, as 32 hex digits.
pub fn trace_id(cx: &Context) -> String {
    cx.span().span_context().trace_id().to_string()
}
