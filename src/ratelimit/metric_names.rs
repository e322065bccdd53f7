//! The metrics the cluster limiter exports: their names, and the setter of the mode gauge.

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

/// Sets [`MODE_GAUGE`]: 1 for the current mode (`global` or `fallback`), 0 for the other.
pub(super) fn set_mode_gauges(global: bool) {
    let (g, f) = if global { (1.0, 0.0) } else { (0.0, 1.0) };
    metrics::gauge!(MODE_GAUGE, "mode" => "global").set(g);
    metrics::gauge!(MODE_GAUGE, "mode" => "fallback").set(f);
}
