//! `admin:` the operator endpoints' own listener, off the public port if wanted.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` (port 0: a free port, printed at start) serving `/metrics`, `/admin/*`, `/healthz`
    /// and `/readyz` over plain HTTP. Set, the public listener serves only the API and
    /// `/healthz`/`/readyz` (for load balancers). Absent: everything on the public listener.
    #[serde(default)]
    pub listen: Option<String>,
}

impl AdminConfig {
    /// The admin listener's address, if one is configured.
    pub fn socket_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.listen
            .as_deref()
            .map(|a| {
                a.parse()
                    .map_err(|_| ConfigError::invalid("admin.listen", None, "must be ip:port"))
            })
            .transpose()
    }
}
