//! Which Redis the cluster limiter talks to (`cluster.redis.mode`): one server, a Redis Cluster (the
//! client sends each script call to the shard serving its tenant's hash slot and follows MOVED/ASK),
//! or the primary the sentinels name (asked again on every reconnect, so a failover is followed).
//! [`Connector`] opens a [`Conn`]; `crate::hash::redis_slot` says which hash slot a key lives in.

use super::setup::RedisLimitError;
use crate::config::{RedisConfig, RedisMode};
use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionAddr, IntoConnectionInfo,
    Pipeline, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the Redis that holds the buckets.
pub(super) enum Connector {
    Single(Client),
    /// The cluster client; it keeps its connections to every shard and its slot map itself.
    Cluster(::redis::cluster::ClusterClient),
    /// Asked for the current primary on every connect (only the supervisor connects).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A connection to the Redis of any mode (cheap to clone: shared by the request path).
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Connector {
    /// The client of the configured mode, with TLS (CA file, client certificate) where the URLs ask
    /// for it. Nothing is contacted here.
    pub(super) fn new(cfg: &RedisConfig, timeout: Duration) -> Result<Connector, RedisLimitError> {
        let certs = certificates(cfg)?;
        match cfg.mode {
            RedisMode::Single => {
                let url = cfg.url.as_str();
                match certs {
                    Some(c) => Client::build_with_tls(url, c),
                    None => Client::open(url),
                }
                .map(Connector::Single)
                .map_err(RedisLimitError::Url)
            }
            RedisMode::Cluster => {
                // One retry per call follows a MOVED or ASK; the per-call budget bounds the rest.
                let mut b = ClusterClientBuilder::new(cfg.nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(1)
                    .max_retry_wait(10);
                if let Some(c) = certs {
                    b = b.certs(c);
                }
                b.build()
                    .map(Connector::Cluster)
                    .map_err(RedisLimitError::Nodes)
            }
            RedisMode::Sentinel => sentinel(cfg, certs)
                .map(|c| Connector::Sentinel(tokio::sync::Mutex::new(c)))
                .map_err(RedisLimitError::Sentinels),
        }
    }

    /// Whether tenants may be served by different servers (Redis Cluster): then each hash slot
    /// gets its own breaker and fallback.
    pub(super) fn sharded(&self) -> bool {
        matches!(self, Connector::Cluster(_))
    }

    /// Connect (for Sentinel: to the primary the sentinels name now), each step within `timeout`.
    pub(super) async fn open(&self, timeout: Duration) -> RedisResult<Conn> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        match self {
            Connector::Single(c) => c
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map(Conn::Single),
            Connector::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
            Connector::Sentinel(s) => s
                .lock()
                .await
                .get_async_connection_with_config(&cfg)
                .await
                .map(Conn::Single),
        }
    }
}

/// The sentinels, and the primary they name reached with the same user, password and TLS.
fn sentinel(cfg: &RedisConfig, certs: Option<TlsCertificates>) -> RedisResult<SentinelClient> {
    let infos = cfg
        .sentinels
        .iter()
        .map(|u| u.as_str().into_connection_info())
        .collect::<RedisResult<Vec<_>>>()?;
    let first = infos[0].clone();
    let tls = match first.addr() {
        ConnectionAddr::TcpTls { .. } => Some(TlsMode::Secure),
        _ => None,
    };
    let name = cfg.master_name.as_deref().unwrap_or_default();
    let addrs = infos.into_iter().map(|i| i.addr().clone());
    let mut b = SentinelClientBuilder::new(addrs, name, SentinelServerType::Master)?;
    let settings = first.redis_settings();
    if let Some(u) = settings.username() {
        b = b
            .set_client_to_sentinel_username(u)
            .set_client_to_redis_username(u);
    }
    if let Some(p) = settings.password() {
        b = b
            .set_client_to_sentinel_password(p)
            .set_client_to_redis_password(p);
    }
    if settings.db() != 0 {
        b = b.set_client_to_redis_db(settings.db());
    }
    if let Some(mode) = tls {
        b = b
            .set_client_to_sentinel_tls_mode(mode)
            .set_client_to_redis_tls_mode(mode);
    }
    if let Some(c) = certs {
        b = b
            .set_client_to_sentinel_certificates(c.clone())
            .set_client_to_redis_certificates(c);
    }
    b.build()
}

/// The CA and client certificate files, when the URLs ask for TLS and files are given (None: plain,
/// or TLS against the system roots).
fn certificates(cfg: &RedisConfig) -> Result<Option<TlsCertificates>, RedisLimitError> {
    let read = |field: &'static str, path: &Option<PathBuf>| {
        path.as_ref()
            .map(|p| {
                std::fs::read(p).map_err(|e| RedisLimitError::File {
                    field,
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    };
    let root_cert = read("ca_file", &cfg.ca_file)?;
    let cert = read("client_cert_file", &cfg.client_cert_file)?;
    let key = read("client_key_file", &cfg.client_key_file)?;
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    if !cfg.tls() || (root_cert.is_none() && client_tls.is_none()) {
        return Ok(None);
    }
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}
