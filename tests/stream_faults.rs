//! Stream integrity through every protocol pair: an upstream stream that is cut short, malformed,
//! endless, stalled or dropped reaches the client as an error event in the client's own dialect
//! followed by an aborted body, never as a clean end; a healthy stream still ends cleanly.

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

async fn stream(gw: &Proc, path: &str, body: serde_json::Value) -> Seen {
    let req = http::Request::post(format!("{}{path}", gw.url()))
        .header("authorization", "Bearer sk-acme")
        .header("x-api-key", "sk-acme")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
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

#[derive(Clone, Copy, Debug)]
enum Client {
    OpenAi,
    Anthropic,
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
    }
}

#[tokio::test]
async fn every_fault_through_every_protocol_pair_is_an_error_the_client_cannot_miss() {
    let oa = mock("openai", "oa", &["--output-tokens", "12"]);
    let an = mock("anthropic", "an", &["--output-tokens", "12"]);
    let tolerant = ", eject_after: 100000, timeouts: { idle_ms: 400 }";
    let cfg = format!(
        "backends:\n{}{}{TENANTS}routing:\n  rules:\n    - {{ name: to-openai, match: {{ model: oa }}, route: {{ backend: oa }} }}\n    - {{ name: to-anthropic, match: {{ model: an }}, route: {{ backend: an }} }}\nbounds: {{ sse_max_line_bytes: 65536, sse_max_event_bytes: 65536 }}\n",
        backend("oa", &oa, "openai", tolerant),
        backend("an", &an, "anthropic", tolerant),
    );
    let gw = gateway(&cfg);
    let pairs = [
        (Client::OpenAi, "oa"),
        (Client::Anthropic, "an"),
        (Client::OpenAi, "an"),
        (Client::Anthropic, "oa"),
    ];
    let faults = [
        ("truncate", "truncated"),
        ("malformed", "malformed"),
        ("no_newline", "too_large"),
        ("endless_event", "too_large"),
        ("stall", "idle"),
        ("close_mid_body", "truncated"),
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
            }
            let after = metrics_text(&gw).await;
            assert_eq!(
                grew(
                    &before,
                    &after,
                    "sluice_stream_faults_total",
                    &[("kind", kind)]
                ),
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
        };
        assert!(
            seen.text.contains(marker),
            "{client:?}/{model}: {}",
            seen.text
        );
    }
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(p: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
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
