//! `listen:` where Receive accepts connections, TLS, and request size limits.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// `host:port`; port 0 picks a free port (printed at start).
    #[serde(default = "default_address")]
    pub address: String,
    /// Terminate TLS here (HTTP/1.1 and HTTP/2 via ALPN).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
    /// On SIGTERM: answer `/readyz` with 503 this long before closing the listener, so a load
    /// balancer stops sending first; then in-flight requests drain.
    #[serde(default)]
    pub drain_grace_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_address() -> String {
    "127.0.0.1:8080".to_string()
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_max_header() -> usize {
    32 * 1024
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            address: default_address(),
            tls: None,
            max_body_bytes: default_max_body(),
            max_header_bytes: default_max_header(),
            drain_grace_ms: 0,
        }
    }
}

impl ListenConfig {
    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.address.parse().map_err(|_| {
            ConfigError::invalid(
                "listen.address",
                None,
                format!("`{}` is not host:port", self.address),
            )
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.socket_addr()?;
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "listen.max_body_bytes",
                None,
                "must be at least 1024",
            ));
        }
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::invalid(
                "listen.max_header_bytes",
                None,
                "must be at least 1024",
            ));
        }
        if let Some(tls) = &self.tls {
            for (field, p) in [("listen.tls.cert", &tls.cert), ("listen.tls.key", &tls.key)] {
                if !p.is_file() {
                    return Err(ConfigError::invalid(
                        field,
                        None,
                        format!("no file at `{}`", p.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}
