//! Hot reload of the config file on a real gateway process: `POST /admin/reload`, SIGHUP and
//! `--watch`; under an open-loop load no request fails; changes apply on the next request; state
//! carries over by name (bucket levels, backend health and EWMAs); an invalid file or a change that
//! needs a restart is refused while the running config keeps serving; a certificate swapped on
//! disk is served after the reload.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::*;

const ADMIN: &str = "reload-t0ken";

/// One test of this file at a time: the load test measures failures under a fixed offered rate,
/// which a neighbour's processes must not eat into.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A gateway process started on a config file this test rewrites.
struct Node {
    proc: Proc,
    path: PathBuf,
}

impl Node {
    fn start(config: &str, extra: &[&str]) -> Node {
        Self::start_env(config, extra, &[])
    }

    fn start_env(config: &str, extra: &[&str], envs: &[(&str, &str)]) -> Node {
        let path = tmp_dir().join("sluice.yaml");
        std::fs::write(&path, config).unwrap();
        let p = path.to_str().unwrap().to_string();
        let mut args = vec!["run", "--config", p.as_str()];
        args.extend_from_slice(extra);
        let mut envs = envs.to_vec();
        envs.push(("SLUICE_ADMIN_TOKEN", ADMIN));
        let proc = spawn(&args, &envs, "sluice listening on");
        Node { proc, path }
    }

    fn write(&self, config: &str) {
        std::fs::write(&self.path, config).unwrap();
    }

    /// Write `config` and reload it through the admin endpoint.
    async fn reload(&self, config: &str) -> Resp {
        self.write(config);
        admin_reload(&self.proc.url()).await
    }

    async fn admin_cluster(&self) -> Value {
        let auth = format!("Bearer {ADMIN}");
        let r = request(
            "GET",
            &format!("{}/admin/cluster", self.proc.url()),
            &[("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    fn hup(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &self.proc.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP failed");
    }
}

async fn admin_reload(base: &str) -> Resp {
    let auth = format!("Bearer {ADMIN}");
    request(
        "POST",
        &format!("{base}/admin/reload"),
        &[("authorization", &auth)],
        "",
    )
    .await
}

/// The config the load test varies: tenants (id, key, limits), backends, and a pin rule per
/// backend (`x-pin: <name>` sends there).
#[derive(Clone)]
struct Spec {
    tenants: Vec<(String, String)>,
    backends: Vec<&'static str>,
    /// The default route's pool.
    default_pool: Vec<&'static str>,
}

const MOCKS: &str = "mock_upstreams:
  - { name: m1, protocol: openai }
  - { name: m2, protocol: openai }
  - { name: m3, protocol: openai }
";

impl Spec {
    fn yaml(&self) -> String {
        // No adaptive limit: on a slow machine it would queue and shed (503) the load, which is
        // not what this test is about. Bookings for the capped tenant up to 1 s, then 429.
        let mut s = format!(
            "listen: {{ address: 127.0.0.1:0 }}\nadmin_token_env: SLUICE_ADMIN_TOKEN\nshaping: {{ max_wait_ms: 1000, congestion: {{ enabled: false }} }}\n{MOCKS}backends:\n"
        );
        for (i, b) in self.backends.iter().enumerate() {
            let mock = match *b {
                "a" => "m1",
                "b" => "m2",
                _ => "m3",
            };
            let _ = i;
            s.push_str(&format!(
                "  - {{ name: {b}, url: mock://{mock}, protocol: openai }}\n"
            ));
        }
        s.push_str("tenants:\n");
        for (id, limits) in &self.tenants {
            s.push_str(&format!(
                "  - {{ id: {id}, keys: [sk-{id}], limits: {limits} }}\n"
            ));
        }
        s.push_str("routing:\n  rules:\n");
        for b in &self.backends {
            s.push_str(&format!(
                "    - {{ name: pin-{b}, match: {{ headers: {{ x-pin: {b} }} }}, route: {{ backend: {b} }} }}\n"
            ));
        }
        s.push_str(&format!(
            "  default: {{ backend: [{}] }}\n",
            self.default_pool.join(", ")
        ));
        s
    }
}

/// Statuses seen by one load stream.
#[derive(Default, Debug)]
struct Tally {
    /// The slowest answer.
    slowest: Duration,
    ok: u64,
    limited: u64,
    other: Vec<(u16, String)>,
}

/// Open loop: one request every `every` (not waiting for answers) as tenant `key`, until `stop`.
fn open_loop(
    base: String,
    key: &'static str,
    every: Duration,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Tally> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let (base, answered) = (base.clone(), answered.clone());
            sent.push(tokio::spawn(async move {
                let started = std::time::Instant::now();
                let call = chat_at(&base, key, hello("m"), &[]);
                let out = match tokio::time::timeout(Duration::from_secs(20), call).await {
                    Ok(r) => (r.status, r.text(), started.elapsed()),
                    Err(_) => (0, "no answer in 20 s".into(), started.elapsed()),
                };
                answered.fetch_add(1, Ordering::Relaxed);
                out
            }));
        }
        let mut t = Tally::default();
        for h in sent {
            let (status, body, took) = h.await.unwrap();
            t.slowest = t.slowest.max(took);
            match status {
                200 => t.ok += 1,
                429 => t.limited += 1,
                s if t.other.len() < 10 => t.other.push((s, body)),
                _ => {}
            }
        }
        t
    })
}

async fn status(gw: &Proc, key: &str, extra: &[(&str, &str)]) -> Resp {
    chat(gw, key, hello("m"), extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_open_loop_load_fail_no_request() {
    let _serial = SERIAL.lock().await;
    let mut spec = Spec {
        tenants: vec![
            ("load".into(), "{}".into()),
            // Limited on purpose: its 429s are expected, and counted.
            (
                "capped".into(),
                "{ requests_per_minute: 600, burst: 5 }".into(),
            ),
        ],
        backends: vec!["a", "b"],
        default_pool: vec!["a", "b"],
    };
    let node = Node::start(&spec.yaml(), &[]);
    let gw = &node.proc;
    assert_eq!(status(gw, "sk-load", &[]).await.status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    // About 150 requests a second in all (a debug build on a small machine: well within capacity).
    let every = |ms| Duration::from_millis(ms);
    let (s, a) = (stop.clone(), answered.clone());
    let load = open_loop(gw.url(), "sk-load", every(8), s, a);
    let (s, a) = (stop.clone(), answered.clone());
    let capped = open_loop(gw.url(), "sk-capped", every(40), s, a);

    let mut reloads = 0;
    // Each reload lands under load: 25 more answers first.
    let ok = async |r: Resp| {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["result"], "ok", "{}", r.text());
        let target = answered.load(Ordering::Relaxed) + 25;
        eventually(Duration::from_secs(30), "25 more answers", || async {
            answered.load(Ordering::Relaxed) >= target
        })
        .await;
    };
    let began = std::time::Instant::now();
    for i in 0..6 {
        eprintln!("step {i} at {:?}", began.elapsed());
        // A tenant added: its key works on the next request.
        let id = format!("t{i}");
        spec.tenants.push((id.clone(), "{}".into()));
        ok(node.reload(&spec.yaml()).await).await;
        reloads += 1;
        assert_eq!(status(gw, &format!("sk-{id}"), &[]).await.status, 200);

        // The previous one removed: its key is refused right after the reload returns.
        if i > 0 {
            let gone = format!("t{}", i - 1);
            spec.tenants.retain(|(t, _)| *t != gone);
            ok(node.reload(&spec.yaml()).await).await;
            reloads += 1;
            let r = status(gw, &format!("sk-{gone}"), &[]).await;
            assert_eq!(r.status, 401, "removed tenant {gone}: {}", r.text());
        }

        // A limit changed (the capped stream keeps meeting it).
        let rpm = if i % 2 == 0 { 1200 } else { 600 };
        spec.tenants[1].1 = format!("{{ requests_per_minute: {rpm}, burst: 5 }}");
        ok(node.reload(&spec.yaml()).await).await;
        reloads += 1;
        assert_eq!(
            status(gw, "sk-capped", &[])
                .await
                .header("x-ratelimit-limit-requests"),
            Some(rpm.to_string().as_str())
        );

        match i {
            // A backend added, and routed to on the next request.
            1 => {
                spec.backends.push("c");
                spec.default_pool.push("c");
                ok(node.reload(&spec.yaml()).await).await;
                reloads += 1;
                let r = status(gw, "sk-load", &[("x-pin", "c")]).await;
                assert_eq!(r.status, 200, "{}", r.text());
                assert_eq!(r.header("x-sluice-backend"), Some("c"));
            }
            // A backend removed (its in-flight requests drain on the old config).
            3 => {
                spec.backends.retain(|b| *b != "a");
                spec.default_pool.retain(|b| *b != "a");
                ok(node.reload(&spec.yaml()).await).await;
                reloads += 1;
                let r = status(gw, "sk-load", &[("x-pin", "a")]).await;
                assert_eq!(r.status, 200, "{}", r.text());
                assert_ne!(r.header("x-sluice-backend"), Some("a"), "a was removed");
            }
            // A route changed: the default pool is one backend, on the next request.
            4 => {
                spec.default_pool = vec!["b"];
                ok(node.reload(&spec.yaml()).await).await;
                reloads += 1;
                for _ in 0..5 {
                    let r = status(gw, "sk-load", &[]).await;
                    assert_eq!(
                        r.header("x-sluice-backend"),
                        Some("b"),
                        "{} {}",
                        r.status,
                        r.text()
                    );
                }
            }
            // An invalid file: refused with field and line; the running config keeps serving.
            5 => {
                let bad = spec.yaml().replace("id: load,", "id: capped,");
                let r = node.reload(&bad).await;
                assert_eq!(r.status, 422, "{}", r.text());
                let j = r.json();
                assert_eq!(j["result"], "invalid");
                assert!(j["field"].as_str().unwrap().starts_with("tenants["), "{j}");
                assert!(j["line"].as_u64().is_some_and(|l| l > 0), "{j}");
                assert_eq!(status(gw, "sk-load", &[]).await.status, 200);
                assert_eq!(status(gw, &format!("sk-{id}"), &[]).await.status, 200);
                node.write(&spec.yaml());
            }
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let load = load.await.unwrap();
    let capped = capped.await.unwrap();
    println!("reloads: {reloads}; load stream {load:?}; capped stream {capped:?}");
    if !load.other.is_empty() || !capped.other.is_empty() {
        let logs = gw.logs();
        println!("{}", &logs[logs.len().saturating_sub(20_000)..]);
    }
    assert!(reloads >= 20, "{reloads}");
    assert!(
        load.other.is_empty() && load.limited == 0,
        "the unlimited stream saw failures: {load:?}"
    );
    assert!(load.ok > 200, "{load:?}");
    assert!(
        capped.other.is_empty(),
        "the capped stream saw failures: {capped:?}"
    );
    assert!(capped.ok > 0 && capped.limited > 0, "{capped:?}");

    let m = metrics_text(gw).await;
    assert_eq!(
        metric(&m, "sluice_config_reloads_total", &[("result", "ok")]),
        Some(reloads as f64)
    );
    assert_eq!(
        metric(&m, "sluice_config_reloads_total", &[("result", "invalid")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_changed_limit_hands_out_no_fresh_burst() {
    let _serial = SERIAL.lock().await;
    let cfg = |t: &str, u: &str| {
        format!(
            "listen: {{ address: 127.0.0.1:0 }}\nadmin_token_env: SLUICE_ADMIN_TOKEN\nmock_upstreams:\n  - {{ name: m, protocol: openai }}\nbackends:\n  - {{ name: a, url: mock://m, protocol: openai }}\ntenants:\n  - {{ id: t, keys: [sk-t], limits: {t} }}\n  - {{ id: u, keys: [sk-u], limits: {u} }}\nrouting: {{}}\nshaping: {{ max_wait_ms: 0 }}\n"
        )
    };
    // One request per 10 s refills: nothing comes back during the test.
    let slow = |burst: u32| format!("{{ requests_per_minute: 6, burst: {burst} }}");
    let node = Node::start(&cfg(&slow(5), &slow(10)), &[]);
    // (`shaping.max_wait_ms: 0` below: a request is refused rather than wait for a refill.)
    let gw = &node.proc;
    for _ in 0..5 {
        assert_eq!(status(gw, "sk-t", &[]).await.status, 200);
    }
    assert_eq!(status(gw, "sk-t", &[]).await.status, 429);

    // t's burst grows, u's shrinks: t's empty bucket stays empty (not refilled to 20); u's full
    // one holds at most the new burst.
    let r = node.reload(&cfg(&slow(20), &slow(2))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = status(gw, "sk-t", &[]).await;
    assert_eq!(
        r.status,
        429,
        "a reload handed out a fresh burst: {}",
        r.text()
    );
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("6"));
    let mut passed = 0;
    for _ in 0..5 {
        if status(gw, "sk-u", &[]).await.status == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 2, "u's bucket is capped at its new burst");

    // A faster rate applies from the reload on (600/min: one request every 100 ms).
    let fast = "{ requests_per_minute: 600, burst: 20 }";
    let r = node.reload(&cfg(fast, &slow(2))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = status(gw, "sk-t", &[]).await;
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("600"));
    eventually(
        Duration::from_secs(5),
        "the new rate refills t's bucket",
        || async { status(gw, "sk-t", &[]).await.status == 200 },
    )
    .await;
}

#[tokio::test]
async fn backend_health_and_latency_carry_over_a_reload() {
    let _serial = SERIAL.lock().await;
    let up = mock("openai", "up", &["--latency-ms", "30"]);
    let sick = mock("openai", "sick", &[]);
    let cfg = |tenants: &str| {
        format!(
            "listen: {{ address: 127.0.0.1:0 }}\nadmin_token_env: SLUICE_ADMIN_TOKEN\nbackends:\n  - {{ name: up, url: \"{}\", protocol: openai }}\n  - {{ name: sick, url: \"{}\", protocol: openai, health_check: {{ path: /health, interval_ms: 100, unhealthy_threshold: 1, healthy_threshold: 1 }} }}\ntenants:\n{tenants}routing: {{ default: {{ backend: [up] }} }}\n",
            up.url(),
            sick.url()
        )
    };
    let node = Node::start(&cfg("  - { id: t, keys: [sk-t] }\n"), &[]);
    let gw = &node.proc;
    for _ in 0..5 {
        assert_eq!(status(gw, "sk-t", &[]).await.status, 200);
    }
    mock_control(&sick, serde_json::json!({"healthy": false})).await;
    let find = |v: &Value, name: &str| {
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
            .unwrap()
    };
    poll(Duration::from_secs(5), "sick is seen unhealthy", || async {
        let v = node.admin_cluster().await;
        (find(&v, "sick")["healthy"] == false).then_some(())
    })
    .await;
    let before = node.admin_cluster().await;
    let latency = find(&before, "up")["latency_ms"].as_f64().unwrap();
    assert!(latency >= 25.0, "{before}");
    let version = before["config_version"].as_str().unwrap().to_string();

    // Add a tenant: the backends are the same by name and keep what was learned.
    let r = node
        .reload(&cfg(
            "  - { id: t, keys: [sk-t] }\n  - { id: u, keys: [sk-u] }\n",
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = node.admin_cluster().await;
    assert_eq!(find(&after, "sick")["healthy"], false, "{after}");
    let carried = find(&after, "up")["latency_ms"].as_f64();
    assert!(
        carried.is_some_and(|l| (l - latency).abs() < latency * 0.5),
        "latency EWMA {latency} became {carried:?}"
    );
    assert_eq!(r.json()["version"], after["config_version"]);
    assert_ne!(after["config_version"].as_str().unwrap(), version);
    assert_eq!(
        after["cluster"]["members"][0]["config_version"],
        after["config_version"]
    );
    let m = metrics_text(gw).await;
    let v = after["config_version"].as_str().unwrap();
    assert_eq!(
        metric(&m, "sluice_config_info", &[("version", v)]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "sluice_config_info", &[("version", &version)]),
        Some(0.0)
    );
}

#[tokio::test]
async fn what_needs_a_restart_is_refused_and_the_old_config_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let base = "listen: { address: 127.0.0.1:0 }\nadmin_token_env: SLUICE_ADMIN_TOKEN\nmock_upstreams:\n  - { name: m, protocol: openai }\nbackends:\n  - { name: a, url: mock://m, protocol: openai }\ntenants:\n  - { id: t, keys: [sk-t] }\nrouting: {}\n";
    let node = Node::start(base, &[]);
    let gw = &node.proc;
    let port = free_port();
    let moved = base
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace("sk-t]", "sk-t, sk-new]");
    let r = node.reload(&moved).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let j = r.json();
    assert_eq!(j["result"], "restart_required");
    assert_eq!(j["fields"], serde_json::json!(["listen.address"]));
    assert!(j["error"].as_str().unwrap().contains("restart"), "{j}");
    // Nothing of the refused file applies.
    assert_eq!(status(gw, "sk-t", &[]).await.status, 200);
    assert_eq!(status(gw, "sk-new", &[]).await.status, 401);

    // A file that does not parse: the line is named.
    let r = node
        .reload(&base.replace("routing: {}", "routing: {}\nunknown_field: 1"))
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["line"], 10, "{}", r.text());

    // Without the token: no reload.
    let r = request("POST", &format!("{}/admin/reload", gw.url()), &[], "").await;
    assert_eq!(r.status, 403, "{}", r.text());

    let m = metrics_text(gw).await;
    assert_eq!(
        metric(
            &m,
            "sluice_config_reloads_total",
            &[("result", "restart_required")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "sluice_config_reloads_total", &[("result", "invalid")]),
        Some(1.0)
    );
    assert_eq!(status(gw, "sk-t", &[]).await.status, 200);
}

#[tokio::test]
async fn sighup_and_a_watched_file_reload() {
    let _serial = SERIAL.lock().await;
    let cfg = |keys: &str| {
        format!(
            "listen: {{ address: 127.0.0.1:0 }}\nadmin_token_env: SLUICE_ADMIN_TOKEN\nmock_upstreams:\n  - {{ name: m, protocol: openai }}\nbackends:\n  - {{ name: a, url: mock://m, protocol: openai }}\ntenants:\n  - {{ id: t, keys: [{keys}] }}\nrouting: {{}}\n"
        )
    };
    let node = Node::start(&cfg("sk-1"), &[]);
    node.write(&cfg("sk-1, sk-2"));
    assert_eq!(status(&node.proc, "sk-2", &[]).await.status, 401);
    node.hup();
    eventually(Duration::from_secs(10), "SIGHUP reloads", || async {
        status(&node.proc, "sk-2", &[]).await.status == 200
    })
    .await;

    let watched = Node::start(&cfg("sk-1"), &["--watch"]);
    watched.write(&cfg("sk-3"));
    eventually(
        Duration::from_secs(10),
        "the watched file reloads",
        || async { status(&watched.proc, "sk-3", &[]).await.status == 200 },
    )
    .await;
    assert_eq!(status(&watched.proc, "sk-1", &[]).await.status, 401);
    let m = metrics_text(&watched.proc).await;
    assert_eq!(
        metric(&m, "sluice_config_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
}

fn write_cert(dir: &Path, name: &str) -> (PathBuf, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = dir.join(format!("{name}.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        ck.signing_key.serialize_pem(),
    )
    .unwrap();
    (cert, ck.cert.pem())
}

/// Whether an HTTPS client trusting only `pem` gets a 200 from the gateway.
async fn trusted_by(addr: &str, pem: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build::<_, Full<Bytes>>(conn);
    let req = http::Request::post(format!("https://{addr}/v1/chat/completions"))
        .header("authorization", "Bearer sk-t")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(hello("m").to_string())))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(resp)) => {
            let ok = resp.status() == 200;
            let _ = resp.into_body().collect().await;
            ok
        }
        _ => false,
    }
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_served_after_the_reload() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tmp_dir();
    let (old_path, old_pem) = write_cert(&dir, "old");
    let (new_path, new_pem) = write_cert(&dir, "new");
    let live_cert = dir.join("live.pem");
    let live_key = dir.join("live.key");
    std::fs::copy(&old_path, &live_cert).unwrap();
    std::fs::copy(dir.join("old.key"), &live_key).unwrap();
    let admin_port = free_port();
    let cfg = format!(
        "listen: {{ address: 127.0.0.1:0, tls: {{ cert: \"{}\", key: \"{}\" }} }}\nadmin: {{ listen: \"127.0.0.1:{admin_port}\" }}\nadmin_token_env: SLUICE_ADMIN_TOKEN\nmock_upstreams:\n  - {{ name: m, protocol: openai }}\nbackends:\n  - {{ name: a, url: mock://m, protocol: openai }}\ntenants:\n  - {{ id: t, keys: [sk-t] }}\nrouting: {{}}\n",
        live_cert.display(),
        live_key.display()
    );
    let node = Node::start(&cfg, &[]);
    let addr = node.proc.addr.clone();
    assert!(trusted_by(&addr, &old_pem).await);
    assert!(!trusted_by(&addr, &new_pem).await);

    // Rotate: the new pair on disk, then reload.
    std::fs::copy(&new_path, &live_cert).unwrap();
    std::fs::copy(dir.join("new.key"), &live_key).unwrap();
    let r = admin_reload(&format!("http://127.0.0.1:{admin_port}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        trusted_by(&addr, &new_pem).await,
        "the new certificate is served"
    );
    assert!(!trusted_by(&addr, &old_pem).await);

    // A broken file is refused; the certificate served stays.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    let r = admin_reload(&format!("http://127.0.0.1:{admin_port}")).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(trusted_by(&addr, &new_pem).await);
}

#[tokio::test]
async fn each_cluster_node_reloads_its_own_file_and_peers_see_its_version() {
    let _serial = SERIAL.lock().await;
    use support::cluster::{KEY_A, KEY_ENV};
    let gossip = [free_port(), free_port()];
    let cfg = |i: usize, keys: &str| {
        format!(
            "node: {{ id: node-{i} }}\nlisten: {{ address: 127.0.0.1:0 }}\nadmin_token_env: SLUICE_ADMIN_TOKEN\nmock_upstreams:\n  - {{ name: m, protocol: openai }}\nbackends:\n  - {{ name: a, url: mock://m, protocol: openai }}\ntenants:\n  - {{ id: t, keys: [{keys}] }}\nrouting: {{}}\ncluster:\n  cluster_id: reload\n  gossip_listen: 127.0.0.1:{}\n  seeds: [127.0.0.1:{}]\n  gossip_interval_ms: 100\n  dead_after_ms: 1500\n  secret_env: {KEY_ENV}\n",
            gossip[i],
            gossip[1 - i]
        )
    };
    let env = [(KEY_ENV, KEY_A)];
    let nodes = [
        Node::start_env(&cfg(0, "sk-1"), &[], &env),
        Node::start_env(&cfg(1, "sk-1"), &[], &env),
    ];
    // What node 0 lists as node 1's config version.
    let seen_by_0 = async |nodes: &[Node; 2]| {
        let v = nodes[0].admin_cluster().await;
        v["cluster"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "node-1")
            .map(|m| m["config_version"].clone())
    };
    let own = |v: &Value| v["config_version"].clone();
    let before = own(&nodes[1].admin_cluster().await);
    poll(
        Duration::from_secs(10),
        "node 0 sees node 1's version",
        || async { (seen_by_0(&nodes).await == Some(before.clone())).then_some(()) },
    )
    .await;

    // Node 1 reloads its own file: a new key there, not on node 0; node 0 sees the new version.
    let r = nodes[1].reload(&cfg(1, "sk-1, sk-2")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = own(&nodes[1].admin_cluster().await);
    assert_ne!(after, before);
    assert_eq!(r.json()["version"], after);
    poll(
        Duration::from_secs(10),
        "node 0 sees node 1's new version",
        || async { (seen_by_0(&nodes).await == Some(after.clone())).then_some(()) },
    )
    .await;
    assert_eq!(status(&nodes[1].proc, "sk-2", &[]).await.status, 200);
    assert_eq!(status(&nodes[0].proc, "sk-2", &[]).await.status, 401);
    // Membership carried over: both still see two live members.
    for n in &nodes {
        assert_eq!(n.admin_cluster().await["cluster"]["live_count"], 2);
    }

    // A change of the gossip settings needs a restart.
    let moved = cfg(1, "sk-1, sk-2").replace("gossip_interval_ms: 100", "gossip_interval_ms: 200");
    let r = nodes[1].reload(&moved).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        r.json()["fields"],
        serde_json::json!(["cluster.gossip_interval_ms"])
    );
}
