//! Every metric Sluice exports: name, type, labels and meaning, in one table. The stages never name
//! a metric themselves; they call the typed helpers of [`super::Metrics`]. README's metrics table is
//! rendered from this list ([`markdown_table`]) and a test keeps the two equal.

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, kind, label names and a one-line meaning.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Def {
    Def {
        name,
        kind,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

// Receive and the whole request.
pub const REQUESTS: Def = def(
    "sluice_requests_total",
    Counter,
    &["route", "backend", "status"],
    "requests answered",
);
pub const REQUEST_DURATION: Def = def(
    "sluice_request_duration_seconds",
    Histogram,
    &["route"],
    "time to response headers",
);
pub const ERRORS: Def = def(
    "sluice_errors_total",
    Counter,
    &["kind"],
    "errors answered by Sluice, by kind",
);
// Shape.
pub const LIMITER_DECISIONS: Def = def(
    "sluice_limiter_decisions_total",
    Counter,
    &["tenant", "outcome"],
    "allowed / queued (booked a later slot) / released (gave a booked slot back) / limited / over_budget (a spend budget refused)",
);
pub const QUEUE_LENGTH: Def = def(
    "sluice_queue_length",
    Gauge,
    &["priority"],
    "requests waiting for a backend slot or for their tenant's tokens",
);
pub const QUEUE_WAIT: Def = def(
    "sluice_queue_wait_seconds",
    Histogram,
    &["priority"],
    "time spent queued",
);
pub const SHED: Def = def(
    "sluice_shed_total",
    Counter,
    &["reason", "priority"],
    "queue_full, deadline, max_wait, congested",
);
pub const CONCURRENCY_LIMIT: Def = def(
    "sluice_backend_concurrency_limit",
    Gauge,
    &["backend"],
    "current adaptive limit (0: unlimited)",
);
pub const RUNTIME_LAG: Def = def(
    "sluice_runtime_lag_seconds",
    Gauge,
    &["worker"],
    "how late the worker's runtime wakes (average): above 15 ms latency samples do not move concurrency limits",
);
// Rate limiter (Shape's seam).
pub const LIMITER_MODE: Def = def(
    "sluice_limiter_mode",
    Gauge,
    &["mode"],
    "1 for the current mode: local, global, fallback or partial (some tenants in fallback)",
);
pub const LIMITER_REDIS_CALLS: Def = def(
    "sluice_limiter_redis_calls_total",
    Counter,
    &[],
    "Redis calls on the request path (checks and reconciles)",
);
pub const LIMITER_REDIS_ERRORS: Def = def(
    "sluice_limiter_redis_errors_total",
    Counter,
    &["kind"],
    "failed Redis calls: timeout, error",
);
pub const LIMITER_CACHE_HITS: Def = def(
    "sluice_limiter_cache_hits_total",
    Counter,
    &[],
    "refusals answered by the over-limit cache",
);
pub const LIMITER_LEASE_HITS: Def = def(
    "sluice_limiter_lease_hits_total",
    Counter,
    &[],
    "admissions answered from a request lease (no Redis call)",
);
pub const LIMITER_FALLBACK_TENANTS: Def = def(
    "sluice_limiter_fallback_tenants",
    Gauge,
    &[],
    "tenants answered by the local fallback (Redis, or their Redis Cluster shard, failing)",
);
pub const LIMITER_FALLBACK_DIVISOR: Def = def(
    "sluice_limiter_fallback_divisor",
    Gauge,
    &[],
    "live nodes the fallback divides limits by",
);
// Route and Balance.
pub const ROUTING_DECISIONS: Def = def(
    "sluice_routing_decisions_total",
    Counter,
    &["route", "backend", "algorithm"],
    "balancer picks",
);
pub const BACKEND_HEALTHY: Def = def(
    "sluice_backend_healthy",
    Gauge,
    &["backend"],
    "1 healthy, 0 down (active probes)",
);
pub const BACKEND_EJECTIONS: Def = def(
    "sluice_backend_ejections_total",
    Counter,
    &["backend"],
    "passive ejections",
);
pub const BACKEND_PROBE_BACKS: Def = def(
    "sluice_backend_probe_backs_total",
    Counter,
    &["backend", "result"],
    "probes of an ejected backend: ok (the ejection ends) or failed",
);
pub const BACKEND_IN_FLIGHT: Def = def(
    "sluice_backend_in_flight",
    Gauge,
    &["backend"],
    "requests in flight",
);
pub const BACKEND_QUOTA_REMAINING: Def = def(
    "sluice_backend_quota_remaining",
    Gauge,
    &["backend", "kind"],
    "what the provider's rate-limit headers last said remains: requests, tokens, input_tokens, output_tokens",
);
pub const BACKEND_QUOTA_RESET: Def = def(
    "sluice_backend_quota_reset_seconds",
    Gauge,
    &["backend", "kind"],
    "seconds until that window is whole again, as last reported",
);
// Deliver.
pub const UPSTREAM_DURATION: Def = def(
    "sluice_upstream_duration_seconds",
    Histogram,
    &["backend"],
    "upstream time, whole body or stream",
);
pub const TTFT: Def = def(
    "sluice_time_to_first_token_seconds",
    Histogram,
    &["backend"],
    "time to first token of streams",
);
pub const FAILOVERS: Def = def(
    "sluice_failovers_total",
    Counter,
    &["backend", "reason"],
    "connect, io, timeout, 5xx, rate_limited, body (answer cut short or too large), malformed (not JSON)",
);
pub const TOKENS: Def = def(
    "sluice_tokens_total",
    Counter,
    &["tenant", "backend", "kind"],
    "input / output tokens from `usage`",
);
pub const COST: Def = def(
    "sluice_cost_microusd_total",
    Counter,
    &["tenant", "backend"],
    "cost in millionths of a dollar",
);
pub const SPEND: Def = def(
    "sluice_spend_usd",
    Gauge,
    &["tenant", "period"],
    "what the tenant spent in the current budget period (day, month, window), as this node last saw it",
);
pub const BUDGET_REMAINING: Def = def(
    "sluice_budget_remaining_usd",
    Gauge,
    &["tenant", "period"],
    "what is left of the tenant's budget in the current period, as this node last saw it",
);
pub const CREDENTIALS_REJECTED: Def = def(
    "sluice_backend_credentials_rejected_total",
    Counter,
    &["backend"],
    "upstream 401/403 to the gateway's own key: the backend is misconfigured",
);
pub const STREAM_FAULTS: Def = def(
    "sluice_stream_faults_total",
    Counter,
    &["kind"],
    "upstream streams not passed on whole: truncated, malformed, too_large, idle, total_timeout, upstream_error",
);
// Traces (observe.otlp).
pub const TRACE_SPANS_EXPORTED: Def = def(
    "sluice_trace_spans_exported_total",
    Counter,
    &[],
    "spans accepted by the OTLP collector",
);
pub const TRACE_SPANS_DROPPED: Def = def(
    "sluice_trace_spans_dropped_total",
    Counter,
    &["reason"],
    "spans not exported: queue_full (the bounded export queue was full), export_failed",
);
// Cluster.
pub const CLUSTER_MEMBERS: Def = def(
    "sluice_cluster_members",
    Gauge,
    &[],
    "live members seen by this node",
);
pub const CLUSTER_MEMBERSHIP_CHANGES: Def = def(
    "sluice_cluster_membership_changes_total",
    Counter,
    &["change"],
    "joined, left, restarted",
);
pub const GOSSIP_REJECTED: Def = def(
    "sluice_gossip_rejected_total",
    Counter,
    &["reason"],
    "gossip packets dropped: malformed, unknown_key, auth, stale, replay, decode (received); too_large (not sent)",
);
// Reload.
pub const CONFIG_RELOADS: Def = def(
    "sluice_config_reloads_total",
    Counter,
    &["result"],
    "config reloads by result: ok, invalid or restart_required",
);
pub const CONFIG_INFO: Def = def(
    "sluice_config_info",
    Gauge,
    &["version"],
    "1 for the config version served (a short hash of the file), 0 for earlier ones",
);

/// Every metric, in README order.
pub const ALL: &[Def] = &[
    REQUESTS,
    REQUEST_DURATION,
    ERRORS,
    LIMITER_DECISIONS,
    QUEUE_LENGTH,
    QUEUE_WAIT,
    SHED,
    CONCURRENCY_LIMIT,
    RUNTIME_LAG,
    LIMITER_MODE,
    LIMITER_REDIS_CALLS,
    LIMITER_REDIS_ERRORS,
    LIMITER_CACHE_HITS,
    LIMITER_LEASE_HITS,
    LIMITER_FALLBACK_TENANTS,
    LIMITER_FALLBACK_DIVISOR,
    ROUTING_DECISIONS,
    BACKEND_HEALTHY,
    BACKEND_EJECTIONS,
    BACKEND_PROBE_BACKS,
    BACKEND_IN_FLIGHT,
    BACKEND_QUOTA_REMAINING,
    BACKEND_QUOTA_RESET,
    UPSTREAM_DURATION,
    TTFT,
    FAILOVERS,
    TOKENS,
    COST,
    SPEND,
    BUDGET_REMAINING,
    CREDENTIALS_REJECTED,
    STREAM_FAULTS,
    TRACE_SPANS_EXPORTED,
    TRACE_SPANS_DROPPED,
    CLUSTER_MEMBERS,
    CLUSTER_MEMBERSHIP_CHANGES,
    GOSSIP_REJECTED,
    CONFIG_RELOADS,
    CONFIG_INFO,
];

/// README's metrics table, rendered from [`ALL`].
pub fn markdown_table() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for d in ALL {
        let kind = match d.kind {
            Counter => "counter",
            Gauge => "gauge",
            Histogram => "histogram",
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {} | {} |\n",
            d.name,
            d.labels.join(", "),
            d.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("sluice_"), "{}", d.name);
            match d.kind {
                Counter => assert!(d.name.ends_with("_total"), "{}", d.name),
                Histogram => assert!(d.name.ends_with("_seconds"), "{}", d.name),
                Gauge => assert!(!d.name.ends_with("_total"), "{}", d.name),
            }
        }
    }

    #[test]
    fn readme_metrics_table_is_the_catalogue() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's metrics table differs from src/observe/catalogue.rs; replace it with:\n{table}"
        );
    }
}
