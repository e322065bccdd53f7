//! OpenTelemetry traces and the access log, end to end: real OTLP receivers started here, over
//! HTTP (protobuf `ExportTraceServiceRequest` at `/v1/traces`) and over gRPC (a tonic
//! `TraceService`, in the clear and behind TLS), real gateway processes, simulated upstreams. Spans
//! carry the GenAI and Sluice attributes, continue the client's trace, and name the attempt in the
//! `traceparent` the upstream sees; failovers show two attempts; streams carry usage and the response
//! model; with traces off nothing is exported.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tonic::codegen::Service as _;

/// A span as received, with its resource's `service.instance.id` (the node).
#[derive(Clone, Debug)]
struct Got {
    node: String,
    span: Span,
}

/// What a receiver keeps, however the spans arrive: every span of every export request in order,
/// and each request's headers (over gRPC: its metadata).
#[derive(Clone, Default)]
struct Store {
    spans: Arc<Mutex<Vec<Got>>>,
    requests: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Store {
    fn add(&self, headers: http::HeaderMap, export: ExportTraceServiceRequest) {
        self.requests.lock().unwrap().push(headers);
        for rs in export.resource_spans {
            let node = rs
                .resource
                .as_ref()
                .and_then(|res| {
                    res.attributes
                        .iter()
                        .find(|a| a.key == "service.instance.id")
                })
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    self.spans.lock().unwrap().push(Got {
                        node: node.clone(),
                        span,
                    });
                }
            }
        }
    }
}

/// OTLP/gRPC: `TraceService/Export`.
#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let (metadata, _, export) = request.into_parts();
        self.add(metadata.into_headers(), export);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// OTLP/HTTP: `POST /v1/traces` with a protobuf body.
async fn export_over_http(
    store: Store,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
    let ok = req.uri().path() == "/v1/traces";
    let headers = req.headers().clone();
    let body = req.into_body().collect().await?.to_bytes();
    store.add(
        headers,
        ExportTraceServiceRequest::decode(body).unwrap_or_default(),
    );
    Ok(http::Response::builder()
        .status(if ok { 200 } else { 404 })
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .unwrap())
}

/// How spans reach a receiver: OTLP/HTTP, or OTLP/gRPC in the clear or behind TLS.
#[derive(Clone)]
enum Over {
    Http,
    Grpc(Option<Arc<rustls::ServerConfig>>),
}

/// An OTLP receiver on loopback.
struct Receiver {
    url: String,
    store: Store,
}

async fn receiver() -> Receiver {
    receiver_over(Over::Http).await
}

async fn receiver_over(over: Over) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if matches!(over, Over::Grpc(Some(_))) {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let store = Store::default();
    let s = store.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (over, s) = (over.clone(), s.clone());
            tokio::spawn(async move {
                let _ = match over {
                    Over::Http => {
                        let svc = service_fn(move |req| export_over_http(s.clone(), req));
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await
                    }
                    Over::Grpc(None) => serve_grpc(stream, s).await,
                    Over::Grpc(Some(tls)) => {
                        match tokio_rustls::TlsAcceptor::from(tls).accept(stream).await {
                            Ok(stream) => serve_grpc(stream, s).await,
                            Err(_) => return,
                        }
                    }
                };
            });
        }
    });
    Receiver { url, store }
}

/// `TraceService` on one HTTP/2 connection.
async fn serve_grpc<I>(io: I, store: Store) -> hyper::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let grpc = TraceServiceServer::new(store);
    let svc = service_fn(move |req| grpc.clone().call(req));
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await
}

/// A TLS config for a collector at 127.0.0.1 (HTTP/2 by ALPN), and its self-signed certificate's
/// PEM file, for the gateway to trust (`SLUICE_EXTRA_CA`).
fn collector_tls() -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = tmp_dir().join("collector.pem");
    std::fs::write(&pem, ck.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    (Arc::new(cfg), pem)
}

impl Receiver {
    fn spans(&self) -> Vec<Got> {
        self.store.spans.lock().unwrap().clone()
    }

    fn requests(&self) -> Vec<http::HeaderMap> {
        self.store.requests.lock().unwrap().clone()
    }

    /// The server span of trace `trace_id` with its children, once it has `children` of them.
    fn find(&self, trace_id: &str, children: usize) -> Option<(Span, Vec<Span>)> {
        let all: Vec<Span> = self
            .spans()
            .into_iter()
            .map(|g| g.span)
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect();
        let server = all.iter().find(|s| s.kind == 2)?.clone();
        let kids: Vec<Span> = all
            .into_iter()
            .filter(|s| s.parent_span_id == server.span_id)
            .collect();
        (kids.len() >= children).then_some((server, kids))
    }

    /// Wait (≤ 10 s) for [`Receiver::find`].
    async fn trace(&self, trace_id: &str, children: usize) -> (Span, Vec<Span>) {
        poll(Duration::from_secs(10), "the trace is exported", || {
            let found = self.find(trace_id, children);
            async move { found }
        })
        .await
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The value of attribute `key` as text (strings bare, numbers as written, arrays joined by `,`).
fn attr(s: &Span, key: &str) -> Option<String> {
    let v = s.attributes.iter().find(|a| a.key == key)?.value.as_ref()?;
    Some(text(v.value.as_ref()?))
}

fn text(v: &Av) -> String {
    match v {
        Av::StringValue(s) => s.clone(),
        Av::IntValue(i) => i.to_string(),
        Av::DoubleValue(d) => d.to_string(),
        Av::BoolValue(b) => b.to_string(),
        Av::ArrayValue(a) => a
            .values
            .iter()
            .filter_map(|v| v.value.as_ref().map(text))
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    }
}

fn num(s: &Span, key: &str) -> f64 {
    attr(s, key)
        .unwrap_or_else(|| panic!("no `{key}` on span {}: {:?}", s.name, s.attributes))
        .parse()
        .unwrap()
}

/// A fresh client trace context: (trace id, parent span id, `traceparent`).
fn client_trace(n: u8) -> (String, String, String) {
    let trace_id = format!(
        "{:032x}",
        0x0af7651916cd43dd8448eb211c80319cu128 + u128::from(n)
    );
    let span_id = format!("{:016x}", 0xb7ad6b7169203331u64 + u64::from(n));
    let tp = format!("00-{trace_id}-{span_id}-01");
    (trace_id, span_id, tp)
}

fn traced_config(backends: &str, otlp: &str, extra: &str) -> String {
    format!(
        "node: {{ id: traced, log_json: true }}\nbackends:\n{backends}{TENANTS}routing:\n  strategy: round-robin\n  max_attempts: 2\n{extra}observe:\n  access_log: true\n  otlp: {{ {otlp}export_interval_ms: 100 }}\n"
    )
}

/// A simulated upstream `up` (started with `args`) and a gateway (with `envs`) exporting to `rx`,
/// with `otlp` added to its `observe.otlp`: (gateway, upstream).
fn traced_gateway(rx: &Receiver, args: &[&str], otlp: &str, envs: &[(&str, &str)]) -> (Proc, Proc) {
    let up = mock("openai", "up", args);
    let cfg = traced_config(
        &backend("up", &up, "openai", ""),
        &format!("endpoint: \"{}\", {otlp}", rx.url),
        "",
    );
    (gateway_env(&cfg, envs), up)
}

#[tokio::test]
async fn a_request_is_one_server_span_with_genai_attributes_in_the_clients_trace() {
    let rx = receiver().await;
    let (gw, up) = traced_gateway(&rx, &[], "headers: { x-collector-key: c-123 }, ", &[]);
    let (trace_id, parent, tp) = client_trace(1);
    let r = chat(
        &gw,
        "sk-acme",
        hello("m"),
        &[("traceparent", &tp), ("tracestate", "vendor=x")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let request_id = r.header("x-request-id").unwrap().to_string();

    let (server, kids) = rx.trace(&trace_id, 3).await;
    // The client's span is the server span's parent.
    assert_eq!(hex(&server.parent_span_id), parent);
    assert_eq!(server.name, "chat m");
    for (k, v) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.system", "openai"),
        ("gen_ai.request.model", "m"),
        ("gen_ai.response.finish_reasons", "stop"),
        ("sluice.tenant", "acme"),
        ("sluice.backend", "up"),
        ("sluice.limiter_mode", "local"),
        ("sluice.attempts", "1"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(attr(&server, k).as_deref(), Some(v), "{k}: {server:?}");
    }
    for k in ["gen_ai.response.model", "sluice.route", "sluice.priority"] {
        assert!(attr(&server, k).is_some_and(|v| !v.is_empty()), "{k}");
    }
    assert!(num(&server, "gen_ai.usage.input_tokens") > 0.0);
    assert!(num(&server, "gen_ai.usage.output_tokens") > 0.0);
    assert!(num(&server, "sluice.queue_wait_ms") >= 0.0);

    // Children: the rate-limit decision, the queue wait and the attempt.
    let names: Vec<&str> = kids.iter().map(|s| s.name.as_str()).collect();
    for n in ["rate_limit", "queue_wait", "attempt"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let attempt = kids.iter().find(|s| s.name == "attempt").unwrap();
    assert_eq!(attempt.kind, 3, "client span");
    assert_eq!(attr(attempt, "sluice.outcome").as_deref(), Some("ok"));
    assert_eq!(
        attr(attempt, "http.response.status_code").as_deref(),
        Some("200")
    );
    // The upstream saw the attempt span as its parent, and the client's tracestate.
    let seen = request("GET", &format!("{}/_mock/last_trace", up.url()), &[], "")
        .await
        .json();
    assert_eq!(
        seen["traceparent"],
        json!(format!("00-{trace_id}-{}-01", hex(&attempt.span_id)))
    );
    assert_eq!(seen["tracestate"], json!("vendor=x"));

    // Never a prompt, a completion or a key in any span.
    for g in rx.spans() {
        for a in &g.span.attributes {
            let v = a.value.as_ref().and_then(|v| v.value.as_ref()).map(text);
            let v = v.unwrap_or_default();
            assert!(
                !v.contains("hello there") && !v.contains("sk-acme"),
                "{}={v}",
                a.key
            );
        }
    }
    // The configured collector headers are sent with every export.
    assert!(
        rx.requests()
            .iter()
            .all(|h| h.get("x-collector-key").is_some_and(|v| v == "c-123"))
    );

    // The access log: one line with the fields, the trace id, and no key.
    eventually(Duration::from_secs(5), "the access log line", || {
        let logs = gw.logs();
        async move { logs.contains("sluice::access") }
    })
    .await;
    let logs = gw.logs();
    let line: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "sluice::access" && l["fields"]["request_id"] == json!(request_id))
        .unwrap_or_else(|| panic!("no access line for {request_id}: {logs}"));
    let f = &line["fields"];
    assert_eq!(line["level"], "INFO");
    assert_eq!(f["tenant"], "acme");
    assert_eq!(f["backend"], "up");
    assert_eq!(f["model"], "m");
    assert_eq!(f["status"], 200);
    assert_eq!(f["attempts"], 1);
    assert_eq!(f["trace_id"], json!(trace_id));
    assert!(f["route"].as_str().is_some_and(|r| !r.is_empty()), "{line}");
    for k in ["total_ms", "queue_wait_ms"] {
        assert!(f[k].as_f64().is_some_and(|v| v >= 0.0), "{k}: {line}");
    }
    for k in ["input_tokens", "output_tokens"] {
        assert!(f[k].as_u64().is_some_and(|v| v > 0), "{k}: {line}");
    }
    assert!(
        !logs.contains("sk-acme") && !logs.contains("hello there"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_failed_over_request_shows_two_attempt_spans() {
    let rx = receiver().await;
    let good = mock("openai", "good", &[]);
    let broken = mock("openai", "broken", &[]);
    mock_control(&broken, json!({"error_rate": 1.0})).await;
    let cfg = traced_config(
        &format!(
            "{}{}",
            backend("broken", &broken, "openai", ", eject_after: 100"),
            backend("good", &good, "openai", "")
        ),
        &format!("endpoint: \"{}/v1/traces\", ", rx.url),
        "",
    );
    let gw = gateway(&cfg);
    // Round robin: one of the first two requests goes to `broken` first and fails over.
    let mut failed_over = None;
    for n in 10..14 {
        let (trace_id, _, tp) = client_trace(n);
        let r = chat(&gw, "sk-acme", hello("m"), &[("traceparent", &tp)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let (server, kids) = rx.trace(&trace_id, 3).await;
        if attr(&server, "sluice.attempts").as_deref() == Some("2") {
            failed_over = Some((server, kids));
            break;
        }
    }
    let (server, kids) = failed_over.expect("a request failed over");
    let mut attempts: Vec<&Span> = kids.iter().filter(|s| s.name == "attempt").collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "{kids:?}");
    assert_eq!(
        attr(attempts[0], "sluice.backend").as_deref(),
        Some("broken")
    );
    assert_eq!(
        attr(attempts[0], "sluice.outcome").as_deref(),
        Some("failed")
    );
    assert_eq!(
        attr(attempts[0], "sluice.failover_reason").as_deref(),
        Some("5xx")
    );
    assert!(attr(attempts[0], "http.response.status_code").is_some_and(|s| s.starts_with('5')));
    assert_eq!(attr(attempts[1], "sluice.backend").as_deref(), Some("good"));
    assert_eq!(attr(attempts[1], "sluice.outcome").as_deref(), Some("ok"));
    assert_eq!(attr(&server, "sluice.backend").as_deref(), Some("good"));
    // Each attempt waited in the queue for its slot.
    assert_eq!(kids.iter().filter(|s| s.name == "queue_wait").count(), 2);
}

#[tokio::test]
async fn an_unsampled_request_records_nothing_and_a_sampled_client_trace_is_followed() {
    let rx = receiver().await;
    // New traces never sampled; a client's sampled traceparent is followed (parent-based).
    let (gw, _up) = traced_gateway(&rx, &[], "sample_ratio: 0.0, ", &[]);
    for _ in 0..20 {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.status, 200);
    }
    let (trace_id, _, tp) = client_trace(40);
    let r = chat(&gw, "sk-acme", hello("m"), &[("traceparent", &tp)]).await;
    assert_eq!(r.status, 200);
    let (server, _) = rx.trace(&trace_id, 3).await;
    assert_eq!(attr(&server, "sluice.tenant").as_deref(), Some("acme"));
    // Every exported span is of the client's trace: the 20 others made none.
    let spans = rx.spans();
    assert!(
        spans.iter().all(|g| hex(&g.span.trace_id) == trace_id),
        "{spans:?}"
    );
}

#[tokio::test]
async fn a_streamed_request_span_ends_with_the_stream_and_has_its_usage() {
    let rx = receiver().await;
    let (gw, _up) = traced_gateway(&rx, &["--ttft-ms", "30"], "", &[]);
    let (trace_id, _, tp) = client_trace(20);
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hello there"}]});
    let r = chat(&gw, "sk-acme", body, &[("traceparent", &tp)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("[DONE]"));
    let (server, kids) = rx.trace(&trace_id, 3).await;
    assert!(
        num(&server, "gen_ai.usage.input_tokens") > 0.0,
        "{server:?}"
    );
    assert!(num(&server, "gen_ai.usage.output_tokens") > 0.0);
    assert!(num(&server, "sluice.ttft_ms") >= 30.0);
    assert_eq!(
        attr(&server, "sluice.stream_end").as_deref(),
        Some("complete")
    );
    assert_eq!(
        attr(&server, "gen_ai.response.finish_reasons").as_deref(),
        Some("stop")
    );
    // The model the stream's chunks name (the simulated upstream echoes the one asked for).
    assert_eq!(
        attr(&server, "gen_ai.response.model").as_deref(),
        Some("m"),
        "{server:?}"
    );
    // The span lasted past the first token: it ended with the stream.
    let lasted_ms = (server.end_time_unix_nano - server.start_time_unix_nano) as f64 / 1e6;
    assert!(lasted_ms >= num(&server, "sluice.ttft_ms"), "{lasted_ms}");
    let attempt = kids.iter().find(|s| s.name == "attempt").unwrap();
    assert!(attempt.end_time_unix_nano <= server.end_time_unix_nano);
}

#[tokio::test]
async fn with_traces_off_nothing_is_exported_and_the_environment_turns_them_on() {
    let rx = receiver().await;
    let up = mock("openai", "up", &[]);
    let backends = backend("up", &up, "openai", "");
    // Off: no `observe:`; the environment names the collector but disables the SDK.
    let off = gateway_env(
        &format!("node: {{ id: off }}\nbackends:\n{backends}{TENANTS}routing: {{}}\n"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    );
    // On by the environment alone, every trace sampled.
    let on = gateway_env(
        &format!("node: {{ id: env }}\nbackends:\n{backends}{TENANTS}routing: {{}}\n"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url.as_str()),
            ("OTEL_TRACES_SAMPLER_ARG", "1.0"),
        ],
    );
    let (off_trace, _, off_tp) = client_trace(30);
    for _ in 0..5 {
        let r = chat(&off, "sk-acme", hello("m"), &[("traceparent", &off_tp)]).await;
        assert_eq!(r.status, 200);
    }
    let (on_trace, _, on_tp) = client_trace(31);
    let r = chat(&on, "sk-acme", hello("m"), &[("traceparent", &on_tp)]).await;
    assert_eq!(r.status, 200);
    // The traced node's spans arrive (its export interval is the default second) ...
    let (server, _) = rx.trace(&on_trace, 3).await;
    assert_eq!(attr(&server, "sluice.tenant").as_deref(), Some("acme"));
    // ... and none of the untraced node's, which exported nothing at all.
    let spans = rx.spans();
    assert!(spans.iter().all(|g| hex(&g.span.trace_id) != off_trace));
    assert!(spans.iter().all(|g| g.node.contains("env")), "{spans:?}");
    let m = metrics_text(&off).await;
    assert!(!m.contains("sluice_trace_spans_exported_total"), "{m}");
    assert!(!off.logs().contains("sluice::access"));
    let m = metrics_text(&on).await;
    assert!(
        metric(&m, "sluice_trace_spans_exported_total", &[]).is_some_and(|n| n >= 3.0),
        "{m}"
    );
}

#[tokio::test]
async fn over_grpc_the_span_reaches_a_grpc_collector_with_the_headers_as_metadata() {
    let rx = receiver_over(Over::Grpc(None)).await;
    // The collector's base URL, as it is: nothing is appended for gRPC.
    let (gw, _up) = traced_gateway(
        &rx,
        &[],
        "protocol: grpc, headers: { x-collector-key: c-456 }, ",
        &[],
    );
    let (trace_id, parent, tp) = client_trace(40);
    let r = chat(&gw, "sk-acme", hello("m"), &[("traceparent", &tp)]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let (server, kids) = rx.trace(&trace_id, 3).await;
    assert_eq!(hex(&server.parent_span_id), parent);
    for (k, v) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "m"),
        ("sluice.tenant", "acme"),
        ("sluice.backend", "up"),
    ] {
        assert_eq!(attr(&server, k).as_deref(), Some(v), "{k}: {server:?}");
    }
    assert!(attr(&server, "gen_ai.response.model").is_some_and(|v| !v.is_empty()));
    assert!(num(&server, "gen_ai.usage.input_tokens") > 0.0);
    assert!(num(&server, "gen_ai.usage.output_tokens") > 0.0);
    assert!(kids.iter().any(|s| s.name == "attempt"), "{kids:?}");
    // Every `TraceService/Export` call carried the configured header as gRPC metadata.
    let requests = rx.requests();
    assert!(!requests.is_empty());
    for h in &requests {
        assert_eq!(
            h.get("x-collector-key").and_then(|v| v.to_str().ok()),
            Some("c-456"),
            "{h:?}"
        );
    }
    // Counted once the collector has answered.
    eventually(Duration::from_secs(5), "the spans are counted", || async {
        let m = metrics_text(&gw).await;
        metric(&m, "sluice_trace_spans_exported_total", &[]).is_some_and(|n| n >= 4.0)
    })
    .await;
}

#[tokio::test]
async fn an_https_grpc_collector_is_reached_with_the_upstreams_trust() {
    let (tls, pem) = collector_tls();
    let rx = receiver_over(Over::Grpc(Some(tls))).await;
    assert!(rx.url.starts_with("https://"));
    let (gw, _up) = traced_gateway(
        &rx,
        &[],
        "protocol: grpc, ",
        &[("SLUICE_EXTRA_CA", pem.to_str().unwrap())],
    );
    let (trace_id, parent, tp) = client_trace(41);
    let r = chat(&gw, "sk-acme", hello("m"), &[("traceparent", &tp)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (server, _) = rx.trace(&trace_id, 3).await;
    assert_eq!(hex(&server.parent_span_id), parent);
    assert_eq!(attr(&server, "gen_ai.request.model").as_deref(), Some("m"));
}

#[tokio::test]
async fn a_stalled_collector_drops_and_counts_spans_and_never_holds_a_request() {
    // A collector that accepts connections and never answers: every export waits out its timeout.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", stalled.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = stalled.accept().await {
            conns.push(c);
        }
    });
    let up = mock("openai", "up", &[]);
    let cfg = traced_config(
        &backend("up", &up, "openai", ""),
        &format!(
            "endpoint: \"{url}\", max_queue_spans: 4, max_batch_spans: 4, export_timeout_ms: 30000, "
        ),
        "",
    );
    let gw = gateway(&cfg);
    for _ in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            chat(&gw, "sk-acme", hello("m"), &[]),
        )
        .await
        .expect("a request waited on the trace export");
        assert_eq!(r.status, 200);
    }
    // 20 requests × 4 spans, one batch of 4 stuck in export and at most 4 queued: the rest dropped.
    eventually(
        Duration::from_secs(5),
        "dropped spans are counted",
        || async {
            let m = metrics_text(&gw).await;
            metric(
                &m,
                "sluice_trace_spans_dropped_total",
                &[("reason", "queue_full")],
            )
            .is_some_and(|n| n >= 60.0)
        },
    )
    .await;
    held.abort();
}
