//! Switching between global and fallback mode: request-path failures open the breaker; a background
//! task reconnects, probes and closes it; another re-divides the fallback when the live node count
//! changes. One log line per mode change.

use super::cluster_limiter::Inner;
use super::local::Levels;
use super::script::CallError;
use crate::observe::Metrics;
use ::redis::aio::MultiplexedConnection;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;

impl Inner {
    pub(super) fn failed(&self, err: CallError) {
        self.failed_kind(err.kind(), &err);
    }

    pub(super) fn failed_kind(&self, kind: &'static str, err: &CallError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        Metrics::limiter_redis_error(kind);
        tracing::debug!(kind, error = %err, "rate limiter: Redis call failed, answered locally");
        self.unsettled.store(true, Ordering::Relaxed);
        let (streak, opened) = self.breaker.failure_counted();
        if streak == 1 {
            // No capacity appears from the switch: from the first failed call on, the fallback
            // answers from this node's share of what the global buckets held at the last answer.
            self.fallback.seed(&self.last_levels());
            self.seed_budgets();
        }
        if opened {
            Metrics::limiter_mode("fallback", &["global"]);
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
}

impl Inner {
    /// Charge what the fallback admitted to the global buckets (`lua/adjust.lua`), so an outage or a
    /// breaker flap adds no capacity, and cap them at what this node knows they hold, so a Redis
    /// that restarted empty keeps the cluster's debt. A failed charge is dropped (Redis just came
    /// back; the next failure streak starts over from its answers).
    pub(super) async fn charge_spent(&self, conn: &mut MultiplexedConnection) {
        self.charge_budgets(conn).await;
        for s in self.fallback.settle() {
            let Some(plan) = self.plan(&s.tenant) else {
                continue;
            };
            let inv = plan.adjust(&self.adjust_script, (-s.spent.0, -s.spent.1), s.ceiling);
            let call = inv.invoke_async::<i64>(conn);
            if !matches!(
                tokio::time::timeout(self.connect_timeout, call).await,
                Ok(Ok(_))
            ) {
                tracing::debug!(
                    tenant = %s.tenant,
                    requests = s.spent.0,
                    tokens = s.spent.1,
                    "rate limiter: fallback spend not charged"
                );
            }
        }
    }

    /// Each tenant's global levels at the last answer from Redis (tenants never answered for are
    /// left out: their fallback starts empty).
    fn last_levels(&self) -> HashMap<String, Levels> {
        self.plans
            .load()
            .iter()
            .filter_map(|(id, p)| p.last_levels().map(|l| (id.clone(), l)))
            .collect()
    }
}

/// Resolves when the limiter is dropped (its shutdown sender closes the channel).
async fn closed(rx: &mut watch::Receiver<()>) {
    while rx.changed().await.is_ok() {}
}

/// Connects and probes while the breaker is open; closes it when Redis answers; on the next
/// opening drops the connection and waits `breaker_open_ms` before probing again.
pub(super) async fn supervise(inner: Arc<Inner>, mut shutdown: watch::Receiver<()>) {
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
        let settle = || {
            inner.settled.send_replace(true);
        };
        match probe {
            Ok(mut conn) => {
                // What the fallback admitted counts against the global buckets before they answer
                // again (and once more after, for requests that were between the two).
                inner.charge_spent(&mut conn).await;
                *inner.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                let closed_now = inner.breaker.close();
                inner.charge_spent(&mut conn).await;
                settle();
                if closed_now {
                    Metrics::limiter_mode("global", &["fallback"]);
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
            Err(e) if !warned && e.auth_failed() => {
                settle();
                warned = true;
                tracing::error!(
                    mode = "fallback",
                    redis = %inner.url,
                    cause = "auth",
                    error = %e,
                    retry_ms = inner.open_for.as_millis() as u64,
                    "rate limiter: Redis authentication failed (check the user and password in cluster.redis.url and the user's ACL), keeping local fallback limits"
                );
            }
            Err(e) if !warned => {
                settle();
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
pub(super) async fn follow_nodes(
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
        inner.budgets.fallback.resize(n);
        if let Some(previous) = inner.fallback.resize(n) {
            let n = inner.fallback.divisor();
            Metrics::limiter_fallback_divisor(n);
            tracing::info!(
                live_nodes = n,
                previous,
                "rate limiter: fallback quotas re-divided among live nodes"
            );
        }
    }
}
