//! The cluster limiter: global per-tenant buckets in Redis, with a visible, bounded fallback to
//! local limits.
//!
//! * **Global mode** (breaker closed): each [`RateLimiter::check`] is one `EVALSHA` of
//!   `lua/token_bucket.lua` over a shared multiplexed connection, bounded by `timeout_ms`. All bucket
//!   maths run in Lua against Redis `TIME`; Rust never reads-then-writes a bucket.
//! * **Fallback mode** (breaker open): no Redis calls at all. Each tenant's quota divided by the live
//!   node count, in a [`LocalLimiter`] rebuilt whenever the count changes.
//! * A failed or slow call answers *that* request from the fallback at once and counts a failure;
//!   `breaker_failures` consecutive failures open the breaker. A background task then reconnects and
//!   probes every `breaker_open_ms` (connection set-up, script load and a `PING` within the per-call
//!   budget) and closes the breaker when Redis answers. Connecting never happens on the request path:
//!   the limiter starts in fallback and the same task brings it to global mode.
//! * After Redis refuses a tenant, the node refuses it locally until the retry-after passes (the
//!   over-limit cache), without calling Redis.
//!
//! Metrics: `sluice_limiter_mode{mode}` (1 current, 0 other), `sluice_limiter_redis_calls_total`,
//! `sluice_limiter_redis_errors_total{kind=timeout|error}`, `sluice_limiter_cache_hits_total`,
//! `sluice_limiter_fallback_divisor`. One log line per mode change.

use super::breaker::Breaker;
use super::fallback::Fallback;
use super::lease::{Lease, lease_size};
use super::local::Quotas;
use super::overlimit::{Hit, OverLimitCache};
use super::{Decision, LimitFuture, LimitRequest, LocalLimiter, RateLimiter, ReconcileFuture};
use crate::config::{RedisConfig, TenantConfig};
use ::redis::aio::MultiplexedConnection;
use ::redis::{
    AsyncConnectionConfig, Client, FromRedisValue, RedisError, Script, ScriptInvocation,
};
use metrics::{counter, gauge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Check-and-take of a tenant's request and token buckets (contract in the script's header).
pub const TOKEN_BUCKET_LUA: &str = include_str!("../../lua/token_bucket.lua");
/// Refund or charge a token reservation after the response (contract in the script's header).
pub const RECONCILE_LUA: &str = include_str!("../../lua/reconcile.lua");

/// The metrics the cluster limiter exports.
pub mod metric_names {
    /// Gauge, label `mode` = `global` | `fallback`: 1 for the current mode, 0 for the other.
    pub const MODE_GAUGE: &str = "sluice_limiter_mode";
    /// Counter: Redis calls on the request path (checks and reconciles).
    pub const REDIS_CALLS: &str = "sluice_limiter_redis_calls_total";
    /// Counter, label `kind` = `timeout` | `error`: failed request-path calls.
    pub const REDIS_ERRORS: &str = "sluice_limiter_redis_errors_total";
    /// Counter: refusals answered from the over-limit cache (no Redis call).
    pub const CACHE_HITS: &str = "sluice_limiter_cache_hits_total";
    /// Counter: admissions answered from a request lease (no Redis call).
    pub const LEASE_HITS: &str = "sluice_limiter_lease_hits_total";
    /// Gauge: the live node count the fallback quotas are divided by.
    pub const FALLBACK_DIVISOR: &str = "sluice_limiter_fallback_divisor";
}
use metric_names::*;

#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    #[error("cluster.redis.url: {0}")]
    Url(#[source] RedisError),
    #[error(
        "the cluster limiter must be created inside a Tokio runtime (it runs background tasks)"
    )]
    NoRuntime,
}

/// The Redis keys of a tenant's buckets: `<prefix>:{<tenant>}:req` and `<prefix>:{<tenant>}:tok`.
/// Both carry the hash tag `{<tenant>}`, so they live in one Redis Cluster slot. Braces and `%` in
/// the prefix or the tenant id are percent-encoded so the tag is always exactly the tenant.
pub fn bucket_keys(prefix: &str, tenant: &str) -> [String; 2] {
    let (p, t) = (escape(prefix), escape(tenant));
    [format!("{p}:{{{t}}}:req"), format!("{p}:{{{t}}}:tok")]
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// One tenant's global limits, as the script's ARGV wants them (0 = no such limit).
#[derive(Debug)]
struct Plan {
    keys: [String; 2],
    rpm: u32,
    burst: u32,
    tpm: u64,
    /// Request tokens taken ahead (request-only limits): see `lease`.
    lease: Lease,
}

impl Plan {
    fn new(prefix: &str, tenant: &str, q: &Quotas) -> Option<Plan> {
        if q.requests_per_minute.is_none() && q.tokens_per_minute.is_none() {
            return None;
        }
        let rpm = q.requests_per_minute.unwrap_or(0);
        Some(Plan {
            keys: bucket_keys(prefix, tenant),
            rpm,
            // Same default as the local limiter: one second's worth.
            burst: q.burst.unwrap_or(rpm.div_ceil(60).max(1)).max(1),
            tpm: q.tokens_per_minute.unwrap_or(0),
            lease: Lease::default(),
        })
    }

    /// The script's reply (see `lua/token_bucket.lua`) as a decision.
    fn decision(&self, v: &[i64], tokens_asked: bool) -> Decision {
        let ms = |x: i64| Duration::from_millis(x.max(0) as u64);
        let allowed = v[0] == 1;
        let mut d = Decision {
            allowed,
            ..Decision::default()
        };
        if self.rpm > 0 {
            d.limit = Some(self.rpm);
            d.remaining = Some(v[1].clamp(0, u32::MAX as i64) as u32);
            d.reset = ms(v[4]);
        }
        if tokens_asked {
            d.tokens_limit = Some(self.tpm);
            d.tokens_remaining = Some(v[2].max(0) as u64);
            d.tokens_reset = ms(v[5]);
        }
        if !allowed {
            d.retry_after = Some(ms(v[3]));
        }
        d
    }

    /// A refusal from the over-limit cache (the emptied bucket reported empty, full again after one
    /// whole refill).
    fn cached(&self, hit: Hit, tokens_asked: bool) -> Decision {
        let mut d = Decision {
            allowed: false,
            retry_after: Some(hit.wait),
            ..Decision::default()
        };
        if self.rpm > 0 {
            d.limit = Some(self.rpm);
            if hit.requests {
                d.remaining = Some(0);
                d.reset = Duration::from_secs_f64(60.0 * self.burst as f64 / self.rpm as f64);
            }
        }
        if tokens_asked {
            d.tokens_limit = Some(self.tpm);
            if hit.tokens {
                d.tokens_remaining = Some(0);
                d.tokens_reset = Duration::from_secs(60);
            }
        }
        d
    }
}

#[derive(Debug)]
enum CallError {
    /// Breaker closed but no connection installed (a transition in progress): not a failure.
    NoConnection,
    Timeout,
    Redis(RedisError),
    BadReply(usize),
}

impl CallError {
    fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout => "timeout",
            CallError::Redis(e) if e.is_timeout() => "timeout",
            _ => "error",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NoConnection => f.write_str("no connection"),
            CallError::Timeout => f.write_str("timed out"),
            CallError::Redis(e) => write!(f, "{e}"),
            CallError::BadReply(n) => write!(f, "unexpected script reply ({n} values)"),
        }
    }
}

struct Inner {
    client: Client,
    url: String,
    /// Per-call budget.
    timeout: Duration,
    /// Background connection set-up budget.
    connect_timeout: Duration,
    /// Breaker open this long before each probe.
    open_for: Duration,
    plans: HashMap<String, Plan>,
    conn: RwLock<Option<MultiplexedConnection>>,
    breaker: Breaker,
    /// Woken when the breaker opens, so the supervisor drops the connection and starts probing.
    opened: Notify,
    fallback: Fallback,
    cache: OverLimitCache,
    calls: AtomicU64,
    errors: AtomicU64,
    check_script: Script,
    reconcile_script: Script,
}

/// Global limits in Redis shared by every node, local limits (÷ live nodes) when Redis is away.
pub struct ClusterLimiter {
    inner: Arc<Inner>,
    /// Dropped with the limiter: the background tasks see the channel close and stop.
    _shutdown: watch::Sender<()>,
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
        let client = Client::open(cfg.url.as_str()).map_err(RedisLimitError::Url)?;
        let quotas: Vec<(String, Quotas)> = tenants
            .iter()
            .map(|t| (t.id.clone(), Quotas::of(t)))
            .collect();
        let plans = quotas
            .iter()
            .filter_map(|(id, q)| Plan::new(&cfg.key_prefix, id, q).map(|p| (id.clone(), p)))
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
            plans,
            conn: RwLock::new(None),
            breaker: Breaker::new(cfg.breaker_failures),
            opened: Notify::new(),
            fallback: Fallback::new(quotas, nodes),
            cache: OverLimitCache::default(),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            check_script: Script::new(TOKEN_BUCKET_LUA),
            reconcile_script: Script::new(RECONCILE_LUA),
        });
        set_mode_gauges(false);
        gauge!(FALLBACK_DIVISOR).set(nodes as f64);
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

    /// Redis calls made on the request path (checks and reconciles; background probes not counted).
    pub fn redis_calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Failed or timed-out Redis calls on the request path.
    pub fn redis_errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// The live node count the fallback quotas are currently divided by.
    pub fn fallback_divisor(&self) -> usize {
        self.inner.fallback.divisor()
    }

    /// The Redis keys this limiter uses for `tenant` (None: tenant without limits).
    pub fn keys_of(&self, tenant: &str) -> Option<[String; 2]> {
        self.inner.plans.get(tenant).map(|p| p.keys.clone())
    }
}

impl RateLimiter for ClusterLimiter {
    fn check<'a>(&'a self, req: LimitRequest<'a>) -> LimitFuture<'a> {
        Box::pin(self.inner.check(req))
    }

    fn reconcile<'a>(&'a self, tenant: &'a str, reserved: u64, actual: u64) -> ReconcileFuture<'a> {
        Box::pin(self.inner.reconcile(tenant, reserved, actual))
    }

    fn mode(&self) -> &'static str {
        if self.inner.breaker.is_open() {
            "fallback"
        } else {
            "global"
        }
    }
}

impl Inner {
    fn local(&self) -> Arc<LocalLimiter> {
        self.fallback.get()
    }

    async fn check(&self, req: LimitRequest<'_>) -> Decision {
        let Some(plan) = self.plans.get(req.tenant) else {
            return Decision::unlimited();
        };
        let tokens = if plan.tpm > 0 { req.tokens } else { 0 };
        if plan.rpm == 0 && tokens == 0 {
            return Decision::unlimited();
        }
        if self.breaker.is_open() {
            return self.local().decide(req);
        }
        let clamped = tokens.min(plan.tpm);
        let now = Instant::now();
        // Request-only limits may be leased: several request tokens per Redis call.
        let lease = if tokens == 0 && req.requests == 1 {
            lease_size(plan.rpm, plan.burst, self.fallback.divisor())
        } else {
            0
        };
        if lease > 1 && plan.lease.take(now) {
            counter!(LEASE_HITS).increment(1);
            return Decision {
                allowed: true,
                limit: Some(plan.rpm),
                ..Decision::default()
            };
        }
        if let Some(hit) = self.cache.check(req.tenant, req.requests, clamped, now) {
            counter!(CACHE_HITS).increment(1);
            return plan.cached(hit, tokens > 0);
        }
        if lease > 1 {
            let d = self.call_check(plan, req, lease, 0).await;
            if d.allowed {
                plan.lease.grant(lease, Instant::now());
                return d;
            }
            // Fewer than a lease left: ask for exactly one.
            plan.lease.clear();
        }
        self.call_check(plan, req, req.requests, tokens).await
    }

    /// One script call taking `requests` and `tokens`; a failure answers from the local fallback.
    async fn call_check(
        &self,
        plan: &Plan,
        req: LimitRequest<'_>,
        requests: u32,
        tokens: u64,
    ) -> Decision {
        let clamped = tokens.min(plan.tpm);
        let mut inv = self.check_script.prepare_invoke();
        inv.key(&plan.keys[0])
            .key(&plan.keys[1])
            .arg(plan.rpm)
            .arg(plan.burst)
            .arg(requests)
            .arg(plan.tpm)
            .arg(tokens);
        let reply = match self.call::<Vec<i64>>(&inv).await {
            Ok(v) if v.len() >= 8 => v,
            Ok(v) => {
                self.failed(CallError::BadReply(v.len()));
                return self.local().decide(req);
            }
            Err(_) => return self.local().decide(req),
        };
        let d = plan.decision(&reply, tokens > 0);
        if !d.allowed {
            // Counted from the reply's arrival, so the entry never expires before Redis would
            // admit the request.
            let ms = |x: i64| Duration::from_millis(x.max(0) as u64);
            let (rw, tw) = (ms(reply[6]), ms(reply[7]));
            self.cache
                .refused(req.tenant, Instant::now(), rw, clamped, tw);
        }
        d
    }

    async fn reconcile(&self, tenant: &str, reserved: u64, actual: u64) {
        let Some(plan) = self.plans.get(tenant).filter(|p| p.tpm > 0) else {
            return;
        };
        let settled = reserved.min(plan.tpm);
        if settled == actual {
            return;
        }
        if actual < settled {
            self.cache.tokens_returned(tenant);
        }
        if self.breaker.is_open() {
            self.local().adjust_tokens(tenant, reserved, actual);
            return;
        }
        let mut inv = self.reconcile_script.prepare_invoke();
        inv.key(&plan.keys[1])
            .arg(plan.tpm)
            .arg(reserved)
            .arg(actual);
        if self.call::<i64>(&inv).await.is_err() {
            // Lost for the global bucket; at least the fallback bucket knows.
            self.local().adjust_tokens(tenant, reserved, actual);
        }
    }

    /// One script call within the per-call budget; failures are counted (and may open the breaker).
    async fn call<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, CallError> {
        let conn = self.conn.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(mut conn) = conn else {
            return Err(CallError::NoConnection);
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        counter!(REDIS_CALLS).increment(1);
        let err = match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.breaker.success();
                return Ok(v);
            }
            Ok(Err(e)) => CallError::Redis(e),
            Err(_) => CallError::Timeout,
        };
        let kind = err.kind();
        self.failed_kind(kind, &err);
        Err(err)
    }

    fn failed(&self, err: CallError) {
        self.failed_kind(err.kind(), &err);
    }

    fn failed_kind(&self, kind: &'static str, err: &CallError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        counter!(REDIS_ERRORS, "kind" => kind).increment(1);
        tracing::debug!(kind, error = %err, "rate limiter: Redis call failed, answered locally");
        if self.breaker.failure() {
            set_mode_gauges(false);
            tracing::warn!(
                mode = "fallback",
                previous = "global",
                redis = %self.url,
                kind,
                error = %err,
                failures = self.breaker.consecutive_failures(),
                live_nodes = self.fallback.divisor(),
                "rate limiter: Redis failing, switched to local fallback limits (quota / live nodes)"
            );
            self.opened.notify_one();
        }
    }

    /// Connect, load both scripts (so no request pays a NOSCRIPT round trip) and check that Redis
    /// answers within the per-call budget (a slower Redis would only flap the breaker).
    async fn connect(&self) -> Result<MultiplexedConnection, CallError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.connect_timeout));
        let setup = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            self.check_script.load_async(&mut conn).await?;
            self.reconcile_script.load_async(&mut conn).await?;
            Ok::<_, RedisError>(conn)
        };
        let mut conn = tokio::time::timeout(self.connect_timeout, setup)
            .await
            .map_err(|_| CallError::Timeout)?
            .map_err(CallError::Redis)?;
        let mut last = CallError::Timeout;
        let ping_cmd = ::redis::cmd("PING");
        for _ in 0..3 {
            let ping = ping_cmd.query_async::<String>(&mut conn);
            match tokio::time::timeout(self.timeout, ping).await {
                Ok(Ok(_)) => return Ok(conn),
                Ok(Err(e)) => last = CallError::Redis(e),
                Err(_) => last = CallError::Timeout,
            }
        }
        Err(last)
    }
}

fn set_mode_gauges(global: bool) {
    let (g, f) = if global { (1.0, 0.0) } else { (0.0, 1.0) };
    gauge!(MODE_GAUGE, "mode" => "global").set(g);
    gauge!(MODE_GAUGE, "mode" => "fallback").set(f);
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Resolves when the limiter is dropped (its shutdown sender closes the channel).
async fn closed(rx: &mut watch::Receiver<()>) {
    while rx.changed().await.is_ok() {}
}

/// Connects and probes while the breaker is open; closes it when Redis answers; on the next
/// opening drops the connection and waits `breaker_open_ms` before probing again.
async fn supervise(inner: Arc<Inner>, mut shutdown: watch::Receiver<()>) {
    let mut first = true;
    // Startup: the first failed probe says why the limiter stays in fallback.
    let mut warned = false;
    loop {
        if !first {
            tokio::select! {
                _ = closed(&mut shutdown) => return,
                _ = tokio::time::sleep(inner.open_for) => {}
            }
        }
        first = false;
        let probe = tokio::select! {
            _ = closed(&mut shutdown) => return,
            r = inner.connect() => r,
        };
        match probe {
            Ok(conn) => {
                *inner.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                if inner.breaker.close() {
                    set_mode_gauges(true);
                    tracing::info!(
                        mode = "global",
                        previous = "fallback",
                        redis = %inner.url,
                        "rate limiter: Redis answers, using global limits"
                    );
                }
                tokio::select! {
                    _ = closed(&mut shutdown) => return,
                    _ = inner.opened.notified() => {}
                }
                *inner.conn.write().unwrap_or_else(|e| e.into_inner()) = None;
                // The opening was logged with its cause: failed probes stay at debug level.
                warned = true;
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(
                    mode = "fallback",
                    redis = %inner.url,
                    error = %e,
                    retry_ms = inner.open_for.as_millis() as u64,
                    "rate limiter: Redis unreachable, keeping local fallback limits"
                );
            }
            Err(e) => tracing::debug!(error = %e, "rate limiter: Redis probe failed"),
        }
    }
}

/// Re-divides the fallback quotas when the live node count changes.
async fn follow_nodes(
    inner: Arc<Inner>,
    mut nodes: watch::Receiver<usize>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = closed(&mut shutdown) => return,
            r = nodes.changed() => if r.is_err() { return },
        }
        let n = *nodes.borrow_and_update();
        if let Some(previous) = inner.fallback.resize(n) {
            let n = inner.fallback.divisor();
            gauge!(FALLBACK_DIVISOR).set(n as f64);
            tracing::info!(
                live_nodes = n,
                previous,
                "rate limiter: fallback quotas re-divided among live nodes"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitsConfig;

    fn tenant(id: &str, rpm: Option<u32>, burst: Option<u32>, tpm: Option<u64>) -> TenantConfig {
        let limits = LimitsConfig {
            requests_per_minute: rpm,
            burst,
            tokens_per_minute: tpm,
        };
        TenantConfig::with_limits(id, limits)
    }

    fn cfg(url: &str) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            timeout_ms: 5,
            breaker_failures: 3,
            breaker_open_ms: 50,
            key_prefix: "sluice".into(),
        }
    }

    fn req(tenant: &str) -> LimitRequest<'_> {
        LimitRequest {
            tenant,
            requests: 1,
            tokens: 0,
        }
    }

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        assert_eq!(
            bucket_keys("sluice", "acme"),
            [
                "sluice:{acme}:req".to_string(),
                "sluice:{acme}:tok".to_string()
            ]
        );
        let [r, t] = bucket_keys("p{x}", "}a{b%");
        assert_eq!(r, "p%7Bx%7D:{%7Da%7Bb%25}:req");
        assert_eq!(t, "p%7Bx%7D:{%7Da%7Bb%25}:tok");
    }

    #[test]
    fn plan_defaults_burst_like_the_local_limiter() {
        let q = Quotas::of(&tenant("a", Some(600), None, None));
        let p = Plan::new("s", "a", &q).unwrap();
        assert_eq!((p.rpm, p.burst, p.tpm), (600, 10, 0));
        assert!(Plan::new("s", "a", &Quotas::of(&tenant("a", None, None, None))).is_none());
    }

    #[test]
    fn script_reply_becomes_a_decision() {
        let p = Plan::new(
            "s",
            "a",
            &Quotas::of(&tenant("a", Some(60), Some(5), Some(1000))),
        )
        .unwrap();
        let d = p.decision(&[1, 4, 800, 0, 1000, 12000, 0, 0], true);
        assert!(d.allowed);
        assert_eq!(d.limit, Some(60));
        assert_eq!(d.remaining, Some(4));
        assert_eq!(d.reset, Duration::from_secs(1));
        assert_eq!(d.tokens_limit, Some(1000));
        assert_eq!(d.tokens_remaining, Some(800));
        assert_eq!(d.retry_after, None);
        let d = p.decision(&[0, 0, 100, 900, 5000, 54000, 900, 0], false);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_millis(900)));
        assert_eq!(d.tokens_limit, None);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn needs_a_runtime() {
        let (_tx, rx) = watch::channel(1);
        assert!(matches!(
            ClusterLimiter::new(&cfg("redis://127.0.0.1:1"), &[], rx),
            Err(RedisLimitError::NoRuntime)
        ));
    }

    #[tokio::test]
    async fn without_redis_it_answers_locally_divided_by_live_nodes() {
        // Nothing listens on port 1: the limiter stays in fallback and never blocks a request.
        let (tx, rx) = watch::channel(2);
        let tenants = [
            tenant("a", Some(60), Some(10), None),
            tenant("free", None, None, None),
        ];
        let l = ClusterLimiter::new(&cfg("redis://127.0.0.1:1"), &tenants, rx).unwrap();
        assert_eq!(l.mode(), "fallback");
        assert_eq!(l.fallback_divisor(), 2);
        let mut admitted = 0;
        for _ in 0..20 {
            if l.check(req("a")).await.allowed {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        assert_eq!(l.check(req("free")).await, Decision::unlimited());
        assert_eq!(l.redis_calls(), 0);
        tx.send(5).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while l.fallback_divisor() != 5 {
            assert!(Instant::now() < deadline, "fallback not re-divided");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let admitted = {
            let mut n = 0;
            for _ in 0..20 {
                n += l.check(req("a")).await.allowed as usize;
            }
            n
        };
        assert_eq!(admitted, 2);
        assert_eq!(l.mode(), "fallback");
    }
}
