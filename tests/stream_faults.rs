//! Stream integrity through every protocol pair: an upstream stream that is cut short, malformed,
//! endless, stalled, dropped or not SSE at all reaches the client as an error event in the client's
//! own dialect followed by an aborted body, never as a clean end (HTTP/1.1 and HTTP/2); a healthy
//! stream still ends cleanly. An upstream that never answers is a prompt 504 in the caller's shape;
//! one whose error echoes the injected key never shows the key. The gateway's RSS stays bounded
//! under endless lines, slow request bodies and large upstream bodies.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use support::*;

/// What the client saw of one streamed answer.
struct Seen {
    status: u16,
    text: String,
    /// The body ended with an error instead of its clean end.
    aborted: bool,
}

/// A POST of `body` to `path` on the gateway, with the test tenant's key in both dialects.
fn post(gw: &Proc, path: &str, body: &serde_json::Value) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{}{path}", gw.url()))
        .header("authorization", "Bearer sk-acme")
        .header("x-api-key", "sk-acme")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn stream(gw: &Proc, path: &str, body: serde_json::Value) -> Seen {
    let req = post(gw, path, &body);
    let read = async {
        let resp = client().request(req).await.expect("request");
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut text = Vec::new();
        let mut aborted = false;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        text.extend_from_slice(&d);
                    }
                }
                Err(_) => {
                    aborted = true;
                    break;
                }
            }
        }
        Seen {
            status,
            text: String::from_utf8_lossy(&text).into_owned(),
            aborted,
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("stream did not end within 20 s")
}

/// How much `sluice_stream_faults_total` of `kind` grew between two scrapes.
fn faults_grew(before: &str, after: &str, kind: &str) -> f64 {
    grew(
        before,
        after,
        "sluice_stream_faults_total",
        &[("kind", kind)],
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    OpenAi,
    Anthropic,
    Responses,
}

fn request(client: Client, model: &str) -> (&'static str, serde_json::Value) {
    let messages = serde_json::json!([{"role": "user", "content": "hello there"}]);
    match client {
        Client::OpenAi => (
            "/v1/chat/completions",
            serde_json::json!({"model": model, "stream": true, "messages": messages}),
        ),
        Client::Anthropic => (
            "/v1/messages",
            serde_json::json!({"model": model, "stream": true, "max_tokens": 64, "messages": messages}),
        ),
        Client::Responses => (
            "/v1/responses",
            serde_json::json!({"model": model, "stream": true, "input": "hello there"}),
        ),
    }
}

#[tokio::test]
async fn every_fault_through_every_protocol_pair_is_an_error_the_client_cannot_miss() {
    let oa = mock("openai", "oa", &["--output-tokens", "12"]);
    let an = mock("anthropic", "an", &["--output-tokens", "12"]);
    let tolerant = ", eject_after: 100000, timeouts: { idle_ms: 400 }";
    let cfg = format!(
        "backends:\n{}{}{}{TENANTS}routing:\n  rules:\n    - {{ name: to-openai, match: {{ model: oa }}, route: {{ backend: oa }} }}\n    - {{ name: to-anthropic, match: {{ model: an }}, route: {{ backend: an }} }}\n    - {{ name: to-responses, match: {{ model: or }}, route: {{ backend: or }} }}\nbounds: {{ sse_max_line_bytes: 65536, sse_max_event_bytes: 65536 }}\n",
        backend("oa", &oa, "openai", tolerant),
        backend("an", &an, "anthropic", tolerant),
        backend(
            "or",
            &oa,
            "openai",
            &format!(", apis: [responses]{tolerant}")
        ),
    );
    let gw = gateway(&cfg);
    // Responses clients: passed through (or), translated to chat (oa) and to anthropic (an).
    let pairs = [
        (Client::OpenAi, "oa"),
        (Client::Anthropic, "an"),
        (Client::OpenAi, "an"),
        (Client::Anthropic, "oa"),
        (Client::Responses, "or"),
        (Client::Responses, "oa"),
        (Client::Responses, "an"),
    ];
    let faults = [
        ("truncate", "truncated"),
        ("malformed", "malformed"),
        ("no_newline", "too_large"),
        ("endless_event", "too_large"),
        ("stall", "idle"),
        ("close_mid_body", "truncated"),
        ("garbage", "malformed"),
    ];
    for (fault, kind) in faults {
        for m in [&oa, &an] {
            mock_control(m, serde_json::json!({"stream_fault": fault})).await;
        }
        for (client, model) in pairs {
            let before = metrics_text(&gw).await;
            let (path, body) = request(client, model);
            let seen = stream(&gw, path, body).await;
            let what = format!("{fault} via {client:?} client, {model} upstream");
            assert_eq!(seen.status, 200, "{what}: {}", seen.text);
            assert!(
                seen.aborted,
                "{what}: the body ended cleanly: {}",
                seen.text
            );
            match client {
                Client::OpenAi => {
                    assert!(
                        seen.text.contains("data: {\"error\":"),
                        "{what}: no OpenAI error event: {}",
                        seen.text
                    );
                    assert!(!seen.text.contains("[DONE]"), "{what}: {}", seen.text);
                }
                Client::Anthropic => {
                    assert!(
                        seen.text.contains("event: error"),
                        "{what}: no Anthropic error event: {}",
                        seen.text
                    );
                    assert!(!seen.text.contains("message_stop"), "{what}: {}", seen.text);
                }
                Client::Responses => {
                    assert!(
                        seen.text.contains("event: error\ndata: {"),
                        "{what}: no Responses error event: {}",
                        seen.text
                    );
                    assert!(
                        !seen.text.contains("response.completed"),
                        "{what}: {}",
                        seen.text
                    );
                }
            }
            let after = metrics_text(&gw).await;
            assert_eq!(
                faults_grew(&before, &after, kind),
                1.0,
                "{what}: counted as {kind}"
            );
        }
    }
    // The same routes without a fault end cleanly, with their completion markers.
    for m in [&oa, &an] {
        mock_control(m, serde_json::json!({"stream_fault": "none"})).await;
    }
    for (client, model) in pairs {
        let (path, body) = request(client, model);
        let seen = stream(&gw, path, body).await;
        assert!(!seen.aborted, "{client:?}/{model}: {}", seen.text);
        let marker = match client {
            Client::OpenAi => "data: [DONE]",
            Client::Anthropic => "event: message_stop",
            Client::Responses => "event: response.completed",
        };
        assert!(
            seen.text.contains(marker),
            "{client:?}/{model}: {}",
            seen.text
        );
    }
}

/// A stream that never goes quiet for the idle timeout is still held to the backend's total timeout:
/// cut with an error event in the client's dialect, counted as `total_timeout`.
#[tokio::test]
async fn a_stream_that_keeps_flowing_is_cut_at_the_total_timeout() {
    // 100 tokens/s for 10,000 tokens: 100 s of chunks 10 ms apart, never idle.
    let oa = mock(
        "openai",
        "oa",
        &["--output-tokens", "10000", "--tokens-per-sec", "100"],
    );
    let cfg = format!(
        "backends:\n{}{TENANTS}routing: {{}}\n",
        backend(
            "oa",
            &oa,
            "openai",
            ", eject_after: 100000, timeouts: { idle_ms: 5000, total_ms: 1500 }"
        ),
    );
    // `stream` gives up after 20 s: without the cut, the answer would run for 100 s.
    let (seen, grew) = cut_stream(&cfg, "oa", "total_timeout").await;
    assert!(
        seen.text.matches("chat.completion.chunk").count() > 20,
        "chunks flowed before the cut: {}",
        seen.text
    );
    assert_eq!(grew, 1.0);
}

/// One OpenAI stream for `model` through a gateway on `cfg`, which must be a 200 whose body went
/// on, then ended with an error event and an abort, never `[DONE]`: what the client saw, and by
/// how much the stream faults of `kind` grew.
async fn cut_stream(cfg: &str, model: &str, kind: &str) -> (Seen, f64) {
    let gw = gateway(cfg);
    let before = metrics_text(&gw).await;
    let (path, body) = request(Client::OpenAi, model);
    let seen = stream(&gw, path, body).await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert!(seen.aborted, "the body ended cleanly: {}", seen.text);
    assert!(seen.text.contains("data: {\"error\":"), "{}", seen.text);
    assert!(!seen.text.contains("[DONE]"), "{}", seen.text);
    let after = metrics_text(&gw).await;
    (seen, faults_grew(&before, &after, kind))
}

/// A stream whose chunks flowed past several idle timeouts and then stall is cut by the idle timeout
/// counted from its last chunk (the timer, set when the stream began, is moved on as it fires rather
/// than per chunk), not left to the total timeout.
#[tokio::test]
async fn a_stream_that_stalls_after_flowing_past_the_idle_timeout_is_cut_as_idle() {
    const CHUNK: &str = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
    // 40 chunks 30 ms apart: 1.2 s of flow, four times the idle timeout, then nothing.
    const FLOW: &[&str] = &[CHUNK; 40];
    let url = scripted_upstream_then(FLOW, true).await;
    let cfg = format!(
        "backends:\n  - {{ name: raw, url: \"{url}\", protocol: openai, eject_after: 100000, timeouts: {{ idle_ms: 300, total_ms: 15000 }} }}\n{TENANTS}routing: {{}}\n"
    );
    let (seen, grew) = cut_stream(&cfg, "m", "idle").await;
    assert_eq!(
        seen.text.matches("\"content\":\"Hi\"").count(),
        40,
        "every chunk before the stall: {}",
        seen.text
    );
    assert_eq!(grew, 1.0, "cut as idle, not left to the total timeout");
}

/// The four protocol pairs, by client dialect and the model routed to each upstream.
const PAIRS: [(Client, &str); 4] = [
    (Client::OpenAi, "oa"),
    (Client::Anthropic, "an"),
    (Client::OpenAi, "an"),
    (Client::Anthropic, "oa"),
];

/// Two upstreams (`oa` OpenAI, `an` Anthropic) started with `flags`, and a gateway routing model
/// `oa` and `an` to them, each backend with `extra` config and the key from `SLUICE_FAULT_KEY`.
fn two_upstreams(
    flags: &[&str],
    extra: &str,
    envs: &[(&str, &str)],
    tail: &str,
) -> (Proc, Proc, Proc) {
    let oa = mock("openai", "oa", flags);
    let an = mock("anthropic", "an", flags);
    let extra = format!(", eject_after: 100000{extra}");
    let cfg = format!(
        "backends:\n{}{}{TENANTS}routing:\n  rules:\n    - {{ name: to-openai, match: {{ model: oa }}, route: {{ backend: oa }} }}\n    - {{ name: to-anthropic, match: {{ model: an }}, route: {{ backend: an }} }}\n{tail}",
        backend("oa", &oa, "openai", &extra),
        backend("an", &an, "anthropic", &extra),
    );
    (oa, an, gateway_env(&cfg, envs))
}

/// One request of `client`'s dialect for `model`, streamed or not, with the time it took.
async fn call(gw: &Proc, client: Client, model: &str, streamed: bool) -> (Resp, Duration) {
    let (path, mut body) = request(client, model);
    body["stream"] = streamed.into();
    let headers = [
        ("authorization", "Bearer sk-acme"),
        ("x-api-key", "sk-acme"),
        ("content-type", "application/json"),
    ];
    let started = std::time::Instant::now();
    let r = support::request(
        "POST",
        &format!("{}{path}", gw.url()),
        &headers,
        body.to_string(),
    )
    .await;
    (r, started.elapsed())
}

/// The error `type` of an error body in `client`'s dialect (panics on any other shape).
fn error_type(client: Client, r: &Resp) -> String {
    let v = r.json();
    if client == Client::Anthropic {
        assert_eq!(v["type"], "error", "not an Anthropic error: {}", r.text());
    }
    v["error"]["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.type: {}", r.text()))
        .to_owned()
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_prompt_504_in_the_callers_shape() {
    let (_oa, _an, gw) = two_upstreams(
        &["--stream-fault", "blackhole"],
        ", timeouts: { first_byte_ms: 400 }",
        &[],
        "",
    );
    for (client, model) in PAIRS {
        for streamed in [true, false] {
            let what = format!("{client:?} client, {model} upstream, streamed: {streamed}");
            let (r, took) = call(&gw, client, model, streamed).await;
            assert_eq!(r.status, 504, "{what}: {}", r.text());
            let kind = error_type(client, &r);
            let want = match client {
                Client::OpenAi | Client::Responses => "server_error",
                Client::Anthropic => "overloaded_error",
            };
            assert_eq!(kind, want, "{what}: {}", r.text());
            if client == Client::OpenAi {
                assert_eq!(r.json()["error"]["code"], "upstream_timeout", "{what}");
            }
            // Two attempts at most (routing.max_attempts), each bounded by first_byte_ms.
            assert!(took < Duration::from_secs(3), "{what}: took {took:?}");
        }
    }
}

#[tokio::test]
async fn an_upstream_error_that_echoes_the_injected_key_never_shows_it() {
    const SECRET: &str = "sk-injected-9f3a51c2d7e8";
    let (_oa, _an, gw) = two_upstreams(
        &["--stream-fault", "echo_key"],
        ", api_key_env: SLUICE_FAULT_KEY",
        &[("SLUICE_FAULT_KEY", SECRET)],
        "",
    );
    for (client, model) in PAIRS {
        for streamed in [true, false] {
            let what = format!("{client:?} client, {model} upstream, streamed: {streamed}");
            let (r, _) = call(&gw, client, model, streamed).await;
            let mut whole = format!("{:?}", r.headers);
            whole.push_str(&r.text());
            assert!(!whole.contains(SECRET), "{what}: the key leaked: {whole}");
            assert!(
                !whole.contains("9f3a51c2"),
                "{what}: part of the key leaked: {whole}"
            );
            // The upstream's 400 keeps its status and its class in the caller's dialect.
            assert_eq!(r.status, 400, "{what}: {}", r.text());
            assert_eq!(
                error_type(client, &r),
                "invalid_request_error",
                "{what}: {}",
                r.text()
            );
        }
    }
}

#[tokio::test]
async fn a_mid_stream_error_event_that_echoes_the_injected_key_never_shows_it() {
    const SECRET: &str = "sk-injected-5be07d41c9a2";
    let (_oa, _an, gw) = two_upstreams(
        &["--stream-fault", "echo_key_event"],
        ", api_key_env: SLUICE_FAULT_KEY",
        &[("SLUICE_FAULT_KEY", SECRET)],
        "",
    );
    for (client, model) in PAIRS {
        let what = format!("{client:?} client, {model} upstream");
        let (path, body) = request(client, model);
        let seen = stream(&gw, path, body).await;
        assert_eq!(seen.status, 200, "{what}: {}", seen.text);
        assert!(
            !seen.text.contains(SECRET),
            "{what}: the key leaked: {}",
            seen.text
        );
        assert!(!seen.text.contains("5be07d41"), "{what}: {}", seen.text);
        // The upstream's error reached the client as an error, and the body did not end cleanly.
        assert!(seen.text.contains("error"), "{what}: {}", seen.text);
        assert!(
            seen.aborted,
            "{what}: the body ended cleanly: {}",
            seen.text
        );
    }
}

#[tokio::test]
async fn a_whole_answer_that_is_not_json_is_a_502_never_a_200() {
    let (_oa, _an, gw) = two_upstreams(&["--stream-fault", "garbage"], "", &[], "");
    for (client, model) in PAIRS {
        let what = format!("{client:?} client, {model} upstream");
        let (r, _) = call(&gw, client, model, false).await;
        assert_eq!(r.status, 502, "{what}: {}", r.text());
        assert!(!error_type(client, &r).is_empty(), "{what}");
        assert!(r.text().contains("invalid json"), "{what}: {}", r.text());
    }
}

/// A `/proc/PID/status` figure of a process (`VmHWM`: peak resident; `VmRSS`: resident now), in KiB.
fn status_kib(p: &Proc, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(p: &Proc) -> u64 {
    status_kib(p, "VmHWM")
}

#[tokio::test]
async fn an_upstream_that_never_ends_a_line_cannot_grow_the_gateway() {
    // Without a bound each of these streams grows a line buffer for as long as the upstream sends
    // (hundreds of MiB/s); with the default 1 MiB bound each stops at about 1 MiB.
    let m = mock("openai", "endless", &["--stream-fault", "no_newline"]);
    let gw = gateway(&format!(
        "backends:\n{}{TENANTS}routing: {{}}\n",
        backend("endless", &m, "openai", ", eject_after: 100000")
    ));
    let (path, body) = request(Client::OpenAi, "m");
    // Warm up once, then take the baseline peak.
    assert!(stream(&gw, path, body.clone()).await.aborted);
    let base = peak_rss_kib(&gw);
    let streams: Vec<_> = (0..20)
        .map(|_| {
            let body = body.clone();
            let gw_url = gw.url();
            tokio::spawn(async move {
                let req = http::Request::post(format!("{gw_url}{path}"))
                    .header("authorization", "Bearer sk-acme")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap();
                let resp = client().request(req).await.unwrap();
                let mut b = resp.into_body();
                let mut aborted = false;
                while let Some(f) = b.frame().await {
                    if f.is_err() {
                        aborted = true;
                        break;
                    }
                }
                aborted
            })
        })
        .collect();
    for s in streams {
        let aborted = tokio::time::timeout(Duration::from_secs(20), s)
            .await
            .expect("every endless stream is cut within 20 s")
            .unwrap();
        assert!(aborted);
    }
    let grown_mib = (peak_rss_kib(&gw).saturating_sub(base)) / 1024;
    // 20 streams × (1 MiB line bound + frames in flight), with room for the allocator.
    assert!(grown_mib < 20 * 4, "peak RSS grew by {grown_mib} MiB");
    println!("20 endless lines: peak RSS +{grown_mib} MiB");
}

#[tokio::test]
async fn over_http2_a_truncated_stream_ends_with_an_error_event_and_a_reset() {
    let (_oa, _an, gw) = two_upstreams(&["--stream-fault", "truncate"], "", &[], "");
    for (client, model) in PAIRS {
        let what = format!("h2, {client:?} client, {model} upstream");
        let tcp = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("h2c handshake (prior knowledge)");
        tokio::spawn(conn);
        let (path, body) = request(client, model);
        let req = post(&gw, path, &body);
        let read = async {
            let resp = send.send_request(req).await.expect("h2 request");
            assert_eq!(resp.version(), http::Version::HTTP_2, "{what}");
            assert_eq!(resp.status(), 200, "{what}");
            let mut body = resp.into_body();
            let mut text = Vec::new();
            loop {
                match body.frame().await {
                    Some(Ok(f)) => text.extend_from_slice(&f.into_data().unwrap_or_default()),
                    Some(Err(e)) => break (String::from_utf8_lossy(&text).into_owned(), Some(e)),
                    None => break (String::from_utf8_lossy(&text).into_owned(), None),
                }
            }
        };
        let (text, err) = tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("h2 stream did not end within 20 s");
        let err = err.unwrap_or_else(|| panic!("{what}: clean end of stream: {text}"));
        // The stream was reset (RST_STREAM from the gateway), the connection kept.
        let detail = format!("{err:?}");
        assert!(
            detail.contains("Reset("),
            "{what}: not a stream reset: {detail}"
        );
        assert!(
            !send.is_closed(),
            "{what}: the connection went down with the stream"
        );
        let marker = match client {
            Client::OpenAi => "data: {\"error\":",
            Client::Anthropic | Client::Responses => "event: error",
        };
        assert!(
            text.contains(marker),
            "{what}: no error event before the reset: {text}"
        );
    }
}

/// What one slow-body client saw: the status the gateway answered and when, after its head.
struct SlowBody {
    status: u16,
    after: Duration,
}

/// A client that sends a request head declaring `declared` body bytes, then `bulk` bytes at once,
/// then one byte every `gap` (or nothing more when `gap` is None) until the gateway answers.
async fn slow_body(addr: String, declared: usize, bulk: usize, gap: Option<Duration>) -> SlowBody {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer sk-acme\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let sent = std::time::Instant::now();
    // Writes fail once the gateway has answered and closed: the reader tells what it said.
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let mut left = bulk;
        while left > 0 {
            let n = left.min(chunk.len());
            if wr.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
        let Some(gap) = gap else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(gap).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 12];
    rd.read_exact(&mut buf).await.expect("a status line");
    let after = sent.elapsed();
    writer.abort();
    let status = std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap();
    SlowBody { status, after }
}

#[tokio::test]
async fn a_hundred_slow_body_clients_are_cut_off_and_refused_within_the_body_budget() {
    const MAX_BODY: usize = 2 << 20;
    const BUDGET: usize = 32 << 20;
    const CLIENTS: usize = 100;
    let m = mock("openai", "m", &[]);
    let gw = gateway(&format!(
        "listen: {{ max_body_bytes: {MAX_BODY} }}\nbackends:\n{}{TENANTS}routing: {{}}\nbounds: {{ max_pending_body_bytes: {BUDGET}, body_idle_timeout_ms: 1000, body_timeout_ms: 2500 }}\n",
        backend("m", &m, "openai", "")
    ));
    // Warm up (a whole request), then take the baseline.
    assert_eq!(chat(&gw, "sk-acme", hello("m"), &[]).await.status, 200);
    let base_peak = peak_rss_kib(&gw);
    let declared = MAX_BODY - 1024;
    // Nine tenths of the body at once, then a byte every 300 ms (cut by the total timeout) or
    // nothing more (cut by the idle timeout).
    let bulk = declared * 9 / 10;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let gap = (i % 2 == 0).then_some(Duration::from_millis(300));
            tokio::spawn(slow_body(gw.addr.clone(), declared, bulk, gap))
        })
        .collect();
    let mut seen = Vec::new();
    for c in clients {
        let s = tokio::time::timeout(Duration::from_secs(20), c)
            .await
            .expect("every slow client is answered within 20 s")
            .unwrap();
        seen.push(s);
    }
    let peak_mib = peak_rss_kib(&gw).saturating_sub(base_peak) / 1024;
    let admitted = BUDGET / declared;
    let (cut, refused): (Vec<_>, Vec<_>) = seen.iter().partition(|s| s.status == 408);
    assert!(
        refused.iter().all(|s| s.status == 503),
        "only 408 and 503: {:?}",
        seen.iter().map(|s| s.status).collect::<Vec<_>>()
    );
    // All arrive at once: about the budget's worth are read (and cut), the rest refused at once.
    assert!(
        !cut.is_empty() && cut.len() <= 2 * admitted,
        "{} cut off, {} refused",
        cut.len(),
        refused.len()
    );
    for s in &refused {
        assert!(s.after < Duration::from_secs(1), "503 after {:?}", s.after);
    }
    for s in &cut {
        assert!(
            s.after < Duration::from_millis(2500 + 1500),
            "408 after {:?}",
            s.after
        );
    }
    // Documented bound: the pending-body budget, plus per-connection buffers and allocator slack.
    let bound_mib = (BUDGET >> 20) as u64 + 32;
    assert!(
        peak_mib <= bound_mib,
        "peak RSS grew by {peak_mib} MiB (bound {bound_mib})"
    );
    // The gateway still answers, and gives memory back (or at least never grew past the bound).
    assert_eq!(chat(&gw, "sk-acme", hello("m"), &[]).await.status, 200);
    let now_mib = status_kib(&gw, "VmRSS").saturating_sub(base_peak) / 1024;
    println!(
        "{CLIENTS} slow bodies: {} cut off, {} refused, peak RSS +{peak_mib} MiB, afterwards +{now_mib} MiB",
        cut.len(),
        refused.len()
    );
}

/// Peak RSS growth (MiB) of a fresh gateway answering `n` concurrent non-streamed requests from an
/// OpenAI client routed to `model` (`oa`: same protocol, `an`: translated), each answered with an
/// upstream body of about `body` bytes, as large as `bounds.max_upstream_body_bytes` allows.
async fn peak_growth_for_large_bodies(model: &str, n: usize, body: usize) -> u64 {
    let limit = body + (1 << 20);
    let (oa, an, gw) = two_upstreams(
        &[],
        "",
        &[],
        &format!("bounds: {{ max_upstream_body_bytes: {limit} }}\n"),
    );
    // Warm up with small answers, then take the baseline and make the answers large.
    assert_eq!(chat(&gw, "sk-acme", hello(model), &[]).await.status, 200);
    let base = peak_rss_kib(&gw);
    for m in [&oa, &an] {
        mock_control(m, serde_json::json!({"body_bytes": body})).await;
    }
    let url = gw.url();
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            let model = model.to_owned();
            tokio::spawn(async move { chat_at(&url, "sk-acme", hello(&model), &[]).await })
        })
        .collect();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(
            r.status,
            200,
            "{}",
            String::from_utf8_lossy(&r.body[..r.body.len().min(500)])
        );
        let text = r.json()["choices"][0]["message"]["content"]
            .as_str()
            .map_or(0, str::len);
        assert!(text >= body - 1024, "answer text of {text} bytes");
    }
    peak_rss_kib(&gw).saturating_sub(base) / 1024
}

#[tokio::test]
async fn five_maximum_size_upstream_bodies_cost_about_their_size() {
    const BODY: usize = 16 << 20;
    const N: usize = 5;
    let bound = ((N * BODY * 3 / 2) >> 20) as u64 + 32;
    let same = peak_growth_for_large_bodies("oa", N, BODY).await;
    let translated = peak_growth_for_large_bodies("an", N, BODY).await;
    println!(
        "{N} × {} MiB upstream bodies: peak RSS +{same} MiB same protocol, +{translated} MiB translated (bound {bound} MiB)",
        BODY >> 20
    );
    assert!(same <= bound, "same protocol: +{same} MiB, bound {bound}");
    assert!(
        translated <= bound,
        "translated: +{translated} MiB, bound {bound}"
    );
}

/// An upstream on a raw socket that answers one streamed request with `pieces`, each its own
/// HTTP chunk written apart from the next (as a provider's proxy may cut an event anywhere).
async fn scripted_upstream(pieces: &'static [&'static str]) -> String {
    scripted_upstream_then(pieces, false).await
}

/// As [`scripted_upstream`]; `stall`: after the pieces, neither end the body nor close, until the
/// gateway goes away.
async fn scripted_upstream_then(pieces: &'static [&'static str], stall: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request: its head and a small body; what it says does not matter here.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&seen).contains("\"messages\"") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for p in pieces {
                    let chunk = format!("{:x}\r\n{p}\r\n", p.len());
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    // Apart from the next piece, so the gateway reads them one by one.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                if stall {
                    // Until the gateway closes its end.
                    while !matches!(sock.read(&mut buf).await, Ok(0) | Err(_)) {}
                    return;
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    url
}

/// The usage-only chunk Sluice asked for (the client did not) is dropped even when the upstream
/// cuts it across reads, and no byte of it reaches the client, while the chunks around it go on as
/// they came; its tokens are still counted.
#[tokio::test]
async fn a_usage_only_chunk_cut_across_reads_is_dropped_whole() {
    const PIECES: &[&str] = &[
        "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\ndata: {\"id\":\"c\",\"choices\":[],\"us",
        "age\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n",
        "\ndata: [DO",
        "NE]\n\n",
    ];
    let url = scripted_upstream(PIECES).await;
    let cfg = format!(
        "backends:\n  - {{ name: raw, url: \"{url}\", protocol: openai }}\n{TENANTS}routing: {{}}\n"
    );
    let gw = gateway(&cfg);
    let (path, body) = request(Client::OpenAi, "m");
    let seen = stream(&gw, path, body).await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert!(!seen.aborted, "{}", seen.text);
    let events: Vec<&str> = seen
        .text
        .split("\n\n")
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(events.len(), 3, "{}", seen.text);
    assert!(events[0].contains("\"content\":\"Hi\""), "{}", seen.text);
    assert!(
        events[1].contains("\"finish_reason\":\"stop\""),
        "{}",
        seen.text
    );
    assert_eq!(events[2], "data: [DONE]", "{}", seen.text);
    for e in &events[..2] {
        let json = e.strip_prefix("data: ").expect("a data line");
        serde_json::from_str::<serde_json::Value>(json).expect("whole json");
    }
    assert!(!seen.text.contains("prompt_tokens"), "{}", seen.text);
    let output = [("tenant", "acme"), ("backend", "raw"), ("kind", "output")];
    let counted = metric(&metrics_text(&gw).await, "sluice_tokens_total", &output);
    assert_eq!(counted, Some(2.0));
}
