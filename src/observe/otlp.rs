//! Beside the pipeline: where finished spans go. `observe.otlp` and the `OTEL_*` variables resolved
//! into one [`OtlpSettings`]; a span processor that only pushes a sampled span into a bounded queue
//! (full: dropped and counted, never waited for); one task on the background runtime that exports
//! the queue in batches with `opentelemetry-otlp`'s exporter: http/protobuf over Sluice's own hyper
//! client, or gRPC (tonic) over a channel on Sluice's own connector; rustls with the upstreams'
//! trust either way.

use crate::config::{OtlpConfig, OtlpProtocol, check_endpoint, check_protocol};
use crate::observe::Metrics;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SpanData, SpanExporter as _, SpanProcessor};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where and how traces are exported, resolved from config and environment.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    pub protocol: OtlpProtocol,
    /// http/protobuf: the full traces URL (`…/v1/traces`); grpc: the collector's base URL.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub sample_ratio: f64,
    /// A root span is sampled by `sample_ratio`; a child follows its parent (`parentbased_*`).
    pub parent_based: bool,
    pub service_name: Option<String>,
    pub max_queue: usize,
    pub max_batch: usize,
    pub interval: Duration,
    pub timeout: Duration,
}

/// `observe.otlp` (or `None`) and a reader of the environment: the settings, `None` when traces
/// are off, or what is wrong. Config fields win; the `OTEL_*` variables fill the rest.
pub fn resolve(
    cfg: Option<&OtlpConfig>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<OtlpSettings>, String> {
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
    {
        return Ok(None);
    }
    let signal = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base = var("OTEL_EXPORTER_OTLP_ENDPOINT");
    let env_only;
    let cfg = match cfg {
        Some(c) => c,
        None if signal.is_some() || base.is_some() => {
            env_only = OtlpConfig::from_env_only();
            &env_only
        }
        None => return Ok(None),
    };
    // The first that is set, named as the error names it.
    let protocol = [
        ("observe.otlp.protocol", cfg.protocol.clone()),
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            var("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ),
    ]
    .into_iter()
    .find_map(|(name, p)| p.map(|p| check_protocol(p.trim()).map_err(|r| format!("{name}: {r}"))))
    .unwrap_or(Ok(OtlpProtocol::HttpProtobuf))?;
    // The signal's own URL is used as it is; for http/protobuf a base URL gets `/v1/traces`, for
    // grpc it is the collector's address as it is.
    let endpoint = match (protocol, &cfg.endpoint, signal, base) {
        (OtlpProtocol::HttpProtobuf, Some(e), _, _) => traces_url(e),
        (OtlpProtocol::Grpc, Some(e), _, _) => e.clone(),
        (_, None, Some(s), _) => s,
        (OtlpProtocol::HttpProtobuf, None, None, Some(b)) => traces_url(&b),
        (OtlpProtocol::Grpc, None, None, Some(b)) => b,
        (OtlpProtocol::HttpProtobuf, None, None, None) => "http://localhost:4318/v1/traces".into(),
        (OtlpProtocol::Grpc, None, None, None) => "http://localhost:4317".into(),
    };
    check_endpoint(&endpoint).map_err(|r| format!("otlp endpoint: {r}"))?;
    let sampler = var("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_traceidratio".into());
    let (parent_based, default_ratio) = match sampler.as_str() {
        "always_on" => (false, 1.0),
        "always_off" => (false, 0.0),
        "traceidratio" => (false, 1.0),
        "parentbased_always_on" => (true, 1.0),
        "parentbased_always_off" => (true, 0.0),
        "parentbased_traceidratio" => (true, 1.0),
        other => return Err(format!("OTEL_TRACES_SAMPLER: `{other}` is not supported")),
    };
    let env_ratio = match var("OTEL_TRACES_SAMPLER_ARG") {
        Some(a) if sampler.ends_with("traceidratio") => Some(
            a.trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG: `{a}` is not between 0 and 1"))?,
        ),
        _ => None,
    };
    Ok(Some(OtlpSettings {
        protocol,
        endpoint,
        headers: cfg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        sample_ratio: cfg.sample_ratio.or(env_ratio).unwrap_or(default_ratio),
        parent_based,
        service_name: cfg.service_name.clone(),
        max_queue: cfg.max_queue_spans,
        max_batch: cfg.max_batch_spans,
        interval: Duration::from_millis(cfg.export_interval_ms),
        timeout: Duration::from_millis(cfg.export_timeout_ms),
    }))
}

/// `base` with `/v1/traces` appended, unless it names that path already.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

impl OtlpSettings {
    pub fn sampler(&self) -> Sampler {
        let root = match self.sample_ratio {
            r if r >= 1.0 => Sampler::AlwaysOn,
            r if r <= 0.0 => Sampler::AlwaysOff,
            r => Sampler::TraceIdRatioBased(r),
        };
        if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}

/// Hands each sampled span to the export task's bounded queue; a full queue drops it (counted).
#[derive(Debug)]
pub struct QueueProcessor {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            Metrics::trace_spans_dropped("queue_full", 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export side: the queue's receiving end, spawned by [`Exporter::spawn`].
pub struct Exporter {
    rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    max_batch: usize,
    interval: Duration,
}

/// The processor for the tracer provider and the exporter for the background task.
pub fn pipeline(
    s: &OtlpSettings,
    resource: &Resource,
) -> Result<(QueueProcessor, Exporter), String> {
    let mut exporter = match s.protocol {
        OtlpProtocol::HttpProtobuf => http_exporter(s),
        OtlpProtocol::Grpc => grpc_exporter(s)?,
    }
    .map_err(|e| format!("otlp exporter: {e}"))?;
    exporter.set_resource(resource);
    let (tx, rx) = mpsc::channel(s.max_queue);
    Ok((
        QueueProcessor { tx },
        Exporter {
            rx,
            exporter,
            max_batch: s.max_batch,
            interval: s.interval,
        },
    ))
}

type Built = Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError>;

/// `POST` protobuf to the traces URL with [`OtlpClient`].
fn http_exporter(s: &OtlpSettings) -> Built {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let headers: HashMap<String, String> = s.headers.iter().cloned().collect();
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpClient::new(s.timeout))
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(s.endpoint.clone())
        .with_timeout(s.timeout)
        .with_headers(headers)
        .build()
}

/// gRPC on a lazily connected tonic channel over [`connector`] (HTTP/2 only), the headers as
/// metadata. Spawns the channel's worker: called on a runtime (the background one).
fn grpc_exporter(s: &OtlpSettings) -> Result<Built, String> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let mut headers = http::HeaderMap::new();
    for (k, v) in &s.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes());
        let value = http::HeaderValue::from_str(v);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(format!("otlp headers: `{k}` is not a valid header"));
        };
        headers.append(name, value);
    }
    let channel = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
        .map_err(|e| format!("otlp endpoint: `{}`: {e}", s.endpoint))?
        .timeout(s.timeout)
        .connect_with_connector_lazy(connector(s.timeout, true));
    Ok(opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(channel)
        .with_timeout(s.timeout)
        .with_metadata(tonic::metadata::MetadataMap::from_headers(headers))
        .build())
}

/// TCP (bounded connect) with rustls on `https` (the upstreams' config); HTTP/2 alone for gRPC.
fn connector(timeout: Duration, h2_only: bool) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*crate::deliver::tls_client_config()).clone())
        .https_or_http();
    if h2_only {
        https.enable_http2().wrap_connector(http)
    } else {
        https.enable_all_versions().wrap_connector(http)
    }
}

impl Exporter {
    /// Export every `interval` (or as soon as a batch is full) until `stop`, then what is left.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut batch: Vec<SpanData> = Vec::with_capacity(self.max_batch);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = self.max_batch - batch.len();
            tokio::select! {
                n = self.rx.recv_many(&mut batch, room) => {
                    if n == 0 {
                        break;
                    }
                    if batch.len() < self.max_batch {
                        continue;
                    }
                }
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            self.export(&mut batch).await;
        }
        // Stopping: what is queued now, in batches, then no more.
        self.rx.close();
        while let Some(s) = self.rx.recv().await {
            batch.push(s);
            if batch.len() == self.max_batch {
                self.export(&mut batch).await;
            }
        }
        self.export(&mut batch).await;
    }

    async fn export(&self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(self.max_batch));
        let n = spans.len() as u64;
        match self.exporter.export(spans).await {
            Ok(()) => Metrics::trace_spans_exported(n),
            Err(e) => {
                Metrics::trace_spans_dropped("export_failed", n);
                if let Some(suppressed) = crate::observe::log_gate::allow("otlp_export") {
                    tracing::warn!(error = %e, spans = n, suppressed, "trace export failed");
                }
            }
        }
    }
}

/// `opentelemetry-http`'s client trait on hyper with rustls: http and https collectors, no second
/// TLS stack, every export bounded in time and answer size.
struct OtlpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// Largest collector answer read (a partial-success message is a few hundred bytes).
const MAX_ANSWER: usize = 1 << 20;

impl OtlpClient {
    fn new(timeout: Duration) -> OtlpClient {
        OtlpClient {
            inner: Client::builder(TokioExecutor::new()).build(connector(timeout, false)),
            timeout,
        }
    }
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpClient")
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let send = async {
            let resp = self.inner.request(request.map(Full::new)).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| HttpError::from("otlp export timed out"))?
    }
}

/// Keeps the export task's stop switch and handle, for a flush on shutdown.
pub struct ExportTask {
    pub stop: CancellationToken,
    pub handle: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ExportTask {
    /// Stop the task and wait (at most `bound`) for what was queued to be exported.
    pub async fn flush(&self, bound: Duration) {
        self.stop.cancel();
        let handle = self.handle.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::time::timeout(bound, h).await;
        }
    }
}

pub type SharedExportTask = Arc<ExportTask>;

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_without_config_or_environment() {
        assert_eq!(resolve(None, &env(&[])).unwrap(), None);
    }

    #[test]
    fn the_environment_alone_turns_traces_on() {
        let s = resolve(
            None,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(s.sample_ratio, 0.25);
        assert!(s.parent_based);
        // The signal's own URL is taken as it is, and wins over the base.
        let s = resolve(
            None,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:9999/traces"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://b:9999/traces");
    }

    #[test]
    fn config_wins_over_the_environment() {
        let cfg = OtlpConfig {
            endpoint: Some("https://c.example/v1/traces".into()),
            sample_ratio: Some(0.5),
            ..OtlpConfig::from_env_only()
        };
        let s = resolve(
            Some(&cfg),
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "https://c.example/v1/traces");
        assert_eq!(s.sample_ratio, 0.5);
    }

    #[test]
    fn grpc_uses_the_base_url_as_it_is() {
        let grpc = |vars: &[(&str, &str)]| {
            let s = resolve(None, &env(vars)).unwrap().unwrap();
            assert_eq!(s.protocol, OtlpProtocol::Grpc);
            s.endpoint
        };
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317");
        assert_eq!(
            grpc(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            "http://a:4317"
        );
        // The traces protocol wins over the general one.
        assert_eq!(
            grpc(&[
                base,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ]),
            "http://a:4317"
        );
        let cfg = OtlpConfig {
            protocol: Some("grpc".into()),
            ..OtlpConfig::from_env_only()
        };
        let s = resolve(Some(&cfg), &env(&[])).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://localhost:4317");
        let cfg = OtlpConfig {
            endpoint: Some("https://c.example:4317".into()),
            ..cfg
        };
        let s = resolve(
            Some(&cfg),
            &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
        );
        assert_eq!(s.unwrap().unwrap().endpoint, "https://c.example:4317");
    }

    #[test]
    fn bad_values_are_refused_and_disabled_is_off() {
        for (var, p) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "foo"),
        ] {
            let e = resolve(
                None,
                &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"), (var, p)]),
            )
            .unwrap_err();
            assert_eq!(
                e,
                format!("{var}: `{p}` is not one of: http/protobuf, grpc")
            );
        }
        let e = resolve(
            None,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ]),
        )
        .unwrap_err();
        assert!(e.contains("OTEL_TRACES_SAMPLER_ARG"), "{e}");
        let cfg = OtlpConfig::from_env_only();
        assert_eq!(
            resolve(Some(&cfg), &env(&[("OTEL_SDK_DISABLED", "true")])).unwrap(),
            None
        );
        assert_eq!(
            resolve(Some(&cfg), &env(&[])).unwrap().unwrap().endpoint,
            "http://localhost:4318/v1/traces"
        );
    }
}
