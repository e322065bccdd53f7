//! Building the cluster limiter from its config: the Redis client, the per-tenant plans, the
//! fallback, and the background tasks. Never touches Redis itself.

use super::cluster_limiter::{ClusterLimiter, Inner};
use super::group;
use super::local::Quotas;
use super::overlimit::OverLimitCache;
use super::plan::Plan;
use super::script::{ADJUST_LUA, RECONCILE_LUA, TOKEN_BUCKET_LUA};
use super::switch::{follow_nodes, supervise};
use super::topology::Connector;
use crate::config::{RedisConfig, RedisMode, TenantConfig};
use crate::observe::Metrics;
use ::redis::{RedisError, Script};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};

#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    #[error("cluster.redis.url: {0}")]
    Url(#[source] RedisError),
    #[error("cluster.redis.nodes: {0}")]
    Nodes(#[source] RedisError),
    #[error("cluster.redis.sentinels: {0}")]
    Sentinels(#[source] RedisError),
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
        let open_for = Duration::from_millis(cfg.breaker_open_ms.max(1));
        let connect_timeout = open_for.clamp(Duration::from_millis(100), Duration::from_secs(2));
        let connector = Connector::new(cfg, connect_timeout)?;
        let quotas: Vec<(String, Quotas)> = tenants
            .iter()
            .map(|t| (t.id.clone(), Quotas::of(t)))
            .collect();
        let mut plans: HashMap<String, Plan> = quotas
            .iter()
            .filter_map(|(id, q)| Plan::new(&cfg.key_prefix, id, q).map(|p| (id.clone(), p)))
            .collect();
        let mut live_nodes = live_nodes;
        let nodes = (*live_nodes.borrow_and_update()).max(1);
        let groups = group::build(
            connector.sharded(),
            quotas,
            &mut plans,
            cfg.breaker_failures,
            nodes,
        );
        let inner = Arc::new(Inner {
            connector,
            url: describe(cfg),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            connect_timeout,
            open_for,
            plans: ArcSwap::from_pointee(
                plans.into_iter().map(|(id, p)| (id, Arc::new(p))).collect(),
            ),
            key_prefix: cfg.key_prefix.clone(),
            conn: RwLock::new(None),
            groups,
            opened: Notify::new(),
            cache: OverLimitCache::default(),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            check_script: Script::new(TOKEN_BUCKET_LUA),
            reconcile_script: Script::new(RECONCILE_LUA),
            adjust_script: Script::new(ADJUST_LUA),
            settled: watch::channel(false).0,
            budgets: super::budget::Budgets::new(&cfg.key_prefix, tenants, nodes),
        });
        inner.publish_mode();
        Metrics::limiter_fallback_divisor(nodes);
        tracing::info!(
            mode = "fallback",
            redis = %inner.url,
            groups = inner.groups.len(),
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

/// The mode and its URLs without passwords, for logs: `redis://h:6379`, `cluster redis://a:1,…`,
/// `sentinel mymaster redis://s:26379,…`.
fn describe(cfg: &RedisConfig) -> String {
    let urls: Vec<String> = cfg.urls().iter().map(|u| redact(u)).collect();
    match cfg.mode {
        RedisMode::Single => urls.join(","),
        RedisMode::Cluster => format!("cluster {}", urls.join(",")),
        RedisMode::Sentinel => format!(
            "sentinel {} {}",
            cfg.master_name.as_deref().unwrap_or_default(),
            urls.join(",")
        ),
    }
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
