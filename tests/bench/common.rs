//! What the benchmarks share beyond `tests/support` (processes, ports, waits, `/metrics`): tool
//! checks, a wrk run, a median, a child process stopped on drop, a wait for a port.
// Each benchmark uses a part of these: the rest is unused there.
#![allow(dead_code)]

use crate::support::wait::{poll_blocking, try_poll_blocking};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process: SIGTERM on drop (nginx's master then stops its workers), SIGKILL if it lingers.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.0.id())])
            .status();
        let stopped = try_poll_blocking(Duration::from_secs(5), || {
            self.0.try_wait().ok().flatten().map(|_| ())
        });
        if stopped.is_some() {
            return;
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait (≤ 15 s) until something accepts connections on loopback `port`.
pub fn wait_port(port: u16) {
    poll_blocking(
        Duration::from_secs(15),
        &format!("port {port} open"),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
}

/// Whether `cmd` is on PATH.
pub fn need(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// wrk (1 thread, 32 connections) POSTing `body` with `key` to `addr`'s chat endpoint for `secs`:
/// requests/s. Any non-2xx answer fails the run.
pub fn wrk(dir: &std::path::Path, addr: &str, key: &str, body: &str, secs: u64) -> f64 {
    let script = dir.join(format!("{key}.lua"));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = [[{body}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {key}\"\n"
        ),
    )
    .unwrap();
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c32",
            &format!("-d{secs}s"),
            "-s",
            script.to_str().unwrap(),
        ])
        .arg(format!("http://{addr}/v1/chat/completions"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "errors during the run:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no wrk result:\n{text}"))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
