//! A real `redis-server` on a free loopback port, killed on drop (and killable/restartable mid-test).

use super::free_port;
use super::wait::poll_blocking;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const REDIS_SERVER: &str = "redis-server";

/// A `redis-server` child process on 127.0.0.1, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {REDIS_SERVER} ({e}); install it (bash tests/run.sh does)")
            });
        let mut server = RedisServer {
            child: Some(child),
            port,
        };
        poll_blocking(
            Duration::from_secs(10),
            "redis-server answering PING",
            || {
                if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("redis-server exited at start ({status}); port {port} taken?");
                }
                server.ping().then_some(())
            },
        );
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test redis")
    }

    pub fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut c).is_ok()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        // The shell's builtin `kill`: no procps needed on a minimal machine.
        let ok = Command::new("sh")
            .args(["-c", &format!("kill {sig} {pid}")])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
