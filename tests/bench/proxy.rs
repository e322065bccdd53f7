//! Proxy overhead benchmark (not a test): the same fast upstream reached directly, through nginx as a
//! plain reverse proxy, and through Sluice, interleaved in one run. Prints Sluice's throughput as a ratio
//! of nginx's and the latency each proxy adds at a fixed 1,000 requests/s. Two more Sluice rows
//! export OpenTelemetry traces (every request sampled, and 1%) to a collector stand-in (nginx
//! answering `/v1/traces`), printed as ratios of the untraced Sluice in the same rounds.
//!
//! `cargo bench --bench proxy` (needs `wrk` and `nginx` on PATH: `apt-get install wrk nginx-light`).
//! Env: BENCH_SECONDS (per wrk round, default 6), BENCH_ROUNDS (default 5), BENCH_RATE (default 1000).
//! On a shared 2-core machine rounds vary by ±10%: the ratio is printed both from the medians and as
//! the median of each round's own ratio (nginx and Sluice measured back to back).

mod common;
#[path = "../support/mod.rs"]
mod support;

use common::{Kill, median, need, wait_port, wrk};
use support::{Proc, free_port};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence please."}]}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;

/// nginx serving the canned answer on `up`, and reverse-proxying `proxy` → `up` with keep-alive.
fn start_nginx(dir: &std::path::Path, up: u16, proxy: u16) -> Kill {
    let conf = format!(
        r#"worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  upstream fast {{ server 127.0.0.1:{up}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{up};
    location = /v1/traces {{ return 204; }}
    location / {{ default_type application/json; return 200 '{answer}'; }}
  }}
  server {{
    listen 127.0.0.1:{proxy};
    location / {{ proxy_pass http://fast; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"#,
        dir = dir.display(),
        answer = ANSWER
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .args(["-c", path.to_str().unwrap(), "-g", "daemon off;"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    wait_port(up);
    wait_port(proxy);
    Kill(child)
}

/// Sluice in front of `up`; `sample`: export traces to `up`'s `/v1/traces` at that ratio.
fn start_sluice(up: u16, sample: Option<f64>) -> (Proc, u16) {
    let observe = sample.map_or(String::new(), |r| {
        format!("observe:\n  otlp: {{ endpoint: \"http://127.0.0.1:{up}\", sample_ratio: {r} }}\n")
    });
    let cfg = format!(
        "backends:\n  - {{ name: fast, url: \"http://127.0.0.1:{up}\", protocol: openai }}\ntenants:\n  - {{ id: bench, keys: [sk-bench] }}\nrouting: {{}}\n{observe}"
    );
    let sluice = support::gateway_env(&cfg, &[("RUST_LOG", "warn")]);
    let port = sluice.addr.rsplit(':').next().unwrap().parse().unwrap();
    (sluice, port)
}

/// Open-loop load at `rate` requests/s for `secs`: latency percentiles in microseconds.
async fn fixed_rate(port: u16, rate: u64, secs: u64) -> (f64, f64, usize) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .build_http();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let n = rate * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .header("authorization", "Bearer sk-bench")
                .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                .unwrap();
            let t = Instant::now();
            let resp = client.request(req).await.ok()?;
            let ok = resp.status().is_success();
            resp.into_body().collect().await.ok()?;
            ok.then(|| t.elapsed().as_secs_f64() * 1e6)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut failed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(us) => lat.push(us),
            None => failed += 1,
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (pct(0.50), pct(0.99), failed)
}

fn main() {
    if !need("wrk") || !need("nginx") {
        eprintln!(
            "skipped: the proxy benchmark needs wrk and nginx (apt-get install wrk nginx-light)"
        );
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (up, nginx_port) = (free_port(), free_port());
    let _nginx = start_nginx(&dir, up, nginx_port);
    let (_sluice, sluice_port) = start_sluice(up, None);
    let (_traced, traced_port) = start_sluice(up, Some(1.0));
    let (_sampled, sampled_port) = start_sluice(up, Some(0.01));
    let targets = [
        ("direct", up),
        ("nginx", nginx_port),
        ("sluice", sluice_port),
        ("trace100", traced_port),
        ("trace1", sampled_port),
    ];
    let count = targets.len();

    // Warm up every path (connection pools, caches).
    for (_, port) in targets {
        wrk(&dir, &format!("127.0.0.1:{port}"), "sk-bench", BODY, 1);
    }
    println!("throughput: wrk -t1 -c32, {secs}s x {rounds} rounds, interleaved");
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); count];
    for round in 0..rounds {
        for (i, (name, port)) in targets.iter().enumerate() {
            let r = wrk(&dir, &format!("127.0.0.1:{port}"), "sk-bench", BODY, secs);
            println!("  round {round} {name:>8}: {r:>9.0} req/s");
            rps[i].push(r);
        }
    }
    let (d, n, s) = (
        median(rps[0].clone()),
        median(rps[1].clone()),
        median(rps[2].clone()),
    );
    println!("median req/s: direct {d:.0}, nginx {n:.0}, sluice {s:.0}");
    println!("sluice / nginx throughput: {:.2} (medians)", s / n);
    let paired: Vec<f64> = rps[2].iter().zip(&rps[1]).map(|(s, n)| s / n).collect();
    let shown: Vec<String> = paired.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "sluice / nginx per round: {} (median {:.2})",
        shown.join(" "),
        median(paired.clone())
    );
    println!("sluice / direct throughput: {:.2}", s / d);
    for (i, name) in [(3, "traced 100%"), (4, "traced 1%")] {
        let per: Vec<f64> = rps[i].iter().zip(&rps[2]).map(|(t, s)| t / s).collect();
        println!(
            "sluice {name} / sluice untraced throughput: {:.3} (medians), {:.3} (median of rounds)",
            median(rps[i].clone()) / s,
            median(per)
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let lsecs = secs.max(5);
    println!("latency at {rate} req/s open loop, {lsecs}s per target, interleaved x {rounds}");
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); count];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); count];
    for round in 0..rounds {
        for (i, (name, port)) in targets.iter().enumerate() {
            let (a, b, failed) = rt.block_on(fixed_rate(*port, rate, lsecs));
            println!(
                "  round {round} {name:>8}: p50 {a:>7.0} us  p99 {b:>7.0} us  failed {failed}"
            );
            p50[i].push(a);
            p99[i].push(b);
        }
    }
    let m = |v: &Vec<f64>| median(v.clone());
    println!(
        "added latency vs direct: nginx p50 {:+.0} us p99 {:+.0} us; sluice p50 {:+.0} us p99 {:+.0} us",
        m(&p50[1]) - m(&p50[0]),
        m(&p99[1]) - m(&p99[0]),
        m(&p50[2]) - m(&p50[0]),
        m(&p99[2]) - m(&p99[0])
    );
    for (i, name) in [(3, "traced 100%"), (4, "traced 1%")] {
        println!(
            "sluice {name} vs untraced: p50 {:+.0} us p99 {:+.0} us",
            m(&p50[i]) - m(&p50[2]),
            m(&p99[i]) - m(&p99[2])
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
