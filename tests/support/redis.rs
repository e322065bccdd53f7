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
