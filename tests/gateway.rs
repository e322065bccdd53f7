//! The single-node data path end to end: real gateway and simulated upstream processes on loopback.

mod support;

use http_body_util::BodyExt;
use serde_json::json;
use std::time::Duration;
use support::*;

fn one_backend(m: &Proc, extra: &str) -> String {
    format!(
        "backends:\n{}{TENANTS}routing: {{}}\n{extra}",
        backend("sim", m, "openai", "")
    )
}

#[tokio::test]
async fn chat_completion_round_trip_with_ids_and_route_headers() {
    let m = mock("openai", "alpha", &[]);
    let gw = gateway(&one_backend(&m, ""));
    let r = chat(&gw, "sk-acme", hello("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hello there")
    );
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(r.header("x-request-id").unwrap().starts_with("req-"));
    assert_eq!(r.header("x-sluice-route"), Some("default"));
    assert_eq!(r.header("x-sluice-backend"), Some("sim"));
    // A client-chosen request id is kept.
    let r = chat(&gw, "sk-acme", hello("m"), &[("x-request-id", "my-id-1")]).await;
    assert_eq!(r.header("x-request-id"), Some("my-id-1"));
}

#[tokio::test]
async fn bad_input_gets_openai_shaped_errors_and_the_gateway_keeps_serving() {
    let m = mock("openai", "alpha", &[]);
    let gw = gateway(&one_backend(&m, "listen: { max_body_bytes: 2048 }\n"));
    let url = format!("{}/v1/chat/completions", gw.url());
    let auth = [
        ("authorization", "Bearer sk-acme"),
        ("content-type", "application/json"),
    ];

    let r = request("POST", &url, &auth, "{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid json")
    );

    let r = request("POST", &url, &auth, json!({"messages": []}).to_string()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "model");

    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(5000)}]})
        .to_string();
    let r = request("POST", &url, &auth, big).await;
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2048")
    );

    let r = request(
        "POST",
        &url,
        &[("authorization", "Bearer sk-nobody")],
        hello("m").to_string(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = request("POST", &url, &[], hello("m").to_string()).await;
    assert_eq!(r.status, 401);

    let r = request("POST", &format!("{}/v1/nothing", gw.url()), &auth, "{}").await;
    assert_eq!(r.status, 404);
    let r = request("GET", &url, &auth, "").await;
    assert_eq!(r.status, 405);

    // Still serving.
    let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn anthropic_clients_get_anthropic_shaped_errors() {
    let m = mock("anthropic", "claude", &[]);
    let gw = gateway(&format!(
        "backends:\n{}{TENANTS}routing: {{}}\n",
        backend("a", &m, "anthropic", "")
    ));
    let r = messages(&gw, "sk-acme", "[1,").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let ok = json!({"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let r = messages(&gw, "sk-acme", ok.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "message");
}

#[tokio::test]
async fn backend_key_is_injected_and_the_client_key_never_forwarded() {
    // The upstream accepts only the backend's own key.
    let m = mock("openai", "keyed", &["--api-key", "sk-upstream-secret"]);
    let cfg = format!(
        "backends:\n{}{TENANTS}routing: {{}}\n",
        backend("sim", &m, "openai", ", api_key_env: SIM_KEY")
    );
    let gw = gateway_env(&cfg, &[("SIM_KEY", "sk-upstream-secret")]);
    let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn an_unset_key_variable_stops_validate_and_run_naming_field_line_and_variable() {
    let dir = tmp_dir();
    let path = dir.join("sluice.yaml");
    let cfg = "backends:\n  - { name: a, url: \"http://127.0.0.1:9\", protocol: openai }\n  - { name: b, url: \"http://127.0.0.1:9\", protocol: openai, api_key_env: SLUICE_TEST_UNSET_KEY }\ntenants:\n  - { id: t, key_envs: [SLUICE_TEST_UNSET_TENANT] }\nrouting: {}\n";
    std::fs::write(&path, cfg).unwrap();
    let p = path.to_str().unwrap();
    for args in [
        vec!["validate", "--config", p],
        vec!["run", "--config", p, "--listen", "127.0.0.1:0"],
    ] {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .env_remove("SLUICE_TEST_UNSET_KEY")
            .env("SLUICE_TEST_UNSET_TENANT", "sk-tenant")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started: {err}");
        assert!(
            err.contains("backends[1].api_key_env")
                && err.contains("line 3")
                && err.contains("SLUICE_TEST_UNSET_KEY"),
            "{args:?}: {err}"
        );
        let out = std::process::Command::new(BIN)
            .args(&args)
            .env("SLUICE_TEST_UNSET_KEY", "sk-up")
            .env_remove("SLUICE_TEST_UNSET_TENANT")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("tenants[0].key_envs") && err.contains("SLUICE_TEST_UNSET_TENANT"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn streaming_reaches_the_client_before_the_upstream_finishes() {
    // 30 tokens at 10/s: the upstream needs ~3 s for the whole stream.
    let m = mock(
        "openai",
        "slow",
        &["--tokens-per-sec", "10", "--output-tokens", "30"],
    );
    let gw = gateway(&one_backend(&m, ""));
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let req = http::Request::post(format!("{}/v1/chat/completions", gw.url()))
        .header("authorization", "Bearer sk-acme")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = first.into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    // The upstream is still streaming when the first chunk is already here.
    assert_eq!(
        mock_in_flight(&m).await,
        1,
        "upstream finished before the client saw a chunk"
    );
    let rest = tokio::time::timeout(Duration::from_secs(15), body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&rest)
    );
    assert!(all.trim_end().ends_with("data: [DONE]"), "{all}");
    // We asked the upstream for usage; the client did not, so it must not see the usage-only chunk.
    assert!(!all.contains("\"choices\":[]"), "{all}");
    // ...but the gateway counted the tokens.
    let metrics = metrics_text(&gw).await;
    let output = [("tenant", "acme"), ("backend", "sim"), ("kind", "output")];
    assert_eq!(
        metric(&metrics, "sluice_tokens_total", &output),
        Some(30.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_health_and_readiness_endpoints() {
    let m = mock("openai", "alpha", &[]);
    let gw = gateway(&one_backend(&m, ""));
    assert_eq!(
        request("GET", &format!("{}/healthz", gw.url()), &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        request("GET", &format!("{}/readyz", gw.url()), &[], "")
            .await
            .status,
        200
    );
    // Set from the start, and still so after the requests: the backend is healthy, the limiter local.
    let steady = |text: &str| {
        for (name, label) in [
            ("sluice_backend_healthy", ("backend", "sim")),
            ("sluice_limiter_mode", ("mode", "local")),
        ] {
            assert_eq!(metric(text, name, &[label]), Some(1.0), "{name} in\n{text}");
        }
    };
    let before = metrics_text(&gw).await;
    steady(&before);
    // A known number of requests, and the tokens their answers report.
    const N: f64 = 3.0;
    let (mut input, mut output) = (0.0, 0.0);
    for _ in 0..N as usize {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let usage = &r.json()["usage"];
        input += usage["prompt_tokens"].as_f64().unwrap();
        output += usage["completion_tokens"].as_f64().unwrap();
    }
    assert!(input > 0.0 && output > 0.0);
    let route = [("route", "default"), ("backend", "sim")];
    let ok = [("route", "default"), ("backend", "sim"), ("status", "200")];
    // Counters are recorded as each answer ends: wait until the last one shows, then compare.
    let after = poll(Duration::from_secs(5), "every request counted", || async {
        let text = metrics_text(&gw).await;
        (grew(&before, &text, "sluice_requests_total", &ok) >= N).then_some(text)
    })
    .await;
    let grew = |name: &str, labels: &[(&str, &str)]| grew(&before, &after, name, labels);
    assert_eq!(grew("sluice_requests_total", &ok), N, "{after}");
    assert_eq!(grew("sluice_requests_total", &[]), N, "{after}");
    assert_eq!(grew("sluice_routing_decisions_total", &route), N, "{after}");
    assert_eq!(grew("sluice_routing_decisions_total", &[]), N, "{after}");
    let tokens = |kind| [("tenant", "acme"), ("backend", "sim"), ("kind", kind)];
    assert_eq!(
        grew("sluice_tokens_total", &tokens("input")),
        input,
        "{after}"
    );
    assert_eq!(
        grew("sluice_tokens_total", &tokens("output")),
        output,
        "{after}"
    );
    assert_eq!(
        grew(
            "sluice_limiter_decisions_total",
            &[("tenant", "acme"), ("outcome", "allowed")]
        ),
        N,
        "{after}"
    );
    let inf = |k, v| [(k, v), ("le", "+Inf")];
    assert_eq!(
        grew(
            "sluice_request_duration_seconds_bucket",
            &inf("route", "default")
        ),
        N,
        "{after}"
    );
    assert_eq!(
        grew(
            "sluice_upstream_duration_seconds_bucket",
            &inf("backend", "sim")
        ),
        N,
        "{after}"
    );
    let cost = [("tenant", "acme"), ("backend", "sim")];
    assert!(
        metric(&after, "sluice_cost_microusd_total", &cost).is_some(),
        "{after}"
    );
    assert_eq!(
        metric(&after, "sluice_backend_in_flight", &[("backend", "sim")]),
        Some(0.0),
        "{after}"
    );
    steady(&after);
}

#[tokio::test]
async fn rate_limited_tenant_gets_429_with_headers() {
    let m = mock("openai", "alpha", &[]);
    let cfg = format!(
        "backends:\n{}tenants:\n  - {{ id: t, keys: [sk-t1], limits: {{ requests_per_minute: 60, burst: 2 }} }}\nrouting: {{}}\nshaping: {{ max_wait_ms: 0 }}\n",
        backend("sim", &m, "openai", "")
    );
    let gw = gateway(&cfg);
    let a = chat(&gw, "sk-t1", hello("m"), &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(chat(&gw, "sk-t1", hello("m"), &[]).await.status, 200);
    let c = chat(&gw, "sk-t1", hello("m"), &[]).await;
    assert_eq!(c.status, 429);
    assert_eq!(c.json()["error"]["type"], "rate_limit_error");
    assert_eq!(c.header("retry-after"), Some("1"));
    assert_eq!(c.header("x-ratelimit-remaining-requests"), Some("0"));
}

#[test]
fn validate_command_names_field_and_line() {
    let dir = tmp_dir();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "backends:\n  - { name: a, url: \"http://h:1\", protocol: openai }\nrouting:\n  rules:\n    - name: r\n      route: { backend: ghost }\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routing.rules[0].route.backend")
            && err.contains("line 6")
            && err.contains("ghost"),
        "{err}"
    );
    let good =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/examples/seed-routing.yaml");
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_turns_readyz_off_first_and_keeps_serving_during_the_grace() {
    let m = mock("openai", "alpha", &[]);
    let mut gw = gateway(&one_backend(
        &m,
        "listen: { drain_grace_ms: 3000 }\nnode: { id: edge-7 }\n",
    ));
    let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
    assert_eq!(r.header("x-sluice-node"), Some("edge-7"));
    let pid = gw.child.id().to_string();
    assert!(
        // The shell's builtin `kill`: no procps needed on a minimal machine.
        std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap()
            .success()
    );
    let url = gw.url();
    eventually(Duration::from_secs(2), "readyz 503 while draining", || {
        let url = url.clone();
        async move {
            request("GET", &format!("{url}/readyz"), &[], "")
                .await
                .status
                == 503
        }
    })
    .await;
    // Still serving while the load balancer moves away.
    assert_eq!(chat(&gw, "sk-acme", hello("m"), &[]).await.status, 200);
    // Then it exits by itself.
    poll(Duration::from_secs(15), "exit after the grace", || {
        let exited = gw.child.try_wait().unwrap().map(|_| ());
        async move { exited }
    })
    .await;
}

#[tokio::test]
async fn a_second_process_on_a_port_in_use_is_refused_unless_it_takes_over() {
    let m = mock("openai", "sim", &[]);
    let dir = tmp_dir();
    let path = dir.join("sluice.yaml");
    std::fs::write(
        &path,
        format!(
            "backends:\n{}{TENANTS}routing: {{}}\n",
            backend("a", &m, "openai", "")
        ),
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let first = spawn(
        &["run", "--config", p, "--listen", &addr],
        &[],
        "sluice listening on",
    );
    refused_start(p, &addr, &addr).await;
    // The first one still serves everything.
    assert_eq!(chat(&first, "sk-acme", hello("m"), &[]).await.status, 200);
    // Asked for explicitly, the new process joins the port (the hand-over's first step).
    let second = spawn(
        &["run", "--config", p, "--listen", &addr, "--takeover"],
        &[],
        "sluice listening on",
    );
    assert_eq!(chat(&second, "sk-acme", hello("m"), &[]).await.status, 200);
}

/// A raw HTTP/1.1 request head declaring `len` body bytes, then `sent` of them.
async fn partial_body(gw: &Proc, len: usize, sent: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-acme\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(sent).await.unwrap();
    s
}

async fn status_line(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn slow_bodies_time_out_and_a_crowd_of_them_cannot_take_the_memory() {
    let m = mock("openai", "sim", &[]);
    let gw = gateway(&format!(
        "backends:\n{}{TENANTS}routing: {{}}\nbounds: {{ body_idle_timeout_ms: 1500, body_timeout_ms: 8000, max_pending_body_bytes: 4096 }}\n",
        backend("a", &m, "openai", "")
    ));
    // Declares 1,000 bytes, sends one: 408 once the idle gap passes, not a connection held for ever.
    let mut trickle = partial_body(&gw, 1000, b"{").await;
    let t = std::time::Instant::now();
    let answer = status_line(&mut trickle).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Two bodies of 2,000 bytes being read hold 4,000 of the 4,096-byte budget: a third is refused
    // at once with 503 and Retry-After, and the first two still complete. (The idle timeout is long
    // enough for a loaded machine to get the third request in before the two time out.)
    let mut a = partial_body(&gw, 2000, b"").await;
    let mut b = partial_body(&gw, 2000, b"").await;
    let before = metrics_text(&gw).await;
    eventually(
        Duration::from_secs(5),
        "both bodies are being read",
        || async {
            // The reservations are taken when the heads arrive; poll until a third is refused.
            let mut c = partial_body(&gw, 2000, b"").await;
            let answer = status_line(&mut c).await;
            answer.starts_with("HTTP/1.1 503") && answer.contains("bodies_over_budget")
        },
    )
    .await;
    let after = metrics_text(&gw).await;
    assert!(
        grew(
            &before,
            &after,
            "sluice_errors_total",
            &[("kind", "bodies_over_budget")]
        ) >= 1.0
    );
    let body = hello("m").to_string();
    let pad = " ".repeat(2000 - body.len());
    for s in [&mut a, &mut b] {
        use tokio::io::AsyncWriteExt;
        s.write_all(format!("{body}{pad}").as_bytes())
            .await
            .unwrap();
        let answer = status_line(s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[tokio::test]
async fn an_upstream_refusing_the_gateways_key_is_a_502_not_the_clients_401() {
    let m = mock("openai", "keyed", &["--api-key", "sk-upstream-secret"]);
    let cfg = format!(
        "backends:\n{}{TENANTS}routing: {{}}\n",
        backend("sim", &m, "openai", ", api_key_env: SIM_KEY")
    );
    let gw = gateway_env(&cfg, &[("SIM_KEY", "sk-stale-key")]);
    let before = metrics_text(&gw).await;
    let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_credentials");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("`sim`") && msg.contains("credentials"),
        "{msg}"
    );
    assert!(!r.text().contains("sk-stale-key"), "{}", r.text());
    let after = metrics_text(&gw).await;
    assert_eq!(
        grew(
            &before,
            &after,
            "sluice_backend_credentials_rejected_total",
            &[("backend", "sim")]
        ),
        1.0
    );
}

#[tokio::test]
async fn admin_listen_takes_metrics_and_admin_off_the_public_port() {
    let m = mock("openai", "sim", &[]);
    let admin_port = free_port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let cfg = one_backend(
        &m,
        &format!(
            "admin_token_env: SLUICE_ADMIN_TOKEN\nadmin: {{ listen: \"127.0.0.1:{admin_port}\" }}\n"
        ),
    );
    let gw = gateway_env(&cfg, &[("SLUICE_ADMIN_TOKEN", "t0ken")]);
    let get = |base: &str, path: &str, auth: bool| {
        let url = format!("{base}{path}");
        async move {
            let h: &[(&str, &str)] = if auth {
                &[("authorization", "Bearer t0ken")]
            } else {
                &[]
            };
            request("GET", &url, h, "").await
        }
    };
    assert_eq!(chat(&gw, "sk-acme", hello("m"), &[]).await.status, 200);

    // The admin port: metrics (with the request just served), the cluster view behind the token,
    // the probes; nothing of the API.
    let counted = poll(
        Duration::from_secs(5),
        "the request in /metrics",
        || async {
            let text = get(&admin, "/metrics", false).await.text();
            metric(&text, "sluice_requests_total", &[("status", "200")]).map(|_| text)
        },
    )
    .await;
    assert!(counted.contains("sluice_limiter_mode"), "{counted}");
    assert_eq!(get(&admin, "/admin/cluster", true).await.status, 200);
    assert_eq!(get(&admin, "/admin/cluster", false).await.status, 403);
    let api = get(&admin, "/v1/models", true).await;
    assert_eq!(api.status, 404, "{}", api.text());

    // The public port: the API and the probes, a 404 in the API's error shape for the rest.
    for path in ["/metrics", "/admin/cluster"] {
        let r = get(&gw.url(), path, true).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "not_found_error", "{path}");
    }
    for base in [gw.url(), admin.clone()] {
        for path in ["/healthz", "/readyz"] {
            assert_eq!(get(&base, path, false).await.status, 200, "{base}{path}");
        }
    }
}

#[tokio::test]
async fn an_admin_listen_port_in_use_stops_the_start_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let path = tmp_dir().join("sluice.yaml");
    // The backend is never called: the process stops before serving.
    let backends = "backends:\n  - { name: a, url: \"http://127.0.0.1:9\", protocol: openai }\n";
    let cfg = format!("{backends}{TENANTS}routing: {{}}\nadmin: {{ listen: \"{addr}\" }}\n");
    std::fs::write(&path, cfg).unwrap();
    refused_start(path.to_str().unwrap(), "127.0.0.1:0", &addr).await;
}

/// `sluice run --config CONFIG --listen LISTEN` exits (within 20 s) with an error naming `taken`,
/// an address in use.
async fn refused_start(config: &str, listen: &str, taken: &str) {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(BIN)
            .args(["run", "--config", config, "--listen", listen])
            .output(),
    )
    .await
    .expect("the process must exit, not serve")
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(taken) && err.contains("already in use"),
        "{err}"
    );
}
