//! Build the running gateway from a validated config, and nothing else: simulated upstreams, the
//! backend table with its clients and probers, the cluster membership and view, the limiter, then
//! the pipeline in flow order. `main` and the tests both start Sluice through here.
//!
//! A config reload ([`crate::reload`]) builds the next pipeline the same way ([`assemble`]),
//! carrying over by name what the running one learned: backends keep their health, ejections,
//! cooldowns, EWMAs, adaptive limits and in-flight counts ([`Backend::carried`]) and, at an
//! unchanged address, their pooled connections; the limiter keeps each tenant's bucket levels
//! ([`RateLimiter::retune`]); membership and its gossip keys stay. Then it swaps it in.

mod reload;

use crate::balance::{Backend, BackendTable, BackendView, Balancer, LocalView};
use crate::cluster::{Cluster, ClusterView};
use crate::config::Config;
use crate::deliver::{Deliver, UpstreamClient, spawn_probers, tls_client_config};
use crate::mock::{self, MockConfig};
use crate::observe::Metrics;
use crate::observe::admin::Admin;
use crate::ratelimit::{ClusterLimiter, LocalLimiter, RateLimiter};
use crate::receive::{BodyBudget, Live, Pipeline, RequestIds, TenantTable, TlsCerts, models};
use crate::reload::Reloader;
use crate::route::Router;
use crate::shape::Door;
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct App {
    /// The config the node started with (a reload may have changed what is served since).
    pub cfg: Config,
    /// The pipeline new requests get: a config reload swaps it.
    pub live: Live,
    /// What SIGHUP, `--watch` and `POST /admin/reload` call.
    pub reloader: Arc<Reloader>,
    /// Gossip membership, when `cluster:` is configured; taken on shutdown to leave gracefully.
    membership: tokio::sync::Mutex<Option<Cluster>>,
    /// What every config's pipeline shares.
    base: Base,
    /// The config served and what it started; held for the length of a reload.
    running: tokio::sync::Mutex<Running>,
    /// The version served (a short hash of the file).
    version: std::sync::Mutex<String>,
    /// Where a reload reads the config from (unset: the embedded default, nothing to reload).
    source: OnceLock<Source>,
    /// The TLS listener's certificate, re-read on reload.
    tls: OnceLock<Arc<TlsCerts>>,
}

/// The config file and the `--listen` override applied to every version of it.
pub struct Source {
    pub path: PathBuf,
    pub listen: Option<String>,
}

/// Built once, shared by the pipelines of every config.
struct Base {
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
    workers: usize,
    tls: Arc<rustls::ClientConfig>,
    limiter: Arc<dyn RateLimiter>,
    ids: Arc<RequestIds>,
    body_budget: Arc<BodyBudget>,
    draining: Arc<AtomicBool>,
    /// The background runtime: a reload's tasks (probes, gossip, simulated upstreams) run there.
    runtime: tokio::runtime::Handle,
    /// The access log and traces: started once (one export task), kept by every reload
    /// (`observe:` needs a restart).
    observe: Arc<crate::observe::Observer>,
}

/// What the served config started besides its pipeline.
struct Running {
    cfg: Config,
    /// Simulated upstreams by name: their settings (Debug) and address.
    mocks: HashMap<String, (String, SocketAddr)>,
    /// Cancels this config's probers.
    probes: CancellationToken,
    /// This config's gossip publisher.
    publisher: Option<JoinHandle<()>>,
}

/// One config's pipeline, and the tasks it started.
struct Assembled {
    pipeline: Pipeline,
    probes: CancellationToken,
    publisher: Option<JoinHandle<()>>,
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
        let version = crate::reload::version_of(&format!("{cfg:?}"));
        Self::build_versioned(cfg, shutdown, workers, version).await
    }

    /// [`App::build`] for a config whose version (the short hash of its file, see
    /// [`crate::reload::version_of`]) is known.
    pub async fn build_versioned(
        cfg: Config,
        shutdown: CancellationToken,
        workers: usize,
        version: String,
    ) -> Result<Arc<App>, StartError> {
        let metrics = crate::observe::install();
        let mocks = start_mocks(&cfg, &shutdown, &HashMap::new()).await?;

        // The cluster (membership) and the limiter.
        let tenant_cfgs: Vec<_> = cfg.tenants.iter().map(|t| t.value.clone()).collect();
        let mut membership = None;
        let limiter: Arc<dyn RateLimiter> = match &cfg.cluster {
            None => Arc::new(LocalLimiter::new(&tenant_cfgs)),
            Some(cc) => {
                let transport = crate::cluster::transport::from_config(cc)?;
                let m = Cluster::join(cc, &cfg.node.id, transport.as_ref()).await?;
                let limiter: Arc<dyn RateLimiter> = match &cc.redis {
                    Some(rc) => Arc::new(ClusterLimiter::new(rc, &tenant_cfgs, m.divisor_watch())?),
                    None => Arc::new(LocalLimiter::new(&tenant_cfgs)),
                };
                tracing::info!(cluster = %cc.cluster_id, node = %cfg.node.id, limiter = limiter.mode(), "joined the cluster");
                membership = Some(m);
                limiter
            }
        };
        if limiter.mode() == "local" {
            Metrics::limiter_mode("local", &[]);
        }
        let base = Base {
            metrics,
            shutdown,
            workers,
            tls: tls_client_config(),
            limiter,
            ids: Arc::default(),
            body_budget: Arc::default(),
            draining: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
            observe: Arc::new(
                crate::observe::Observer::start(&cfg.observe, &cfg.node.id)
                    .map_err(StartError::Observe)?,
            ),
        };
        let reloader = Arc::new(Reloader::default());
        let addrs = mocks.iter().map(|(n, (_, a))| (n.clone(), *a)).collect();
        let first = assemble(
            &base,
            &cfg,
            &addrs,
            None,
            membership.as_ref(),
            &version,
            &reloader,
        );
        let app = Arc::new(App {
            cfg: cfg.clone(),
            live: Arc::new(ArcSwap::from_pointee(first.pipeline)),
            reloader: reloader.clone(),
            membership: tokio::sync::Mutex::new(membership),
            base,
            running: tokio::sync::Mutex::new(Running {
                cfg,
                mocks,
                probes: first.probes,
                publisher: first.publisher,
            }),
            version: std::sync::Mutex::new(String::new()),
            source: OnceLock::new(),
            tls: OnceLock::new(),
        });
        app.set_version(version).await;
        let weak: Weak<App> = Arc::downgrade(&app);
        reloader.set(weak);
        Ok(app)
    }

    /// Where a reload reads the config.
    pub fn set_source(&self, source: Source) {
        let _ = self.source.set(source);
    }

    /// The TLS listener's certificate handle: a reload re-reads its files.
    pub fn set_tls(&self, certs: Arc<TlsCerts>) {
        let _ = self.tls.set(certs);
    }

    /// Record the version served: metrics, the admin view, and (in a cluster) gossip.
    async fn set_version(&self, version: String) {
        let previous = std::mem::replace(
            &mut *self.version.lock().unwrap_or_else(|e| e.into_inner()),
            version.clone(),
        );
        Metrics::config_version(&version, Some(&previous));
        if let Some(m) = self.membership.lock().await.as_ref() {
            m.set_config_version(&version).await;
        }
    }

    /// Leave the cluster gracefully (peers see it at once instead of after the failure detector).
    pub async fn leave(&self) {
        if let Some(c) = self.membership.lock().await.take() {
            c.leave().await;
        }
    }
}

/// One config's pipeline: backends (carrying over by name what `prev`'s learned, and their
/// upstream connections where the address is unchanged), their probers, the cluster's view of
/// them, then the stages in flow order.
fn assemble(
    base: &Base,
    cfg: &Config,
    mocks: &HashMap<String, SocketAddr>,
    prev: Option<&Pipeline>,
    cluster: Option<&Cluster>,
    version: &str,
    reloader: &Arc<Reloader>,
) -> Assembled {
    let max_cooldown = cfg
        .cluster
        .as_ref()
        .map_or(crate::balance::DEFAULT_MAX_COOLDOWN, |c| {
            std::time::Duration::from_millis(c.max_cooldown_ms)
        });
    let prev_backends = prev.map(|p| p.deliver.balancer.backends().clone());
    let previous = |name: &str| {
        prev_backends
            .as_ref()
            .and_then(|t| t.iter().find(|o| o.name() == name).cloned())
    };
    let mut backends = Vec::new();
    for (id, b) in cfg.backends.iter().enumerate() {
        let b = &b.value;
        let url = match b.url.value.strip_prefix("mock://") {
            Some(name) => format!("http://{}", mocks[name]),
            None => b.url.value.clone(),
        };
        let key = b.api_key_env.as_ref().and_then(|e| std::env::var(e).ok());
        let backend = match previous(&b.name) {
            Some(old) => Backend::carried(id, b.clone(), url, &old),
            None => Backend::new(id, b.clone(), url),
        };
        backends.push(Arc::new(
            backend
                .with_api_key(key)
                .with_shaping(&cfg.shaping.congestion)
                .with_max_cooldown(max_cooldown),
        ));
    }
    let backends: BackendTable = Arc::new(backends);

    // Upstream clients: set 0 for background tasks (probes), one per worker. A backend whose
    // address and connect timeout are unchanged keeps its pooled connections.
    let clients: Vec<Vec<UpstreamClient>> = (0..=base.workers)
        .map(|set| {
            backends
                .iter()
                .map(|b| {
                    let kept = prev.zip(previous(b.name())).filter(|(_, old)| {
                        old.base_url == b.base_url
                            && old.cfg.timeouts.connect() == b.cfg.timeouts.connect()
                    });
                    match kept.and_then(|(p, old)| p.deliver.clients.get(set)?.get(old.id)) {
                        Some(c) => c.clone(),
                        None => UpstreamClient::new(
                            b.cfg.timeouts.connect(),
                            base.tls.clone(),
                            &b.base_url,
                        ),
                    }
                })
                .collect()
        })
        .collect();
    let probes = base.shutdown.child_token();
    spawn_probers(&backends, &clients[0], probes.clone());

    let (view, cluster_view, publisher): (Arc<dyn BackendView>, _, _) = match cluster {
        None => (Arc::new(LocalView), None, None),
        Some(m) => {
            let publisher = crate::cluster::publisher(m, backends.clone());
            let view = ClusterView::new(m, backends.clone());
            (view.clone(), Some(view), Some(publisher))
        }
    };
    let limiter = base.limiter.clone();

    // The pipeline, in flow order: Shape's door, Route, Balance, Deliver.
    let tenant_cfgs: Vec<_> = cfg.tenants.iter().map(|t| t.value.clone()).collect();
    let router = Router::new(cfg);
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
    let spend = limiter.clone();
    let admin = Admin::new(
        base.metrics.clone(),
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
            version.to_string(),
        ),
    )
    .with_own_listener(cfg.admin.listen.is_some())
    .with_draining(base.draining.clone())
    .with_tenants(Box::new(move || -> crate::observe::admin::Report {
        let l = spend.clone();
        Box::pin(async move { l.spend_report().await.to_json() })
    }));
    let pipeline = Pipeline {
        tenants: TenantTable::new(&tenant_cfgs),
        ids: base.ids.clone(),
        max_body_bytes: cfg.listen.max_body_bytes,
        max_header_bytes: cfg.listen.max_header_bytes,
        bounds: cfg.bounds,
        body_budget: base.body_budget.clone(),
        affinity: cfg.routing.affinity.clone(),
        models: models::list(cfg.backends.iter().map(|b| &b.value)),
        node_header: http::HeaderValue::from_str(&cfg.node.id)
            .unwrap_or(http::HeaderValue::from_static("sluice")),
        door,
        router,
        deliver,
        admin,
        reloader: reloader.clone(),
        observe: base.observe.clone(),
    };
    Assembled {
        pipeline,
        probes,
        publisher,
    }
}

/// The simulated upstreams `cfg` lists: those already running with the same settings (`running`)
/// are kept, the others started. Name → (settings, address).
async fn start_mocks(
    cfg: &Config,
    shutdown: &CancellationToken,
    running: &HashMap<String, (String, SocketAddr)>,
) -> Result<HashMap<String, (String, SocketAddr)>, StartError> {
    let mut mocks = HashMap::new();
    for m in &cfg.mock_upstreams {
        let settings = format!("{m:?}");
        if let Some((s, addr)) = running.get(&m.name)
            && *s == settings
        {
            mocks.insert(m.name.clone(), (settings, *addr));
            continue;
        }
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
        mocks.insert(m.name.clone(), (settings, addr));
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
    version: String,
) -> Box<dyn Fn() -> Value + Send + Sync> {
    Box::new(move || {
        let mut v = json!({"node": node, "limiter_mode": limiter.mode(),
                           "limiter_fallback_tenants": limiter.fallback_tenants(),
                           "config_version": version});
        match (&view, &cluster_id) {
            (Some(view), Some((id, gossip))) => {
                v["cluster_id"] = json!(id);
                v["gossip"] = gossip.clone();
                v["cluster"] = view.admin_json();
            }
            _ => {
                let now = Instant::now();
                let now_ms = crate::balance::quota::unix_now_ms();
                v["cluster"] = json!({"members": [{"id": node, "is_self": true, "status": "ready", "config_version": version}]});
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
