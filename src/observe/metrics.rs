//! The recorder behind `/metrics`, and the typed helpers every stage records through (names and
//! labels come from [`super::catalogue`]).
//!
//! Labels stay low-cardinality: route and backend names come from config, statuses are numbers,
//! error kinds are a fixed set.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use super::catalogue::*;
use crate::config::Priority;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the global recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("static buckets are valid");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // A second recorder in one process (tests) is harmless: keep the first.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Handles by label set, so the hot path neither allocates label strings nor hashes them in the
/// registry: a read lock and a lookup by a precomputed u64. Label values come from config (routes,
/// backends, tenants), so the map stays small.
struct Cache<V> {
    map: RwLock<HashMap<u64, V, BuildHasherDefault<Prehashed>>>,
}

/// The keys are hashes already ([`key`]): use them as they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl<V> Cache<V> {
    fn new() -> Self {
        Cache {
            map: RwLock::new(HashMap::default()),
        }
    }
    /// Run `f` on the handle for `key`, registering it with `make` the first time.
    fn with(&self, key: u64, make: impl FnOnce() -> V, f: impl FnOnce(&V)) {
        if let Some(v) = self.map.read().expect("metric cache").get(&key) {
            return f(v);
        }
        let v = make();
        f(self
            .map
            .write()
            .expect("metric cache")
            .entry(key)
            .or_insert(v));
    }
}

fn key(parts: &[&str], n: u64) -> u64 {
    let mut h = crate::hash::stable_hash(&n.to_le_bytes());
    for p in parts {
        h = h.rotate_left(17) ^ crate::hash::stable_hash(p.as_bytes());
    }
    h
}

macro_rules! cache {
    ($name:ident, $t:ty) => {
        static $name: LazyLock<Cache<$t>> = LazyLock::new(Cache::new);
    };
}
cache!(REQ_COUNT, Counter);
cache!(REQ_DUR, Histogram);
cache!(ROUTING, Counter);
cache!(TOKENS_C, (Counter, Counter, Counter));
cache!(LIMITER, Counter);
cache!(BUDGET_G, (Gauge, Gauge));

/// One backend's handles, resolved when the backend is built: the per-request updates then cost an
/// atomic operation, no lookup.
#[derive(Clone)]
pub struct BackendHandles {
    pub in_flight: Gauge,
    pub upstream: Histogram,
    pub ttft: Histogram,
}

impl std::fmt::Debug for BackendHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendHandles")
    }
}

/// Typed helpers so call sites cannot misspell a name or a label.
pub struct Metrics;

impl Metrics {
    pub fn request(route: &str, backend: &str, status: u16, elapsed: Duration) {
        REQ_COUNT
            .with(key(&[route, backend], status as u64), || {
                counter!(REQUESTS.name, "route" => route.to_string(), "backend" => backend.to_string(), "status" => status.to_string())
            }, |h| h.increment(1));
        REQ_DUR.with(
            key(&[route], 0),
            || histogram!(REQUEST_DURATION.name, "route" => route.to_string()),
            |h| h.record(elapsed.as_secs_f64()),
        );
    }
    pub fn backend_handles(backend: &str) -> BackendHandles {
        BackendHandles {
            in_flight: gauge!(BACKEND_IN_FLIGHT.name, "backend" => backend.to_string()),
            upstream: histogram!(UPSTREAM_DURATION.name, "backend" => backend.to_string()),
            ttft: histogram!(TTFT.name, "backend" => backend.to_string()),
        }
    }
    pub fn routing(route: &str, backend: &str, algorithm: &'static str) {
        ROUTING
            .with(key(&[route, backend, algorithm], 0), || {
                counter!(ROUTING_DECISIONS.name, "route" => route.to_string(), "backend" => backend.to_string(), "algorithm" => algorithm)
            }, |h| h.increment(1));
    }
    /// `u32::MAX` (no limit) is exported as 0.
    pub fn concurrency_limit(backend: &str, limit: u32) {
        let v = if limit == u32::MAX { 0.0 } else { limit as f64 };
        gauge!(CONCURRENCY_LIMIT.name, "backend" => backend.to_string()).set(v);
    }
    /// A config reload's result: `ok`, `invalid` or `restart_required`.
    pub fn config_reload(result: &'static str) {
        counter!(CONFIG_RELOADS.name, "result" => result).increment(1);
    }
    /// The config version now served (`previous`: the one it replaced, now 0).
    pub fn config_version(version: &str, previous: Option<&str>) {
        if let Some(p) = previous.filter(|p| !p.is_empty() && *p != version) {
            gauge!(CONFIG_INFO.name, "version" => p.to_string()).set(0.0);
        }
        gauge!(CONFIG_INFO.name, "version" => version.to_string()).set(1.0);
    }
    pub fn runtime_lag(worker: usize, lag: std::time::Duration) {
        gauge!(RUNTIME_LAG.name, "worker" => worker.to_string()).set(lag.as_secs_f64());
    }
    pub fn healthy(backend: &str, healthy: bool) {
        gauge!(BACKEND_HEALTHY.name, "backend" => backend.to_string()).set(if healthy {
            1.0
        } else {
            0.0
        });
    }
    pub fn ejected(backend: &str) {
        counter!(BACKEND_EJECTIONS.name, "backend" => backend.to_string()).increment(1);
    }
    pub fn probe_back(backend: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        counter!(BACKEND_PROBE_BACKS.name, "backend" => backend.to_string(), "result" => result)
            .increment(1);
    }
    pub fn quota(backend: &str, kind: &'static str, remaining: u64, reset_ms: u64) {
        gauge!(BACKEND_QUOTA_REMAINING.name, "backend" => backend.to_string(), "kind" => kind)
            .set(remaining as f64);
        gauge!(BACKEND_QUOTA_RESET.name, "backend" => backend.to_string(), "kind" => kind)
            .set(reset_ms as f64 / 1000.0);
    }
    pub fn failover(backend: &str, reason: &'static str) {
        counter!(FAILOVERS.name, "backend" => backend.to_string(), "reason" => reason).increment(1);
    }
    pub fn error(kind: &'static str) {
        counter!(ERRORS.name, "kind" => kind).increment(1);
    }
    pub fn tokens(tenant: &str, backend: &str, input: u64, output: u64, cost_usd: f64) {
        let make = || {
            let c = |kind: &'static str| counter!(TOKENS.name, "tenant" => tenant.to_string(), "backend" => backend.to_string(), "kind" => kind);
            let cost = counter!(COST.name, "tenant" => tenant.to_string(), "backend" => backend.to_string());
            (c("input"), c("output"), cost)
        };
        TOKENS_C.with(key(&[tenant, backend], 0), make, |(i, o, cost)| {
            i.increment(input);
            o.increment(output);
            // Counters are integers: cost is kept in micro-dollars.
            cost.increment((cost_usd * 1_000_000.0).round() as u64);
        });
    }
    /// A tenant's spend and what is left of its budget in a period (micro-dollars in, dollars out).
    pub fn budget_spend(tenant: &str, period: &'static str, spent: u64, limit: u64) {
        let make = || {
            let t = tenant.to_string();
            (
                gauge!(SPEND.name, "tenant" => t.clone(), "period" => period),
                gauge!(BUDGET_REMAINING.name, "tenant" => t, "period" => period),
            )
        };
        BUDGET_G.with(key(&[tenant, period], 0), make, |(s, r)| {
            s.set(spent as f64 / 1e6);
            r.set(limit.saturating_sub(spent) as f64 / 1e6);
        });
    }
    pub fn limiter(tenant: &str, outcome: &'static str) {
        LIMITER.with(
            key(&[tenant, outcome], 0),
            || counter!(LIMITER_DECISIONS.name, "tenant" => tenant.to_string(), "outcome" => outcome),
            |h| h.increment(1),
        );
    }
    /// A request started waiting (for a backend slot or its tenant's tokens).
    pub fn queue_entered(p: Priority) {
        gauge!(QUEUE_LENGTH.name, "priority" => p.as_str()).increment(1.0);
    }
    /// A request stopped waiting after `waited`, admitted or not.
    pub fn queue_left(p: Priority, waited: Duration) {
        gauge!(QUEUE_LENGTH.name, "priority" => p.as_str()).decrement(1.0);
        Metrics::queue_wait(p, waited);
    }
    /// The queue length of class `p` changed by `delta`.
    pub fn queue_length(p: Priority, delta: f64) {
        gauge!(QUEUE_LENGTH.name, "priority" => p.as_str()).increment(delta);
    }
    pub fn queue_wait(p: Priority, waited: Duration) {
        histogram!(QUEUE_WAIT.name, "priority" => p.as_str()).record(waited.as_secs_f64());
    }
    /// A request of class `p` left a queue without starting, for `reason`.
    pub fn shed(reason: &'static str, p: Priority) {
        counter!(SHED.name, "reason" => reason, "priority" => p.as_str()).increment(1);
    }
    /// The limiter's mode: 1 for `mode`, 0 for the others it can be in.
    pub fn limiter_mode(mode: &'static str, others: &[&'static str]) {
        gauge!(LIMITER_MODE.name, "mode" => mode).set(1.0);
        for o in others {
            gauge!(LIMITER_MODE.name, "mode" => *o).set(0.0);
        }
    }
    pub fn limiter_redis_call() {
        counter!(LIMITER_REDIS_CALLS.name).increment(1);
    }
    /// `kind`: `timeout` or `error`.
    pub fn limiter_redis_error(kind: &'static str) {
        counter!(LIMITER_REDIS_ERRORS.name, "kind" => kind).increment(1);
    }
    pub fn limiter_cache_hit() {
        counter!(LIMITER_CACHE_HITS.name).increment(1);
    }
    pub fn limiter_lease_hit() {
        counter!(LIMITER_LEASE_HITS.name).increment(1);
    }
    pub fn limiter_fallback_tenants(n: usize) {
        gauge!(LIMITER_FALLBACK_TENANTS.name).set(n as f64);
    }
    pub fn limiter_fallback_divisor(nodes: usize) {
        gauge!(LIMITER_FALLBACK_DIVISOR.name).set(nodes as f64);
    }
    pub fn cluster_members(n: usize) {
        gauge!(CLUSTER_MEMBERS.name).set(n as f64);
    }
    /// `change`: `joined`, `left` or `restarted`.
    pub fn membership_change(change: &'static str) {
        counter!(CLUSTER_MEMBERSHIP_CHANGES.name, "change" => change).increment(1);
    }
    /// A gossip packet dropped, by [`reason`](crate::cluster::seal::Reject::label).
    pub fn gossip_rejected(reason: &'static str) {
        counter!(GOSSIP_REJECTED.name, "reason" => reason).increment(1);
    }
    /// An upstream stream that was not passed on whole, by [`kind`](crate::translate::StreamFault::label).
    pub fn stream_fault(kind: &'static str) {
        counter!(STREAM_FAULTS.name, "kind" => kind).increment(1);
    }
    /// An upstream refused the key Sluice injects for `backend`.
    pub fn credentials_rejected(backend: &str) {
        counter!(CREDENTIALS_REJECTED.name, "backend" => backend.to_string()).increment(1);
    }
    /// Spans the OTLP collector accepted.
    pub fn trace_spans_exported(n: u64) {
        counter!(TRACE_SPANS_EXPORTED.name).increment(n);
    }
    /// Spans dropped before export, by reason (`queue_full`, `export_failed`).
    pub fn trace_spans_dropped(reason: &'static str, n: u64) {
        counter!(TRACE_SPANS_DROPPED.name, "reason" => reason).increment(n);
    }
}
