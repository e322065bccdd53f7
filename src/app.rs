//! Build the running gateway from a validated config, and nothing else: simulated upstreams, the
//! backend table with its clients and probers, the cluster membership and view, the limiter, then
//! the pipeline in flow order. `main` and the tests both start Sluice through here.

use crate::balance::{Backend, BackendTable, BackendView, Balancer, LocalView};
use crate::cluster::{Cluster, ClusterView};
use crate::config::Config;
use crate::deliver::{Deliver, UpstreamClient, spawn_probers, tls_client_config};
use crate::mock::{self, MockConfig};
use crate::observe::Metrics;
use crate::observe::admin::Admin;
use crate::ratelimit::{ClusterLimiter, LocalLimiter, RateLimiter};
use crate::receive::{BodyBudget, Pipeline, RequestIds, TenantTable, models};
use crate::route::Router;
use crate::shape::Door;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub struct App {
    pub cfg: Config,
    /// What every request walks through.
    pub pipeline: Arc<Pipeline>,
    /// Gossip membership, when `cluster:` is configured; taken on shutdown to leave gracefully.
    membership: tokio::sync::Mutex<Option<Cluster>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start simulated upstream `{name}`: {reason}")]
    Mock { name: String, reason: String },
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot start the redis limiter: {0}")]
    Redis(#[from] crate::ratelimit::RedisLimitError),
    #[error("cannot start traces: {0}")]
    Observe(String),
}

impl App {
    /// Start what the config needs besides the listener (simulated upstreams, probers).
    /// `workers`: how many serving threads will each want their own upstream client set.
    pub async fn build(
        cfg: Config,
        shutdown: CancellationToken,
        workers: usize,
    ) -> Result<Arc<App>, StartError> {
        let metrics = crate::observe::install();
        let mocks = start_mocks(&cfg, &shutdown).await?;

        // Backends and their upstream clients: set 0 for background tasks (probes), one per worker.
        let tls = tls_client_config();
        let mut backends = Vec::new();
        let max_cooldown = cfg
            .cluster
            .as_ref()
            .map_or(crate::balance::DEFAULT_MAX_COOLDOWN, |c| {
                std::time::Duration::from_millis(c.max_cooldown_ms)
            });
        for (id, b) in cfg.backends.iter().enumerate() {
            let b = &b.value;
            let url = match b.url.value.strip_prefix("mock://") {
                Some(name) => format!("http://{}", mocks[name]),
                None => b.url.value.clone(),
            };
            let key = b.api_key_env.as_ref().and_then(|e| std::env::var(e).ok());
            backends.push(Arc::new(
                Backend::new(id, b.clone(), url)
                    .with_api_key(key)
                    .with_shaping(&cfg.shaping.congestion)
                    .with_max_cooldown(max_cooldown),
            ));
        }
        let backends: BackendTable = Arc::new(backends);
        let clients: Vec<Vec<UpstreamClient>> = (0..=workers)
            .map(|_| {
                backends
                    .iter()
                    .map(|b| {
                        UpstreamClient::new(b.cfg.timeouts.connect(), tls.clone(), &b.base_url)
                    })
                    .collect()
            })
            .collect();
        spawn_probers(&backends, &clients[0], shutdown.clone());

        // The cluster (membership, merged view) and the limiter.
        let tenant_cfgs: Vec<_> = cfg.tenants.iter().map(|t| t.value.clone()).collect();
        let mut membership = None;
        let mut cluster_view = None;
        let (view, limiter): (Arc<dyn BackendView>, Arc<dyn RateLimiter>) = match &cfg.cluster {
            None => (
                Arc::new(LocalView),
                Arc::new(LocalLimiter::new(&tenant_cfgs)),
            ),
            Some(cc) => {
                let transport = crate::cluster::transport::from_config(cc)?;
                let m = Cluster::join(cc, &cfg.node.id, transport.as_ref()).await?;
                crate::cluster::publisher(&m, backends.clone());
                let view = ClusterView::new(&m, backends.clone());
                let limiter: Arc<dyn RateLimiter> = match &cc.redis {
                    Some(rc) => Arc::new(ClusterLimiter::new(rc, &tenant_cfgs, m.divisor_watch())?),
                    None => Arc::new(LocalLimiter::new(&tenant_cfgs)),
                };
                tracing::info!(cluster = %cc.cluster_id, node = %cfg.node.id, limiter = limiter.mode(), "joined the cluster");
                membership = Some(m);
                cluster_view = Some(view.clone());
                (view as Arc<dyn BackendView>, limiter)
            }
        };
        if limiter.mode() == "local" {
            Metrics::limiter_mode("local", &[]);
        }

        // The pipeline, in flow order: Shape's door, Route, Balance, Deliver.
        let router = Router::new(&cfg);
        let routes = router.decisions().count();
        let door = Door::new(limiter.clone(), &cfg.shaping, routes);
        // Each backend wakes the queues of the routes that use it when a slot frees up.
        for b in backends.iter() {
            let queues = router
                .decisions()
                .filter(|d| d.pool.contains(&b.id))
                .map(|d| door.queue(d.index).clone())
                .collect();
            b.attach_queues(queues);
        }
        let balancer = Arc::new(Balancer::new(backends.clone(), view, routes));
        let deliver = Deliver {
            balancer: balancer.clone(),
            clients,
            max_attempts: cfg.routing.max_attempts,
            default_max_tokens: cfg.routing.default_max_tokens,
            bounds: cfg.bounds,
            max_wait: std::time::Duration::from_millis(cfg.shaping.max_wait_ms),
        };
        let admin = Admin::new(
            metrics,
            cfg.admin_token_env.clone(),
            Box::new({
                let b = balancer.clone();
                move || b.any_available()
            }),
            admin_cluster(
                cfg.node.id.clone(),
                limiter,
                balancer,
                cluster_view,
                cfg.cluster.as_ref().map(|c| {
                    (
                        c.cluster_id.clone(),
                        crate::cluster::transport::admin_json(c),
                    )
                }),
            ),
        )
        .with_own_listener(cfg.admin.listen.is_some());
        let pipeline = Pipeline {
            tenants: TenantTable::new(&tenant_cfgs),
            ids: RequestIds::default(),
            max_body_bytes: cfg.listen.max_body_bytes,
            max_header_bytes: cfg.listen.max_header_bytes,
            bounds: cfg.bounds,
            body_budget: BodyBudget::default(),
            affinity: cfg.routing.affinity.clone(),
            models: models::list(cfg.backends.iter().map(|b| &b.value)),
            node_header: http::HeaderValue::from_str(&cfg.node.id)
                .unwrap_or(http::HeaderValue::from_static("sluice")),
            door,
            router,
            deliver,
            admin,
            observe: crate::observe::Observer::start(&cfg.observe, &cfg.node.id)
                .map_err(StartError::Observe)?,
        };
        Ok(Arc::new(App {
            cfg,
            pipeline: Arc::new(pipeline),
            membership: tokio::sync::Mutex::new(membership),
        }))
    }

    /// Leave the cluster gracefully (peers see it at once instead of after the failure detector).
    pub async fn leave(&self) {
        if let Some(c) = self.membership.lock().await.take() {
            c.leave().await;
        }
    }
}

async fn start_mocks(
    cfg: &Config,
    shutdown: &CancellationToken,
) -> Result<HashMap<String, SocketAddr>, StartError> {
    let mut mocks = HashMap::new();
    for m in &cfg.mock_upstreams {
        let mut mc = MockConfig::new(m.protocol, &m.name);
        mc.latency_ms = m.latency_ms;
        mc.ttft_ms = m.ttft_ms;
        mc.tokens_per_sec = m.tokens_per_sec;
        let addr = mock::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), mc, shutdown.clone())
            .await
            .map_err(|e| StartError::Mock {
                name: m.name.clone(),
                reason: e.to_string(),
            })?;
        tracing::info!(name = %m.name, %addr, "simulated upstream started");
        mocks.insert(m.name.clone(), addr);
    }
    Ok(mocks)
}

/// `/admin/cluster`: this node, the limiter mode, members and the merged backend view.
fn admin_cluster(
    node: String,
    limiter: Arc<dyn RateLimiter>,
    balancer: Arc<Balancer>,
    view: Option<Arc<ClusterView>>,
    cluster_id: Option<(String, Value)>,
) -> Box<dyn Fn() -> Value + Send + Sync> {
    Box::new(move || {
        let mut v = json!({"node": node, "limiter_mode": limiter.mode()});
        match (&view, &cluster_id) {
            (Some(view), Some((id, gossip))) => {
                v["cluster_id"] = json!(id);
                v["gossip"] = gossip.clone();
                v["cluster"] = view.admin_json();
            }
            _ => {
                let now = Instant::now();
                let now_ms = crate::balance::quota::unix_now_ms();
                v["cluster"] =
                    json!({"members": [{"id": node, "is_self": true, "status": "ready"}]});
                v["backends"] = balancer
                    .backends()
                    .iter()
                    .map(|b| {
                        let st = balancer.view().status(b, now);
                        let quota = balancer.view().quota(b, now_ms).map(|q| {
                            q.to_json(b.quota_sent_since(q.obs.at_ms), now_ms)
                        });
                        json!({"name": b.name(), "available": st.available, "healthy": st.healthy,
                               "in_flight": st.in_flight, "latency_ms": st.latency_ms, "ttft_ms": st.ttft_ms,
                               "quota": quota})
                    })
                    .collect();
            }
        }
        v
    })
}
