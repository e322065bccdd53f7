//! A real `redis-server` on a free loopback port, killed on drop (and killable/restartable mid-test):
//! plain, with a `requirepass` and an ACL user ([`RedisServer::start_with_auth`]), or TLS only with
//! certificates made for the test ([`RedisServer::start_tls`]).

use super::free_port;
use super::wait::poll_blocking;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const REDIS_SERVER: &str = "redis-server";

/// The `requirepass` of [`RedisServer::start_with_auth`] (the `default` user's password).
pub const ADMIN_PASS: &str = "admin-pass";
/// The ACL user of [`RedisServer::start_with_auth`] and its password: only keys under `sluice:`,
/// `test-a:` and `test-b:`, and no dangerous commands.
pub const ACL_USER: &str = "gateway";
pub const ACL_PASS: &str = "gateway-pass";

/// A `redis-server` child process on 127.0.0.1, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// How the test itself connects (admin credentials, TLS roots and client certificate).
    client: redis::Client,
}

/// Certificates for a TLS test Redis, written to a temporary directory: a CA, a server certificate
/// for `127.0.0.1`/`localhost` and a client certificate, all signed by the CA.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let dir = super::tmp_dir();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sluice test ca");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        // Each its own subject: OpenSSL (the server's side) takes subject = issuer for self-signed.
        let leaf = |name: &str, sans: &[&str]| {
            let key = KeyPair::generate().unwrap();
            let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &ca).unwrap();
            let (c, k) = (
                dir.join(format!("{name}.crt")),
                dir.join(format!("{name}.key")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        };
        let (server_cert, server_key) = leaf("server", &["127.0.0.1", "localhost"]);
        let (client_cert, client_key) = leaf("client", &["sluice-client"]);
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        TlsFiles {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// A client trusting the CA and presenting the client certificate.
    pub fn client(&self, url: &str) -> redis::Client {
        let read = |p: &PathBuf| std::fs::read(p).unwrap();
        let certs = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(&self.client_cert),
                client_key: read(&self.client_key),
            }),
            root_cert: Some(read(&self.ca)),
        };
        redis::Client::build_with_tls(url, certs).unwrap()
    }
}

/// Whether this machine's `redis-server` was built with TLS (Debian's is).
pub fn has_tls() -> bool {
    let out = Command::new(REDIS_SERVER)
        .args([
            "--port",
            "0",
            "--tls-port",
            "1",
            "--tls-cert-file",
            "/nonexistent",
        ])
        .output();
    // Built without TLS, it refuses the option itself; with TLS it fails on the missing file.
    out.is_ok_and(|o| {
        let text = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
        !text.contains("not supported") && !text.contains("Bad directive")
    })
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        Self::launch(port, &[], client)
    }

    /// `requirepass` [`ADMIN_PASS`] and the ACL user [`ACL_USER`]; the test connects as `default`.
    pub fn start_with_auth() -> RedisServer {
        let port = free_port();
        let user = format!(">{ACL_PASS}");
        let args = [
            "--requirepass",
            ADMIN_PASS,
            "--user",
            ACL_USER,
            "on",
            &user,
            "~sluice:*",
            "~test-a:*",
            "~test-b:*",
            "+@all",
            "-@dangerous",
        ];
        let client =
            redis::Client::open(format!("redis://:{ADMIN_PASS}@127.0.0.1:{port}")).unwrap();
        Self::launch(port, &args, client)
    }

    /// TLS only (`--port 0 --tls-port P`), client certificates required.
    pub fn start_tls(tls: &TlsFiles) -> RedisServer {
        let port = free_port();
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let (cert, key, ca) = (path(&tls.server_cert), path(&tls.server_key), path(&tls.ca));
        let p = port.to_string();
        let args = [
            "--tls-port",
            &p,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "yes",
        ];
        let client = tls.client(&format!("rediss://127.0.0.1:{port}"));
        let mut server = Self::launch(0, &args, client);
        server.port = port;
        server
    }

    /// `redis-server` on `port` (0: no plain TCP port) with `extra` arguments; ready when `client`
    /// gets an answer to `PING`.
    fn launch(port: u16, extra: &[&str], client: redis::Client) -> RedisServer {
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
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
            client,
        };
        poll_blocking(
            Duration::from_secs(10),
            "redis-server answering PING",
            || {
                if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("redis-server {extra:?} exited at start ({status}); port {port} taken?");
                }
                server.ping().then_some(())
            },
        );
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis://USER:PASS@127.0.0.1:PORT` (an empty user: the `default` user).
    pub fn url_as(&self, user: &str, pass: &str) -> String {
        format!("redis://{user}:{pass}@127.0.0.1:{}", self.port)
    }

    /// A connection as the test (admin) user.
    pub fn connection(&self) -> redis::Connection {
        self.client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test redis")
    }

    pub fn ping(&self) -> bool {
        let Ok(mut c) = self
            .client
            .get_connection_with_timeout(Duration::from_millis(200))
        else {
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

// Redis Cluster and Sentinel topologies on loopback (tests/redis_topology.rs): each server a
// `redis-server` child in its own temporary directory, killed on drop.

/// A loopback port free for TCP whose cluster bus port (port + 10000) is free as well.
pub fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let p = free_port();
        if p < 55536 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
    panic!("no port below 55536 free with its cluster bus port");
}

/// One server of a test topology (a cluster node, a primary, a replica or a sentinel).
pub struct TopologyNode {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl TopologyNode {
    /// `redis-server [config] --port P --bind 127.0.0.1 --dir DIR ARGS`; ready when it answers PING.
    pub fn spawn(config: Option<&str>, port: u16, args: &[&str]) -> TopologyNode {
        let dir = super::tmp_dir();
        let mut cmd = Command::new(REDIS_SERVER);
        if let Some(text) = config {
            let path = dir.join("redis.conf");
            std::fs::write(&path, text).unwrap();
            cmd.arg(&path);
        }
        let child = cmd
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &dir.to_string_lossy()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {REDIS_SERVER} ({e}); install it (bash tests/run.sh does)")
            });
        let mut node = TopologyNode {
            child: Some(child),
            port,
            dir,
        };
        poll_blocking(Duration::from_secs(10), "redis node answering PING", || {
            if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server {args:?} on {port} exited at start ({status})");
            }
            node.query::<String>(&["PING"]).ok()
        });
        node
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command on a fresh connection (short timeouts: a dead node answers an error).
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut c = client.get_connection_with_timeout(Duration::from_millis(500))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TopologyNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
pub struct ClusterNodeView {
    pub port: u16,
    /// A primary not flagged as failed.
    pub primary: bool,
    /// The slot ranges it serves (inclusive).
    pub ranges: Vec<(u16, u16)>,
    pub id: String,
    /// For a replica, its primary's id (`-` for a primary).
    pub primary_id: String,
}

/// A Redis Cluster: `primaries` primaries with one replica each (`redis-cli --cluster create
/// --cluster-replicas 1`). Replicas fail over only when told ([`RedisCluster::take_over`]):
/// `cluster-replica-no-failover yes`, so a test sees the shard's outage before its replica takes
/// over. `cluster-require-full-coverage no`: the shards still up keep answering meanwhile.
pub struct RedisCluster {
    pub nodes: Vec<TopologyNode>,
}

impl RedisCluster {
    pub fn start(primaries: usize) -> RedisCluster {
        let nodes: Vec<TopologyNode> = (0..primaries * 2)
            .map(|_| {
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-require-full-coverage",
                    "no",
                    "--cluster-replica-no-failover",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ];
                TopologyNode::spawn(None, free_cluster_port(), &args)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}); bash tests/run.sh installs it")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Every running node says `cluster_state:ok` and sees every slot served by a live primary.
    pub fn wait_ok(&self) {
        poll_blocking(
            Duration::from_secs(30),
            "cluster_state:ok everywhere",
            || {
                self.nodes
                    .iter()
                    .filter(|n| n.running())
                    .all(|n| {
                        n.query::<String>(&["CLUSTER", "INFO"])
                            .is_ok_and(|i| i.contains("cluster_state:ok"))
                    })
                    .then_some(())
            },
        );
    }

    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(TopologyNode::url).collect()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let n = self.nodes.iter().find(|n| n.running()).expect("a node up");
        n.query::<i64>(&["CLUSTER", "KEYSLOT", key]).unwrap() as u16
    }

    /// `CLUSTER NODES` as a running node sees it.
    pub fn view(&self) -> Vec<ClusterNodeView> {
        let n = self.nodes.iter().find(|n| n.running()).expect("a node up");
        let text: String = n.query(&["CLUSTER", "NODES"]).unwrap();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let port = f.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                let flags: Vec<&str> = f[2].split(',').collect();
                let primary = flags.contains(&"master") && !flags.contains(&"fail");
                let ranges = f[8..]
                    .iter()
                    .filter(|r| !r.starts_with('['))
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some(ClusterNodeView {
                    port,
                    primary,
                    ranges,
                    id: f[0].to_string(),
                    primary_id: f[3].to_string(),
                })
            })
            .collect()
    }

    /// The port of the primary serving `slot`, as a running node sees it now.
    pub fn primary_of(&self, slot: u16) -> Option<u16> {
        self.view()
            .into_iter()
            .find(|n| n.primary && n.ranges.iter().any(|(a, b)| *a <= slot && slot <= *b))
            .map(|n| n.port)
    }

    /// The replica of the primary on `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let view = self.view();
        let id = &view
            .iter()
            .find(|v| v.port == port)
            .expect("primary known")
            .id;
        view.iter()
            .find(|v| &v.primary_id == id)
            .expect("a replica")
            .port
    }

    pub fn node(&mut self, port: u16) -> &mut TopologyNode {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// Move `slot` (and its keys) from its primary to the primary on `to`, the way resharding does:
    /// IMPORTING / MIGRATING, `MIGRATE` of its keys, then `SETSLOT NODE` on every primary.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self.primary_of(slot).expect("slot served");
        let view = self.view();
        let id = |port: u16| view.iter().find(|n| n.port == port).unwrap().id.clone();
        let (from_id, to_id) = (id(from), id(to));
        let node = |port: u16| self.nodes.iter().find(|n| n.port == port).unwrap();
        let s = slot.to_string();
        let ok = |r: redis::RedisResult<String>| r.expect("setslot");
        ok(node(to).query(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]));
        ok(node(from).query(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]));
        let keys: Vec<String> = node(from)
            .query(&["CLUSTER", "GETKEYSINSLOT", &s, "1000"])
            .unwrap();
        if !keys.is_empty() {
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            ok(node(from).query(&args));
        }
        for n in view.iter().filter(|n| n.primary) {
            ok(node(n.port).query(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]));
        }
        poll_blocking(
            Duration::from_secs(10),
            "every node sees the slot moved",
            || {
                self.nodes
                    .iter()
                    .filter(|n| n.running())
                    .all(|n| {
                        n.query::<Vec<redis::Value>>(&["CLUSTER", "SLOTS"]).is_ok()
                            && self.primary_of(slot) == Some(to)
                    })
                    .then_some(())
            },
        );
    }

    /// The replica on `port` takes over its (dead) primary's slots (`CLUSTER FAILOVER TAKEOVER`),
    /// and every running node sees the cluster whole again.
    pub fn take_over(&self, port: u16) {
        let n = self.nodes.iter().find(|n| n.port == port).unwrap();
        let _: String = n.query(&["CLUSTER", "FAILOVER", "TAKEOVER"]).unwrap();
        poll_blocking(
            Duration::from_secs(20),
            "the replica became primary",
            || {
                n.query::<String>(&["ROLE"])
                    .ok()
                    .or_else(|| {
                        n.query::<Vec<redis::Value>>(&["ROLE"])
                            .ok()
                            .and_then(|v| match v.first() {
                                Some(redis::Value::BulkString(b)) => {
                                    Some(String::from_utf8_lossy(b).into_owned())
                                }
                                _ => None,
                            })
                    })
                    .filter(|r| r == "master")
                    .map(|_| ())
            },
        );
        self.wait_ok();
    }
}

/// A primary, its replica and three sentinels watching it as [`SENTINEL_MASTER`] (quorum 2, down
/// after 1 s).
pub struct RedisSentinels {
    pub primary: TopologyNode,
    pub replica: TopologyNode,
    pub sentinels: Vec<TopologyNode>,
}

pub const SENTINEL_MASTER: &str = "sluice-primary";

impl RedisSentinels {
    pub fn start() -> RedisSentinels {
        let plain = ["--save", "", "--appendonly", "no"];
        let primary = TopologyNode::spawn(None, free_port(), &plain);
        let p = primary.port.to_string();
        let mut args = plain.to_vec();
        args.extend(["--replicaof", "127.0.0.1", &p]);
        let replica = TopologyNode::spawn(None, free_port(), &args);
        let conf = format!(
            "sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {p} 2\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
             sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
             sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
        );
        let sentinels = (0..3)
            .map(|_| TopologyNode::spawn(Some(&conf), free_port(), &["--sentinel"]))
            .collect();
        let s = RedisSentinels {
            primary,
            replica,
            sentinels,
        };
        poll_blocking(Duration::from_secs(20), "sentinels see the replica", || {
            s.sentinels
                .iter()
                .all(|n| {
                    n.query::<Vec<redis::Value>>(&["SENTINEL", "REPLICAS", SENTINEL_MASTER])
                        .is_ok_and(|r| !r.is_empty())
                })
                .then_some(())
        });
        s
    }

    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(TopologyNode::url).collect()
    }

    /// The primary's port as the first sentinel names it.
    pub fn primary_port(&self) -> Option<u16> {
        let a: Vec<String> = self.sentinels[0]
            .query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER])
            .ok()?;
        a.get(1)?.parse().ok()
    }
}
