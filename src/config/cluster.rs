//! `cluster:` gossip membership (chitchat) and the shared Redis store for global limits.
//! Absent: a single node with local limits.

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Nodes only talk to nodes with the same cluster id.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: String,
    /// UDP address gossip listens on.
    #[serde(default = "default_gossip_listen")]
    pub gossip_listen: String,
    /// Address other nodes reach this one at (`host:port`; DNS names allowed). Default: gossip_listen.
    #[serde(default)]
    pub advertise: Option<String>,
    /// `host:port` of other nodes (DNS names are re-resolved, so service names work).
    #[serde(default)]
    pub seeds: Vec<String>,
    #[serde(default = "default_gossip_interval")]
    pub gossip_interval_ms: u64,
    /// A node silent this long is considered dead (phi-accrual detector tuned to about this).
    #[serde(default = "default_dead_after")]
    pub dead_after_ms: u64,
    /// Env var holding the gossip keys: one or more comma-separated 32-byte keys (base64 or hex).
    /// The first seals every packet, all open (rotation: `new,old`, then `new`).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Gossip in plaintext, unauthenticated: only on a network no stranger can send to. Without a
    /// key, cluster mode refuses to start unless this is set.
    #[serde(default)]
    pub insecure: bool,
    /// No cooldown (a 429's `Retry-After`, local or from a peer) runs longer than this.
    #[serde(default = "default_max_cooldown")]
    pub max_cooldown_ms: u64,
    /// Global limits in Redis; without it, limits are per node.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// How Redis is deployed: one server (`single`, the default), a Redis Cluster (`cluster`, with
    /// `nodes`), or a primary watched by Sentinel (`sentinel`, with `sentinels` and `master_name`).
    #[serde(default)]
    pub mode: RedisMode,
    /// `single`: `redis://[user:password@]host:port[/db]` (an ACL user and its password, or
    /// `:password` for `requirepass`); `rediss://` for TLS.
    #[serde(default)]
    pub url: String,
    /// `cluster`: seed nodes, each a URL like `url` (same scheme and credentials for all; the client
    /// discovers the other nodes and follows MOVED/ASK).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// `sentinel`: the sentinels, each a URL like `url`; their user, password and TLS apply to the
    /// sentinels and to the primary they name.
    #[serde(default)]
    pub sentinels: Vec<String>,
    /// `sentinel`: the name the sentinels monitor the primary under.
    #[serde(default)]
    pub master_name: Option<String>,
    /// Per-call budget; past it the call counts as a failure and the local fallback decides.
    #[serde(default = "default_redis_timeout")]
    pub timeout_ms: u64,
    /// Consecutive failures that open the circuit breaker (no Redis calls while open).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through.
    #[serde(default = "default_breaker_open")]
    pub breaker_open_ms: u64,
    /// Key prefix, so several clusters can share one Redis without sharing buckets. Default (empty):
    /// the cluster id.
    #[serde(default)]
    pub key_prefix: String,
    /// With `rediss://`: PEM CA certificate(s) the server's certificate must chain to (default: the
    /// system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// With `rediss://`: PEM client certificate for servers that ask for one (`tls-auth-clients`);
    /// goes with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl RedisConfig {
    /// A plain config for `url` with the defaults a config file would get (prefix `sluice`).
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            mode: RedisMode::Single,
            url: url.into(),
            nodes: Vec::new(),
            sentinels: Vec::new(),
            master_name: None,
            timeout_ms: default_redis_timeout(),
            breaker_failures: default_breaker_failures(),
            breaker_open_ms: default_breaker_open(),
            key_prefix: default_cluster_id(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }

    /// A Redis Cluster config for `nodes` (seed URLs).
    pub fn cluster(nodes: Vec<String>) -> RedisConfig {
        RedisConfig {
            mode: RedisMode::Cluster,
            nodes,
            ..RedisConfig::new("")
        }
    }

    /// A Sentinel config: the sentinels' URLs and the name of the primary they watch.
    pub fn sentinel(sentinels: Vec<String>, master_name: impl Into<String>) -> RedisConfig {
        RedisConfig {
            mode: RedisMode::Sentinel,
            sentinels,
            master_name: Some(master_name.into()),
            ..RedisConfig::new("")
        }
    }

    /// The URLs of the mode: `[url]`, the cluster's seed nodes or the sentinels.
    pub fn urls(&self) -> &[String] {
        match self.mode {
            RedisMode::Single => std::slice::from_ref(&self.url),
            RedisMode::Cluster => &self.nodes,
            RedisMode::Sentinel => &self.sentinels,
        }
    }

    /// Whether the URLs ask for TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.urls().iter().any(|u| u.starts_with("rediss://"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_topology()?;
        self.validate_limits()
    }

    /// The fields of the mode are set, the others not; every URL has the scheme of the first.
    fn validate_topology(&self) -> Result<(), ConfigError> {
        let (field, unused): (&str, [(&str, bool); 3]) = match self.mode {
            RedisMode::Single => (
                "url",
                [
                    ("nodes", !self.nodes.is_empty()),
                    ("sentinels", !self.sentinels.is_empty()),
                    ("master_name", self.master_name.is_some()),
                ],
            ),
            RedisMode::Cluster => (
                "nodes",
                [
                    ("url", !self.url.is_empty()),
                    ("sentinels", !self.sentinels.is_empty()),
                    ("master_name", self.master_name.is_some()),
                ],
            ),
            RedisMode::Sentinel => (
                "sentinels",
                [
                    ("url", !self.url.is_empty()),
                    ("nodes", !self.nodes.is_empty()),
                    ("master_name", false),
                ],
            ),
        };
        let mode = self.mode.as_str();
        if let Some((name, _)) = unused.iter().find(|(_, set)| *set) {
            return Err(ConfigError::invalid(
                format!("cluster.redis.{name}"),
                None,
                format!("not used with mode: {mode} (it takes `{field}`)"),
            ));
        }
        let urls = self.urls();
        if urls.is_empty() || urls.iter().any(|u| u.is_empty()) {
            return Err(ConfigError::invalid(
                format!("cluster.redis.{field}"),
                None,
                format!("mode: {mode} needs it"),
            ));
        }
        for (i, u) in urls.iter().enumerate() {
            let at = match self.mode {
                RedisMode::Single => format!("cluster.redis.{field}"),
                _ => format!("cluster.redis.{field}[{i}]"),
            };
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(ConfigError::invalid(
                    at,
                    None,
                    "must start with redis:// (or rediss:// for TLS)",
                ));
            }
            if u.starts_with("rediss://") != urls[0].starts_with("rediss://") {
                return Err(ConfigError::invalid(
                    at,
                    None,
                    "all URLs take the same scheme (redis:// or rediss://)",
                ));
            }
        }
        if self.mode == RedisMode::Sentinel && self.master_name.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::invalid(
                "cluster.redis.master_name",
                None,
                "mode: sentinel needs the name the sentinels monitor the primary under",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.timeout_ms == 0 || self.breaker_failures == 0 || self.breaker_open_ms == 0 {
            return Err(ConfigError::invalid(
                "cluster.redis",
                None,
                "timeout_ms, breaker_failures and breaker_open_ms must be above 0",
            ));
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::invalid(
                "cluster.redis.key_prefix",
                None,
                "must not contain `{` or `}` (the tenant is the hash tag)",
            ));
        }
        let files = [
            ("ca_file", &self.ca_file),
            ("client_cert_file", &self.client_cert_file),
            ("client_key_file", &self.client_key_file),
        ];
        for (name, file) in files {
            let Some(path) = file else { continue };
            if !self.tls() {
                return Err(ConfigError::invalid(
                    format!("cluster.redis.{name}"),
                    None,
                    "only with rediss:// URLs",
                ));
            }
            if !path.is_file() {
                return Err(ConfigError::invalid(
                    format!("cluster.redis.{name}"),
                    None,
                    format!("`{}` is not a readable file", path.display()),
                ));
            }
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(ConfigError::invalid(
                "cluster.redis.client_key_file",
                None,
                "client_cert_file and client_key_file go together",
            ));
        }
        Ok(())
    }
}

/// How Redis is deployed (`cluster.redis.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server at `url`.
    #[default]
    Single,
    /// A Redis Cluster reached through its seed `nodes`; each tenant's buckets live on the shard
    /// that serves its hash slot.
    Cluster,
    /// A primary (and replicas) watched by `sentinels`, followed across failovers.
    Sentinel,
}

impl RedisMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Single => "single",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

fn default_cluster_id() -> String {
    "sluice".into()
}
fn default_gossip_listen() -> String {
    "127.0.0.1:7946".into()
}
fn default_gossip_interval() -> u64 {
    300
}
fn default_dead_after() -> u64 {
    3_000
}
fn default_max_cooldown() -> u64 {
    120_000
}
fn default_redis_timeout() -> u64 {
    5
}
fn default_breaker_failures() -> u32 {
    3
}
fn default_breaker_open() -> u64 {
    500
}

impl ClusterConfig {
    /// Defaults that depend on other fields: the Redis key prefix is the cluster id unless set.
    pub(super) fn fill_defaults(&mut self) {
        if let Some(r) = &mut self.redis
            && r.key_prefix.is_empty()
        {
            r.key_prefix = self.cluster_id.clone();
        }
    }

    pub(super) fn validate(&self, env: &super::Env<'_>) -> Result<(), ConfigError> {
        match (&self.secret_env, self.insecure) {
            (Some(_), true) => {
                return Err(ConfigError::invalid(
                    "cluster.insecure",
                    None,
                    "insecure: true and a secret_env exclude each other",
                ));
            }
            (Some(name), false) if !env(name) => {
                return Err(ConfigError::invalid(
                    "cluster.secret_env",
                    None,
                    format!("environment variable `{name}` is not set (or empty)"),
                ));
            }
            (None, false) => {
                return Err(ConfigError::invalid(
                    "cluster.secret_env",
                    None,
                    "gossip needs a key (`openssl rand -base64 32` into an env var named here), or `insecure: true` on a private network",
                ));
            }
            _ => {}
        }
        if self.max_cooldown_ms == 0 {
            return Err(ConfigError::invalid(
                "cluster.max_cooldown_ms",
                None,
                "must be above 0",
            ));
        }
        if self.gossip_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "cluster.gossip_listen",
                None,
                "must be ip:port",
            ));
        }
        if self.gossip_interval_ms < 10 || self.dead_after_ms < self.gossip_interval_ms * 3 {
            return Err(ConfigError::invalid(
                "cluster.gossip_interval_ms",
                None,
                "gossip_interval_ms >= 10 and dead_after_ms >= 3 gossip intervals",
            ));
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if !s.contains(':') {
                return Err(ConfigError::invalid(
                    format!("cluster.seeds[{i}]"),
                    None,
                    "must be host:port",
                ));
            }
        }
        if let Some(r) = &self.redis {
            r.validate()?;
        }
        Ok(())
    }
}
