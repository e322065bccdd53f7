//! Streaming benchmark (not a test): N concurrent SSE streams held open through a proxy, from one
//! process. The simulated upstream (`sluice mock-upstream`) paces STREAM_TOKENS tokens at STREAM_RATE
//! tokens/s per stream; each client POSTs an OpenAI chat request with `"stream": true` over its own
//! HTTP/1.1 connection (raw tokio socket, a minimal chunked + SSE reader: a few KiB per stream) and
//! reads to the end. A stream succeeds on status 200, `data: [DONE]` and the final chunk.
//!
//! Targets, interleaved per concurrency step, each proxy started fresh for its step:
//! - `direct`: the OpenAI upstream itself;
//! - `nginx`: a plain streaming reverse proxy (`proxy_buffering off`, HTTP/1.1 upstream keep-alive,
//!   one worker);
//! - `sluice`: OpenAI client → OpenAI upstream, `--workers 1`;
//! - `sluice-xlate`: OpenAI client → Anthropic upstream (translated both ways), `--workers 1`;
//! - `sluice-redis`: as `sluice`, with a tenant `tokens_per_minute` limit (never refusing) kept in
//!   a local `redis-server`, so each stream is reserved at admission and reconciled at its end.
//!
//! Per target and step: streams completed / failed; time to first token (first `data:` with content)
//! p50/p99 and the added p50/p99 vs `direct`; the largest gap between two chunks of a stream (p99) and
//! its increase vs `direct`; the proxy's RSS per open stream ((RSS with all streams open − idle RSS
//! before) / streams, VmRSS, nginx master + worker); the proxy's CPU seconds per 1,000 chunks delivered
//! (utime + stime); then Sluice's figures as ratios of nginx's. The machine's load average is printed
//! with every step: on a shared 2-core machine the client, the upstream and the proxy compete for it.
//!
//! `cargo bench --bench streams` (needs `nginx`; `redis-server` for `sluice-redis`). Env:
//! STREAM_STEPS (default "1000,5000,10000"), STREAM_TOKENS (per stream, default 600), STREAM_RATE
//! (tokens/s per stream, default 20: 30 s streams), STREAM_RAMP (new streams per second, default
//! 2000), STREAM_CLIENT_THREADS (client runtime threads, default 1), STREAM_TARGETS (comma-separated
//! subset of the targets above, default all), STREAM_H2 (streams per client connection over HTTP/2
//! with prior knowledge, e.g. 100: the proxy then holds N upstream sockets and only N/100 client ones,
//! so 10,000 streams fit under a 20,000 open-file limit; default 0, one HTTP/1.1 connection per stream),
//! STREAM_SHAPING (a `shaping:` section for the Sluice
//! targets in YAML flow style, e.g. `{ congestion: { enabled: false } }`; default none). Quick run:
//! `STREAM_STEPS=1000 STREAM_TOKENS=100 cargo bench --bench streams`.
//!
//! Limits of the set-up: a proxy holding N streams needs about 2N + 64 open files (the benchmark raises
//! its limits, inherited by every child, as far as it may: the hard limit only with
//! CAP_SYS_RESOURCE, which a container may withhold even from root; it warns below that, and a step
//! larger than the limit allows fails with `connect` or `EMFILE` errors in every proxy alike);
//! every hop carries N × STREAM_RATE chunks/s, so on a small machine the client and the upstream
//! saturate too (a stream that times out keeps what it saw, and is counted failed). The Sluice targets
//! run with the default shaping (adaptive concurrency limit, `max_queue` 16384, `max_wait_ms` 10 s):
//! when time to first token rises under CPU contention the limit stops growing and the surplus is
//! shed with 503 (`shed_queue_full`, `shed_max_wait`), which the error lines name.

mod common;
#[path = "../support/mod.rs"]
mod support;

use common::{Kill, need, wait_port};
use support::redis::RedisServer;
use support::{Proc, free_port};

use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK`).
const CLK_TCK: f64 = 100.0;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
struct Settings {
    steps: Vec<usize>,
    tokens: u32,
    rate: f64,
    ramp: f64,
    threads: usize,
    targets: Vec<String>,
    /// Streams per client connection over HTTP/2 (prior knowledge); 0: one HTTP/1.1 connection each.
    h2: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let list = |name: &str, default: &str| -> Vec<String> {
            env(name, default.to_string())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Settings {
            steps: list("STREAM_STEPS", "1000,5000,10000")
                .iter()
                .map(|s| s.parse().expect("STREAM_STEPS: numbers"))
                .collect(),
            tokens: env("STREAM_TOKENS", 600),
            rate: env("STREAM_RATE", 20.0),
            ramp: env("STREAM_RAMP", 2000.0),
            threads: env("STREAM_CLIENT_THREADS", 1),
            h2: env("STREAM_H2", 0),
            targets: list(
                "STREAM_TARGETS",
                "direct,nginx,sluice,sluice-xlate,sluice-redis",
            ),
        }
    }

    fn stream_secs(&self) -> f64 {
        self.tokens as f64 / self.rate
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: the upstreams, the proxies, and what /proc says about them.

/// Raise this process's open-file limit (inherited by every child: upstream, proxies) so that a
/// proxy holding 10,000 client and 10,000 upstream sockets fits. Root may raise the hard limit too.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let up = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &up) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// `pid` and its direct children (nginx: the master and its workers).
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// The fields of /proc/PID/stat after the command name: [0] state, [1] ppid, … [11] utime, [12] stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// User + system CPU time of the processes, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| stat_fields(*p))
        .map(|f| f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0))
        .sum()
}

/// Resident memory of the processes, in KiB.
fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A proxy (or the upstream itself) the clients stream through.
struct Target {
    name: &'static str,
    port: u16,
    /// The process measured (`None` for `direct`: nothing in between).
    pid: Option<u32>,
    /// Where the proxy logs its errors.
    log: Option<PathBuf>,
    _running: Running,
}

#[allow(dead_code)] // held only to stop the process on drop
enum Running {
    None,
    Nginx(Kill),
    Sluice(Proc),
}

fn port_of(p: &Proc) -> u16 {
    p.addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn upstream(protocol: &str, s: &Settings) -> Proc {
    let rate = s.rate.to_string();
    let tokens = s.tokens.to_string();
    let extra = ["--tokens-per-sec", &rate, "--output-tokens", &tokens];
    support::mock(protocol, &format!("{protocol}-sim"), &extra)
}

/// nginx, one worker, streaming `port` → `up` without buffering, upstream keep-alive.
fn start_nginx(dir: &Path, up: u16, h2: bool) -> Target {
    let port = free_port();
    let http2 = if h2 {
        " http2; http2_max_concurrent_streams 1000"
    } else {
        ""
    };
    let conf = format!(
        r#"worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 40000; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream sim {{ server 127.0.0.1:{up}; keepalive 1024; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096{http2};
    location / {{
      proxy_pass http://sim; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_read_timeout 300s;
    }}
  }}
}}
"#,
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .args(["-c", path.to_str().unwrap(), "-g", "daemon off;"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let pid = child.id();
    let running = Running::Nginx(Kill(child));
    wait_port(port);
    Target {
        name: "nginx",
        port,
        pid: Some(pid),
        log: Some(dir.join("error.log")),
        _running: running,
    }
}

/// The gateway config of a Sluice target: one backend, one tenant, maybe a Redis-kept token limit.
fn sluice_config(backend: &Proc, protocol: &str, redis: Option<&RedisServer>) -> String {
    let b = support::backend("sim", backend, protocol, "");
    // Empty counts as unset (the default shaping), as it does for the other variables.
    let shaping = std::env::var("STREAM_SHAPING")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| format!("shaping: {v}\n"))
        .unwrap_or_default();
    let Some(redis) = redis else {
        return format!(
            "backends:\n{b}tenants:\n  - {{ id: bench, keys: [sk-bench] }}\nrouting: {{}}\n{shaping}"
        );
    };
    let gossip = free_port();
    format!(
        "backends:\n{b}tenants:\n  - {{ id: bench, keys: [sk-bench], limits: {{ tokens_per_minute: 100000000000 }} }}\nrouting: {{}}\n{shaping}cluster:\n  cluster_id: bench\n  gossip_listen: 127.0.0.1:{gossip}\n  seeds: [127.0.0.1:{gossip}]\n  insecure: true\n  redis: {{ url: \"{}\" }}\n",
        redis.url()
    )
}

fn start_sluice(name: &'static str, config: &str) -> Target {
    let p = support::gateway_env(config, &[("RUST_LOG", "warn"), ("SLUICE_WORKERS", "1")]);
    Target {
        name,
        port: port_of(&p),
        pid: Some(p.child.id()),
        log: Some(p.log.clone()),
        _running: Running::Sluice(p),
    }
}

/// The upstreams and Redis, alive for the whole run; proxies are started per step from them.
struct Upstreams {
    openai: Proc,
    anthropic: Proc,
    redis: Option<RedisServer>,
    dir: PathBuf,
    /// Whether clients speak HTTP/2 (nginx then listens for it).
    h2: bool,
}

impl Upstreams {
    fn target(&self, name: &str) -> Option<Target> {
        let openai = &self.openai;
        Some(match name {
            "direct" => Target {
                name: "direct",
                port: port_of(openai),
                pid: None,
                log: None,
                _running: Running::None,
            },
            "nginx" => {
                let dir = self.dir.join(format!("nginx-{}", free_port()));
                std::fs::create_dir_all(&dir).unwrap();
                start_nginx(&dir, port_of(openai), self.h2)
            }
            "sluice" => start_sluice("sluice", &sluice_config(openai, "openai", None)),
            "sluice-xlate" => start_sluice(
                "sluice-xlate",
                &sluice_config(&self.anthropic, "anthropic", None),
            ),
            "sluice-redis" => start_sluice(
                "sluice-redis",
                &sluice_config(openai, "openai", Some(self.redis.as_ref()?)),
            ),
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The client: one HTTP/1.1 connection per stream, a chunked decoder and an SSE line reader.

/// What one stream saw.
#[derive(Default)]
struct Outcome {
    error: Option<String>,
    ttft: Option<Duration>,
    max_gap: Duration,
    chunks: u64,
}

/// `Transfer-Encoding: chunked`, decoded as bytes arrive.
enum Chunked {
    Size,
    Data(usize),
    Crlf,
    Done,
}

impl Chunked {
    /// Move the payload bytes available in `raw` to `out`; `Err` on a malformed chunk header.
    fn feed(&mut self, raw: &mut BytesMut, out: &mut Vec<u8>) -> Result<(), String> {
        loop {
            match *self {
                Chunked::Done => return Ok(()),
                Chunked::Size => {
                    let Some(end) = memchr::memmem::find(raw, b"\r\n") else {
                        return Ok(());
                    };
                    let line = std::str::from_utf8(&raw[..end]).map_err(|e| e.to_string())?;
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let n = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size {line:?}"))?;
                    raw.advance(end + 2);
                    *self = if n == 0 {
                        Chunked::Done
                    } else {
                        Chunked::Data(n)
                    };
                }
                Chunked::Data(left) => {
                    let n = left.min(raw.len());
                    if n == 0 {
                        return Ok(());
                    }
                    out.extend_from_slice(&raw[..n]);
                    raw.advance(n);
                    *self = if n == left {
                        Chunked::Crlf
                    } else {
                        Chunked::Data(left - n)
                    };
                }
                Chunked::Crlf => {
                    if raw.len() < 2 {
                        return Ok(());
                    }
                    raw.advance(2);
                    *self = Chunked::Size;
                }
            }
        }
    }
}

/// The SSE events of one stream, as lines complete.
struct Sse {
    start: Instant,
    last: Option<Instant>,
    done: bool,
    out: Outcome,
}

impl Sse {
    /// A stream starting now.
    fn new() -> Sse {
        Sse {
            start: Instant::now(),
            last: None,
            done: false,
            out: Outcome::default(),
        }
    }

    /// What the stream saw, given how reading it ended; it no longer counts as open.
    fn finish(self, result: Result<(), String>, open: &AtomicUsize) -> Outcome {
        if self.out.ttft.is_some() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
        let mut out = self.out;
        if let Err(e) = result {
            out.error.get_or_insert(e);
        } else if !self.done {
            out.error.get_or_insert("no [DONE]".into());
        }
        out
    }

    /// Take every complete line out of `buf` (the partial last one stays), timing `data:` lines at `now`.
    fn lines(&mut self, buf: &mut Vec<u8>, now: Instant, open: &AtomicUsize) {
        let mut used = 0;
        while let Some(i) = memchr::memchr(b'\n', &buf[used..]) {
            let line = &buf[used..used + i];
            used += i + 1;
            if let Some(data) = line.strip_prefix(b"data:") {
                self.event(data.trim_ascii(), now, open);
            }
        }
        buf.drain(..used);
    }

    fn event(&mut self, data: &[u8], now: Instant, open: &AtomicUsize) {
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        if memchr::memmem::find(data, b"\"error\"").is_some() && self.out.error.is_none() {
            self.out.error = Some("error event".into());
        }
        self.out.chunks += 1;
        if let Some(last) = self.last {
            self.out.max_gap = self.out.max_gap.max(now - last);
        }
        self.last = Some(now);
        let content = memchr::memmem::find(data, b"\"content\":\"").is_some()
            && memchr::memmem::find(data, b"\"content\":\"\"").is_none();
        if content && self.out.ttft.is_none() {
            self.out.ttft = Some(now - self.start);
            open.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The status and whether the body is chunked, once the head is whole (it is then taken out of `raw`).
fn head(raw: &mut BytesMut) -> Result<Option<(u16, bool)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(raw).map_err(|e| e.to_string())? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(n) => {
            let chunked = resp.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    && String::from_utf8_lossy(h.value).contains("chunked")
            });
            let status = resp.code.unwrap_or(0);
            raw.advance(n);
            Ok(Some((status, chunked)))
        }
    }
}

/// One streaming request on its own connection, read to the end or for at most `limit` (what it saw
/// until then is kept).
async fn stream_once(
    port: u16,
    request: Arc<[u8]>,
    open: Arc<AtomicUsize>,
    limit: Duration,
) -> Outcome {
    let mut sse = Sse::new();
    let result = tokio::time::timeout(limit, read_stream(port, &request, &mut sse, &open))
        .await
        .unwrap_or_else(|_| {
            let when = if sse.out.ttft.is_some() {
                "after"
            } else {
                "before"
            };
            Err(format!("timed out {when} the first token"))
        });
    sse.finish(result, &open)
}

async fn read_stream(
    port: u16,
    request: &[u8],
    sse: &mut Sse,
    open: &AtomicUsize,
) -> Result<(), String> {
    let mut sock = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    sock.set_nodelay(true).ok();
    sock.write_all(request)
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut raw = BytesMut::with_capacity(4096);
    let mut body = Vec::with_capacity(1024);
    let mut chunked = None;
    loop {
        let n = sock
            .read_buf(&mut raw)
            .await
            .map_err(|e| format!("read: {}", e.kind()))?;
        let now = Instant::now();
        if chunked.is_none() {
            match head(&mut raw)? {
                None if n == 0 => return Err("closed before the head".into()),
                None => continue,
                Some((200, true)) => chunked = Some(Chunked::Size),
                Some((200, false)) => return Err("200 not chunked".into()),
                Some((status, _)) => return Err(refusal(status, &raw)),
            }
        }
        let dec = chunked.as_mut().unwrap();
        dec.feed(&mut raw, &mut body)?;
        sse.lines(&mut body, now, open);
        if matches!(dec, Chunked::Done) {
            return Ok(());
        }
        if n == 0 {
            return Err("closed mid-body".into());
        }
    }
}

/// A client HTTP/2 connection (prior knowledge) shared by several streams, or why it failed.
type H2 =
    Result<hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>, String>;

async fn h2_connect(port: u16) -> H2 {
    let sock = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    sock.set_nodelay(true).ok();
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake(hyper_util::rt::TokioIo::new(sock))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

/// One streaming request on a shared HTTP/2 connection, as [`stream_once`].
async fn h2_stream_once(conn: H2, tokens: u32, open: Arc<AtomicUsize>, limit: Duration) -> Outcome {
    let mut sse = Sse::new();
    let result = match conn {
        Err(e) => Err(e),
        Ok(send) => tokio::time::timeout(limit, h2_read_stream(send, tokens, &mut sse, &open))
            .await
            .unwrap_or_else(|_| Err("timed out".into())),
    };
    sse.finish(result, &open)
}

async fn h2_read_stream(
    mut send: hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    tokens: u32,
    sse: &mut Sse,
    open: &AtomicUsize,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    let body = request_json(tokens);
    let req = hyper::Request::post("http://127.0.0.1/v1/chat/completions")
        .header("authorization", "Bearer sk-bench")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    send.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("h2 send: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut buf = Vec::with_capacity(1024);
    if status != 200 {
        let b = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(refusal(status, &b));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("h2 body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            sse.lines(&mut buf, Instant::now(), open);
        }
    }
    Ok(())
}

/// A non-200 answer: its status and the start of its body as far as it has arrived (the reason a
/// proxy gives), digits blanked so that refusals differing only in numbers count together.
fn refusal(status: u16, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(&body[..body.len().min(160)])
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    format!("status {status} {text}")
}

/// The streamed chat request every client sends.
fn request_json(tokens: u32) -> String {
    format!(
        r#"{{"model":"gpt-4o-mini","stream":true,"max_tokens":{tokens},"messages":[{{"role":"user","content":"Tell me a long story."}}]}}"#
    )
}

fn request_bytes(tokens: u32) -> Arc<[u8]> {
    let body = request_json(tokens);
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}

// ---------------------------------------------------------------------------------------------
// One phase: N streams through one target, with the proxy's memory and CPU around it.

struct Phase {
    ok: usize,
    errors: HashMap<String, usize>,
    ttft_ms: Vec<f64>,
    gap_ms: Vec<f64>,
    chunks: u64,
    /// (idle, with every stream open) KiB, and how many were open then.
    rss: Option<(u64, u64, usize)>,
    cpu_ticks: Option<u64>,
}

/// Samples the proxy's RSS every 200 ms until stopped: the largest seen while at least 95% of the
/// streams were open (else the largest at all), with the open count then.
fn sample_rss(pid: u32, n: usize, open: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> (u64, usize) {
    let (mut full, mut any) = ((0, 0), (0, 0));
    while !stop.load(Ordering::Relaxed) {
        let rss = rss_kib(&tree(pid));
        let o = open.load(Ordering::Relaxed);
        if o * 100 >= n * 95 && rss > full.0 {
            full = (rss, o);
        }
        if (o, rss) > (any.1, any.0) {
            any = (rss, o);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if full.0 > 0 { full } else { any }
}

async fn clients(port: u16, n: usize, s: &Settings, open: Arc<AtomicUsize>) -> Vec<Outcome> {
    let request = request_bytes(s.tokens);
    let limit = Duration::from_secs_f64(s.stream_secs() * 2.0 + 30.0);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut conn: Option<H2> = None;
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / s.ramp)).await;
        let open = open.clone();
        if s.h2 > 0 {
            if i % s.h2 == 0 {
                conn = Some(h2_connect(port).await);
            }
            let c = conn.clone().expect("a connection");
            tasks.push(tokio::spawn(h2_stream_once(c, s.tokens, open, limit)));
        } else {
            let request = request.clone();
            tasks.push(tokio::spawn(stream_once(port, request, open, limit)));
        }
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn warm_up(rt: &tokio::runtime::Runtime, port: u16, h2: bool) {
    let open = Arc::new(AtomicUsize::new(0));
    let limit = Duration::from_secs(30);
    let outcomes = rt.block_on(async {
        if h2 {
            let conn = h2_connect(port).await;
            let reqs = (0..8).map(|_| h2_stream_once(conn.clone(), 3, open.clone(), limit));
            futures_util::future::join_all(reqs).await
        } else {
            let reqs = (0..8).map(|_| stream_once(port, request_bytes(3), open.clone(), limit));
            futures_util::future::join_all(reqs).await
        }
    });
    for o in outcomes {
        if let Some(e) = o.error {
            eprintln!("warm-up failed on port {port}: {e}");
        }
    }
}

fn run_phase(rt: &tokio::runtime::Runtime, t: &Target, n: usize, s: &Settings) -> Phase {
    warm_up(rt, t.port, s.h2 > 0);
    let idle = t.pid.map(|p| rss_kib(&tree(p)));
    let cpu0 = t.pid.map(|p| cpu_ticks(&tree(p)));
    let open = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = t.pid.map(|pid| {
        let (open, stop) = (open.clone(), stop.clone());
        std::thread::spawn(move || sample_rss(pid, n, open, stop))
    });
    let outcomes = rt.block_on(clients(t.port, n, s, open));
    stop.store(true, Ordering::Relaxed);
    let full = sampler.map(|h| h.join().unwrap());
    let cpu = t.pid.zip(cpu0).map(|(p, c0)| cpu_ticks(&tree(p)) - c0);
    summarize(outcomes, idle.zip(full).map(|(i, (f, o))| (i, f, o)), cpu)
}

fn summarize(outcomes: Vec<Outcome>, rss: Option<(u64, u64, usize)>, cpu: Option<u64>) -> Phase {
    let mut p = Phase {
        ok: 0,
        errors: HashMap::new(),
        ttft_ms: Vec::new(),
        gap_ms: Vec::new(),
        chunks: 0,
        rss,
        cpu_ticks: cpu,
    };
    for o in outcomes {
        p.chunks += o.chunks;
        match o.error {
            Some(e) => *p.errors.entry(e).or_default() += 1,
            None => {
                p.ok += 1;
                p.ttft_ms.extend(o.ttft.map(|d| d.as_secs_f64() * 1e3));
                p.gap_ms.push(o.max_gap.as_secs_f64() * 1e3);
            }
        }
    }
    p.ttft_ms.sort_by(f64::total_cmp);
    p.gap_ms.sort_by(f64::total_cmp);
    p
}

// ---------------------------------------------------------------------------------------------
// Report.

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

impl Phase {
    fn errors_total(&self) -> usize {
        self.errors.values().sum()
    }
    /// KiB per open stream.
    fn rss_per_stream(&self) -> Option<f64> {
        self.rss
            .map(|(idle, full, open)| (full as f64 - idle as f64) / open.max(1) as f64)
    }
    /// CPU seconds per 1,000 chunks delivered.
    fn cpu_per_1k(&self) -> Option<f64> {
        self.cpu_ticks
            .filter(|_| self.chunks > 0)
            .map(|t| t as f64 / CLK_TCK / (self.chunks as f64 / 1000.0))
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

fn print_step(results: &[(&str, Phase, Option<PathBuf>)]) {
    let direct = results.iter().find(|(name, ..)| *name == "direct");
    let base = |f: fn(&Phase) -> f64| direct.map_or(f64::NAN, |(_, p, _)| f(p));
    let (d50, d99, dgap) = (
        base(|p| pct(&p.ttft_ms, 0.5)),
        base(|p| pct(&p.ttft_ms, 0.99)),
        base(|p| pct(&p.gap_ms, 0.99)),
    );
    println!(
        "  {:<13} {:>6} {:>5} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>10} {:>10} {:>10} {:>9}",
        "target",
        "ok",
        "err",
        "ttft p50",
        "ttft p99",
        "+p50",
        "+p99",
        "gap p99",
        "+gap p99",
        "idle KiB",
        "open KiB",
        "KiB/strm",
        "cpu s/1k"
    );
    for (name, p, _) in results {
        let (t50, t99, g99) = (
            pct(&p.ttft_ms, 0.5),
            pct(&p.ttft_ms, 0.99),
            pct(&p.gap_ms, 0.99),
        );
        println!(
            "  {:<13} {:>6} {:>5} {:>7.1}ms {:>7.1}ms {:>+8.1} {:>+8.1} {:>7.1}ms {:>+8.1} {:>10} {:>10} {:>10} {:>9}",
            name,
            p.ok,
            p.errors_total(),
            t50,
            t99,
            t50 - d50,
            t99 - d99,
            g99,
            g99 - dgap,
            p.rss.map_or("-".into(), |r| r.0.to_string()),
            p.rss
                .map_or("-".into(), |r| format!("{} ({} open)", r.1, r.2)),
            opt(p.rss_per_stream(), 1),
            opt(p.cpu_per_1k(), 4),
        );
    }
    print_errors(results);
    print_ratios(results, (d50, d99, dgap));
}

fn print_errors(results: &[(&str, Phase, Option<PathBuf>)]) {
    for (name, p, log) in results {
        if p.errors.is_empty() {
            continue;
        }
        let mut errs: Vec<_> = p.errors.iter().collect();
        errs.sort_by(|a, b| b.1.cmp(a.1));
        let shown: Vec<String> = errs.iter().map(|(e, c)| format!("{c}× {e}")).collect();
        println!("  {name} errors: {}", shown.join(", "));
        if let Some(text) = log.as_ref().and_then(|l| std::fs::read_to_string(l).ok()) {
            let lines: Vec<&str> = text.lines().collect();
            for l in &lines[lines.len().saturating_sub(5)..] {
                println!("    log: {}", l.chars().take(300).collect::<String>());
            }
        }
    }
}

fn print_ratios(results: &[(&str, Phase, Option<PathBuf>)], d: (f64, f64, f64)) {
    let Some((_, nginx, _)) = results.iter().find(|(name, ..)| *name == "nginx") else {
        return;
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    };
    let added = |p: &Phase| {
        (
            pct(&p.ttft_ms, 0.5) - d.0,
            pct(&p.ttft_ms, 0.99) - d.1,
            pct(&p.gap_ms, 0.99) - d.2,
        )
    };
    let na = added(nginx);
    for (name, p, _) in results.iter().filter(|(n, ..)| n.starts_with("sluice")) {
        let a = added(p);
        println!(
            "  {name} / nginx: +ttft p50 {} p99 {}, +gap p99 {}, KiB/stream {}, cpu/1k chunks {}",
            ratio(Some(a.0), Some(na.0)),
            ratio(Some(a.1), Some(na.1)),
            ratio(Some(a.2), Some(na.2)),
            ratio(p.rss_per_stream(), nginx.rss_per_stream()),
            ratio(p.cpu_per_1k(), nginx.cpu_per_1k()),
        );
    }
}

fn main() {
    if !need("nginx") {
        eprintln!("skipped: the streams benchmark needs nginx (apt-get install nginx-light)");
        return;
    }
    let s = Settings::from_env();
    let nofile = raise_nofile(65536);
    let largest = s.steps.iter().max().copied().unwrap_or(0) as u64;
    let client_fds = if s.h2 > 0 {
        largest.div_ceil(s.h2 as u64)
    } else {
        largest
    };
    let need_fds = largest + client_fds + 64;
    if nofile < need_fds {
        println!(
            "warning: open-file limit {nofile} (the hard limit; raising it needs CAP_SYS_RESOURCE) < {need_fds}, what a proxy holding the largest step's client and upstream sockets needs: at most about {} streams fit",
            nofile.saturating_sub(64) / 2
        );
    }
    let dir = std::env::temp_dir().join(format!("sluice-streams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ups = Upstreams {
        openai: upstream("openai", &s),
        anthropic: upstream("anthropic", &s),
        redis: need("redis-server").then(RedisServer::start),
        dir: dir.clone(),
        h2: s.h2 > 0,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.threads)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "streams: {} tokens at {}/s ({:.0} s each), ramp {}/s, client threads {}, nofile {nofile}, clients {}",
        s.tokens,
        s.rate,
        s.stream_secs(),
        s.ramp,
        s.threads,
        if s.h2 > 0 {
            format!("HTTP/2, {} streams per connection", s.h2)
        } else {
            "HTTP/1.1, one connection per stream".into()
        }
    );
    for &n in &s.steps {
        println!("step {n} concurrent streams (load average {})", loadavg());
        let mut results = Vec::new();
        for name in &s.targets {
            let Some(t) = ups.target(name) else {
                println!("  {name}: skipped (unknown, or redis-server missing)");
                continue;
            };
            let p = run_phase(&rt, &t, n, &s);
            results.push((t.name, p, t.log.clone()));
        }
        print_step(&results);
        println!("  load average after the step: {}", loadavg());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
