//! Build the running gateway from a validated config: simulated upstreams, the backend table and its
//! clients and probers, the router, the limiter. `main` and the tests both start Sluice through here.

use crate::backends::{Backend, BackendTable, BackendView, LocalView, spawn_probers};
use crate::cluster::{Cluster, ClusterView};
use crate::config::{AffinityConfig, Config};
use crate::deliver::{Deliver, UpstreamClient, tls_client_config};
use crate::mock::{self, MockConfig};
use crate::ratelimit::{ClusterLimiter, LocalLimiter, RateLimiter};
use crate::receive::TenantTable;
use crate::route::Router;
use crate::translate::RequestScan;
use http::HeaderMap;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub struct App {
    pub cfg: Config,
    pub tenants: TenantTable,
    pub router: Router,
    pub deliver: Deliver,
    pub limiter: Arc<dyn RateLimiter>,
    pub metrics: PrometheusHandle,
    /// Requests waiting for their tenant's bucket to refill.
    pub rate_waiters: Waiters,
    /// Gossip membership and the merged backend view, when `cluster:` is configured.
    pub cluster: Option<ClusterParts>,
    /// `x-sluice-node` on every response.
    pub node_header: http::HeaderValue,
    /// Shutting down: `/readyz` says 503 so load balancers move away.
    pub draining: std::sync::atomic::AtomicBool,
    id_prefix: String,
    next_id: AtomicU64,
}

/// A counter of waiting requests with a cap; a slot is held until dropped.
#[derive(Debug, Default)]
pub struct Waiters(std::sync::atomic::AtomicUsize);

pub struct WaitSlot<'a>(&'a Waiters);

impl Waiters {
    pub fn enter(&self, max: usize) -> Option<WaitSlot<'_>> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        if n >= max {
            self.0.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(WaitSlot(self))
    }
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a clustered node holds besides the local pipeline.
pub struct ClusterParts {
    /// Taken on shutdown to leave gracefully.
    pub membership: tokio::sync::Mutex<Option<Cluster>>,
    pub view: Arc<ClusterView>,
    pub cluster_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start simulated upstream `{name}`: {reason}")]
    Mock { name: String, reason: String },
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot start the redis limiter: {0}")]
    Redis(#[from] crate::ratelimit::RedisLimitError),
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
        let mut mocks: HashMap<String, SocketAddr> = HashMap::new();
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
        let tls = tls_client_config();
        let mut backends = Vec::new();
        let mut clients = Vec::new();
        for (id, b) in cfg.backends.iter().enumerate() {
            let b = &b.value;
            let url = match b.url.value.strip_prefix("mock://") {
                Some(name) => format!("http://{}", mocks[name]),
                None => b.url.value.clone(),
            };
            clients.push(UpstreamClient::new(b.timeouts.connect(), tls.clone(), &url));
            backends.push(Arc::new(
                Backend::new(id, b.clone(), url).with_shaping(&cfg.shaping.congestion),
            ));
        }
        let backends: BackendTable = Arc::new(backends);
        spawn_probers(&backends, &clients, shutdown.clone());
        // One more client set per serving worker (see `deliver::set_worker`).
        let mut client_sets = vec![clients];
        for _ in 0..workers {
            let set = backends
                .iter()
                .map(|b| UpstreamClient::new(b.cfg.timeouts.connect(), tls.clone(), &b.base_url))
                .collect();
            client_sets.push(set);
        }
        let tenant_cfgs: Vec<_> = cfg.tenants.iter().map(|t| t.value.clone()).collect();
        let (view, limiter, cluster): (Arc<dyn BackendView>, Arc<dyn RateLimiter>, _) = match &cfg
            .cluster
        {
            None => (
                Arc::new(LocalView),
                Arc::new(LocalLimiter::new(&tenant_cfgs)),
                None,
            ),
            Some(cc) => {
                let membership =
                    Cluster::join(cc, &cfg.node.id, &chitchat::transport::UdpTransport).await?;
                crate::cluster::publisher(&membership, backends.clone());
                let view = ClusterView::new(&membership, backends.clone());
                let limiter: Arc<dyn RateLimiter> = match &cc.redis {
                    Some(rc) => Arc::new(ClusterLimiter::new(
                        rc,
                        &tenant_cfgs,
                        membership.live_count_watch(),
                    )?),
                    None => Arc::new(LocalLimiter::new(&tenant_cfgs)),
                };
                tracing::info!(cluster = %cc.cluster_id, node = %cfg.node.id, limiter = limiter.mode(), "joined the cluster");
                let parts = ClusterParts {
                    membership: tokio::sync::Mutex::new(Some(membership)),
                    view: view.clone(),
                    cluster_id: cc.cluster_id.clone(),
                };
                (view as Arc<dyn BackendView>, limiter, Some(parts))
            }
        };
        if limiter.mode() == "local" {
            metrics::gauge!(crate::ratelimit::metric_names::MODE_GAUGE, "mode" => "local").set(1.0);
        }
        let router = Router::new(&cfg);
        // Each backend wakes the queues of the routes that use it when a slot frees up.
        for b in backends.iter() {
            let queues = router
                .decisions()
                .filter(|d| d.pool.contains(&b.id))
                .map(|d| d.queue.clone())
                .collect();
            b.attach_queues(queues);
        }
        let app = App {
            tenants: TenantTable::new(&tenant_cfgs),
            router,
            limiter,
            deliver: Deliver {
                backends,
                clients: client_sets,
                view,
                max_attempts: cfg.routing.max_attempts,
                default_max_tokens: cfg.routing.default_max_tokens,
                max_wait: std::time::Duration::from_millis(cfg.shaping.max_wait_ms),
            },
            metrics,
            rate_waiters: Waiters::default(),
            node_header: http::HeaderValue::from_str(&cfg.node.id)
                .unwrap_or(http::HeaderValue::from_static("sluice")),
            draining: std::sync::atomic::AtomicBool::new(false),
            cluster,
            id_prefix: format!("{:08x}", rand::random::<u32>()),
            next_id: AtomicU64::new(1),
            cfg,
        };
        Ok(Arc::new(app))
    }

    /// Leave the cluster gracefully (peers see it at once instead of after the failure detector).
    pub async fn leave(&self) {
        if let Some(parts) = &self.cluster
            && let Some(c) = parts.membership.lock().await.take()
        {
            c.leave().await;
        }
    }

    /// `/admin/cluster`: this node, the limiter mode, members and the merged backend view.
    pub fn admin_cluster(&self) -> Value {
        let mut v = json!({
            "node": self.cfg.node.id,
            "limiter_mode": self.limiter.mode(),
        });
        match &self.cluster {
            Some(parts) => {
                v["cluster_id"] = json!(parts.cluster_id);
                v["cluster"] = parts.view.admin_json();
            }
            None => {
                let now = Instant::now();
                v["cluster"] = json!({"members": [{"id": self.cfg.node.id, "is_self": true, "status": "ready"}]});
                v["backends"] = self
                    .deliver
                    .backends
                    .iter()
                    .map(|b| {
                        let st = self.deliver.view.status(b, now);
                        json!({"name": b.name(), "available": st.available, "healthy": st.healthy,
                               "in_flight": st.in_flight, "latency_ms": st.latency_ms, "ttft_ms": st.ttft_ms})
                    })
                    .collect();
            }
        }
        v
    }

    /// Whether `headers` carry the admin token (`admin_token_env` must name a set variable).
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        let Some(token) = self
            .cfg
            .admin_token_env
            .as_ref()
            .and_then(|e| std::env::var(e).ok())
        else {
            return false;
        };
        if token.is_empty() {
            return false;
        }
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Length first, then every byte: no early exit on the first difference.
        given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }

    /// The client's `x-request-id` when it is short and printable, else a fresh one.
    pub fn request_id(&self, headers: &HeaderMap) -> String {
        if let Some(v) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
            && !v.is_empty()
            && v.len() <= 128
            && v.bytes().all(|c| c.is_ascii_graphic())
        {
            return v.to_string();
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(32);
        id.push_str("req-");
        id.push_str(&self.id_prefix);
        id.push('-');
        push_hex(&mut id, n);
        id
    }

    /// Ready when not draining and at least one backend can take traffic.
    pub fn ready(&self) -> bool {
        if self.draining.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        self.deliver
            .backends
            .iter()
            .any(|b| self.deliver.view.status(b, now).available)
    }

    /// `/v1/models`: every model name the config maps (backends without a map serve whatever is asked).
    pub fn models(&self) -> Value {
        let names: BTreeSet<&str> = self
            .deliver
            .backends
            .iter()
            .flat_map(|b| b.cfg.models.keys().map(String::as_str))
            .collect();
        let data: Vec<Value> = names
            .into_iter()
            .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "sluice"}))
            .collect();
        json!({"object": "list", "data": data})
    }

    /// The body field that pins a session, when affinity is keyed by one (and not by a header).
    pub fn affinity_body_field(&self) -> Option<&str> {
        let a = self.cfg.routing.affinity.as_ref()?;
        if a.header.is_some() {
            return None;
        }
        a.body_field.as_deref()
    }

    /// The session key: the affinity header's value, or the body field's (read by the body scan).
    pub fn affinity_key(&self, headers: &HeaderMap, scan: &RequestScan) -> Option<String> {
        let AffinityConfig { header, .. } = self.cfg.routing.affinity.as_ref()?;
        match header {
            Some(h) => headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            None => scan.affinity.clone(),
        }
    }
}

/// `n` in lowercase hex, without going through the formatting machinery (once per request).
fn push_hex(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend(buf[i..].iter().map(|b| char::from(*b)));
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_matches_the_formatter() {
        for n in [0u64, 1, 9, 10, 15, 16, 255, 4096, 0xdead_beef, u64::MAX] {
            let mut s = String::new();
            super::push_hex(&mut s, n);
            assert_eq!(s, format!("{n:x}"));
        }
    }
}
