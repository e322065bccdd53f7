//! Building the cluster limiter from its config: the Redis client, the per-tenant plans, the
//! fallback, and the background tasks. Never touches Redis itself.

use super::breaker::Breaker;
use super::cluster_limiter::{ClusterLimiter, Inner};
use super::fallback::Fallback;
use super::local::Quotas;
use super::overlimit::OverLimitCache;
use super::plan::Plan;
use super::script::{ADJUST_LUA, RECONCILE_LUA, TOKEN_BUCKET_LUA};
use super::switch::{follow_nodes, supervise};
use crate::config::{RedisConfig, TenantConfig};
use crate::observe::Metrics;
use ::redis::{Client, ClientTlsConfig, RedisError, Script, TlsCertificates};
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};

#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    #[error("cluster.redis.url: {0}")]
    Url(#[source] RedisError),
    #[error("cluster.redis.{field}: cannot read `{path}`: {reason}")]
    File {
        field: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "the cluster limiter must be created inside a Tokio runtime (it runs background tasks)"
    )]
    NoRuntime,
}

impl ClusterLimiter {
    /// Never touches Redis here: starts in fallback mode and spawns (on the current Tokio runtime)
    /// the task that connects, probes and switches to global mode, and the task that re-divides the
    /// fallback when `live_nodes` changes.
    pub fn new(
        cfg: &RedisConfig,
        tenants: &[TenantConfig],
        live_nodes: watch::Receiver<usize>,
    ) -> Result<ClusterLimiter, RedisLimitError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RedisLimitError::NoRuntime)?;
        let client = client(cfg)?;
        let quotas: Vec<(String, Quotas)> = tenants
            .iter()
            .map(|t| (t.id.clone(), Quotas::of(t)))
            .collect();
        let plans = quotas
            .iter()
            .filter_map(|(id, q)| {
                Plan::new(&cfg.key_prefix, id, q).map(|p| (id.clone(), Arc::new(p)))
            })
            .collect();
        let mut live_nodes = live_nodes;
        let nodes = (*live_nodes.borrow_and_update()).max(1);
        let open_for = Duration::from_millis(cfg.breaker_open_ms.max(1));
        let inner = Arc::new(Inner {
            client,
            url: redact(&cfg.url),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            connect_timeout: open_for.clamp(Duration::from_millis(100), Duration::from_secs(2)),
            open_for,
            plans: ArcSwap::from_pointee(plans),
            key_prefix: cfg.key_prefix.clone(),
            conn: RwLock::new(None),
            breaker: Breaker::new(cfg.breaker_failures),
            opened: Notify::new(),
            fallback: Fallback::new(quotas, nodes),
            cache: OverLimitCache::default(),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            check_script: Script::new(TOKEN_BUCKET_LUA),
            reconcile_script: Script::new(RECONCILE_LUA),
            adjust_script: Script::new(ADJUST_LUA),
            settled: watch::channel(false).0,
            unsettled: AtomicBool::new(false),
            budgets: super::budget::Budgets::new(&cfg.key_prefix, tenants, nodes),
        });
        Metrics::limiter_mode("fallback", &["global"]);
        Metrics::limiter_fallback_divisor(nodes);
        tracing::info!(
            mode = "fallback",
            redis = %inner.url,
            live_nodes = nodes,
            "rate limiter starting in fallback mode until Redis answers"
        );
        let (shutdown, rx) = watch::channel(());
        runtime.spawn(supervise(inner.clone(), rx.clone()));
        runtime.spawn(follow_nodes(inner.clone(), live_nodes, rx));
        Ok(ClusterLimiter {
            inner,
            _shutdown: shutdown,
        })
    }
}

/// The Redis client: plain, or TLS (`rediss://`) with the configured CA and client certificate (the
/// system roots when no CA file is given).
fn client(cfg: &RedisConfig) -> Result<Client, RedisLimitError> {
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
    let url = cfg.url.as_str();
    if !cfg.tls() || (root_cert.is_none() && client_tls.is_none()) {
        return Client::open(url).map_err(RedisLimitError::Url);
    }
    let certs = TlsCertificates {
        client_tls,
        root_cert,
    };
    Client::build_with_tls(url, certs).map_err(RedisLimitError::Url)
}

/// The URL without its password, for logs: `redis://user:***@host:port` (the user name of
/// `user:password` is kept; anything else before the `@` is hidden).
pub(super) fn redact(url: &str) -> String {
    let Some(s) = url.find("://").map(|s| s + 3) else {
        return url.to_string();
    };
    let authority_end = url[s..].find('/').map_or(url.len(), |e| s + e);
    match url[s..authority_end].rfind('@').map(|at| s + at) {
        Some(at) => {
            let user = url[s..at].split_once(':').map_or("", |(u, _)| u);
            let colon = if user.is_empty() { "" } else { ":" };
            format!("{}{user}{colon}***{}", &url[..s], &url[at..])
        }
        None => url.to_string(),
    }
}
