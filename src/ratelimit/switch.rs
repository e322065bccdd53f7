//! Switching between global and fallback mode: request-path failures open the breaker; a background
//! task reconnects, probes and closes it; another re-divides the fallback when the live node count
//! changes. One log line per mode change.

use super::cluster_limiter::Inner;
use super::group::Group;
use super::local::Levels;
use super::script::CallError;
use super::topology::Conn;
use crate::observe::Metrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;

/// Every value of `sluice_limiter_mode` a cluster limiter reports.
const MODES: [&str; 3] = ["global", "fallback", "partial"];

impl Inner {
    pub(super) fn failed(&self, g: &Group, err: CallError) {
        self.failed_kind(g, err.kind(), &err);
    }

    pub(super) fn failed_kind(&self, g: &Group, kind: &'static str, err: &CallError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        Metrics::limiter_redis_error(kind);
        tracing::debug!(kind, group = %g.label, error = %err, "rate limiter: Redis call failed, answered locally");
        g.unsettled.store(true, Ordering::Relaxed);
        let (streak, opened) = g.breaker.failure_counted();
        if streak == 1 {
            // No capacity appears from the switch: from the first failed call on, the fallback
            // answers from this node's share of what the global buckets held at the last answer.
            g.fallback.seed(&self.last_levels(g));
            self.seed_budgets(g);
        }
        if opened {
            let mode = self.publish_mode();
            tracing::warn!(
                mode,
                group = %g.label,
                tenants = g.tenants().len(),
                redis = %self.url,
                kind,
                error = %err,
                failures = g.breaker.consecutive_failures(),
                live_nodes = g.fallback.divisor(),
                "rate limiter: Redis failing, switched to local fallback limits (quota / live nodes)"
            );
            self.opened.notify_one();
        }
    }

    /// `global` (every group's breaker closed), `fallback` (all open) or `partial`.
    pub(super) fn mode(&self) -> &'static str {
        match self.groups.iter().filter(|g| g.breaker.is_open()).count() {
            0 => "global",
            n if n == self.groups.len() => "fallback",
            _ => "partial",
        }
    }

    pub(super) fn fallback_tenants(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.breaker.is_open())
            .flat_map(|g| g.tenants())
            .collect();
        out.sort();
        out
    }

    /// Set the mode gauges (and the count of tenants in fallback); returns the mode.
    pub(super) fn publish_mode(&self) -> &'static str {
        let mode = self.mode();
        let others: Vec<&'static str> = MODES.iter().copied().filter(|m| *m != mode).collect();
        Metrics::limiter_mode(mode, &others);
        Metrics::limiter_fallback_tenants(self.fallback_tenants().len());
        mode
    }

    /// Charge what the group's fallback admitted to the global buckets (`lua/adjust.lua`), so an
    /// outage or a breaker flap adds no capacity, and cap them at what this node knows they hold, so
    /// a Redis that restarted empty keeps the cluster's debt. A failed charge is dropped (Redis just
    /// came back; the next failure streak starts over from its answers).
    pub(super) async fn charge_spent(&self, g: &Group, conn: &mut Conn) {
        self.charge_budgets(g, conn).await;
        for s in g.fallback.settle() {
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

    /// The group's tenants' global levels at the last answer from Redis (tenants never answered
    /// for are left out: their fallback starts empty).
    fn last_levels(&self, g: &Group) -> HashMap<String, Levels> {
        g.tenants()
            .into_iter()
            .filter_map(|id| {
                let l = self.plan(&id)?.last_levels()?;
                Some((id, l))
            })
            .collect()
    }

    /// Back to global limits for `g`: what its fallback admitted is charged before its buckets
    /// answer again (and once more after, for requests that were between the two). True when this
    /// closed its breaker.
    async fn close_group(&self, g: &Group, conn: &mut Conn) -> bool {
        self.charge_spent(g, conn).await;
        let closed_now = g.breaker.close();
        self.charge_spent(g, conn).await;
        closed_now
    }

    /// `groups` groups of `tenants` tenants returned to global limits: one log line.
    fn log_closed(&self, groups: usize, tenants: usize) {
        if groups == 0 {
            return;
        }
        let mode = self.publish_mode();
        tracing::info!(
            mode,
            groups,
            tenants,
            redis = %self.url,
            "rate limiter: Redis answers, using global limits"
        );
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
        let settle = &settle;
        match probe {
            Ok(mut conn) => {
                *inner.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                if inner.connector.sharded() {
                    // The cluster client keeps its connections and slot map: the connection
                    // stays, and each slot group is probed on its own.
                    follow_slots(&inner, conn, &mut shutdown, settle).await;
                    return;
                }
                let g = &inner.groups[0];
                if inner.close_group(g, &mut conn).await {
                    inner.log_closed(1, g.tenants().len());
                }
                settle();
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

/// Open slot groups probed per round before the others: every probe of a dead shard makes the
/// cluster client refresh its slot map, which holds calls to every shard for a moment.
const PROBE_SAMPLE: usize = 3;

/// Redis Cluster: every `breaker_open_ms` (and at once on the first round), probe a few open slot
/// groups (in turn); when one answers, probe all the open ones together and close those whose shard
/// answers.
async fn follow_slots(
    inner: &Arc<Inner>,
    mut conn: Conn,
    shutdown: &mut watch::Receiver<()>,
    settle: &(dyn Fn() + Sync),
) {
    let mut turn = 0;
    loop {
        let open: Vec<usize> = (0..inner.groups.len())
            .filter(|&i| inner.groups[i].breaker.is_open())
            .collect();
        let sample: Vec<usize> = (0..PROBE_SAMPLE.min(open.len()))
            .map(|k| open[(turn + k) % open.len()])
            .collect();
        turn = turn.wrapping_add(PROBE_SAMPLE);
        let mut answered = probe_all(inner, &conn, &sample).await;
        if !answered.is_empty() {
            let rest: Vec<usize> = open.into_iter().filter(|i| !sample.contains(i)).collect();
            answered.extend(probe_all(inner, &conn, &rest).await);
            // A promoted replica may not hold the scripts yet (best effort: NOSCRIPT reloads too).
            let _ = inner.load_scripts(&mut conn).await;
        }
        let (mut groups, mut tenants) = (0, 0);
        for i in answered {
            let g = &inner.groups[i];
            if inner.close_group(g, &mut conn).await {
                groups += 1;
                tenants += g.tenants().len();
            }
        }
        inner.log_closed(groups, tenants);
        settle();
        let opened = tokio::select! {
            _ = closed(shutdown) => return,
            _ = inner.opened.notified() => true,
            _ = tokio::time::sleep(inner.open_for), if inner.mode() != "global" => false,
        };
        if opened {
            // A breaker that just opened stays open `breaker_open_ms` before its probe.
            tokio::select! {
                _ = closed(shutdown) => return,
                _ = tokio::time::sleep(inner.open_for) => {}
            }
        }
    }
}

/// Probe groups `which` together; the ones whose shard answered.
async fn probe_all(inner: &Arc<Inner>, conn: &Conn, which: &[usize]) -> Vec<usize> {
    let mut probes = tokio::task::JoinSet::new();
    for &i in which {
        let (inner, conn) = (inner.clone(), conn.clone());
        probes.spawn(async move { inner.probe(i, conn).await.then_some(i) });
    }
    let mut answered = Vec::new();
    while let Some(r) = probes.join_next().await {
        answered.extend(r.ok().flatten());
    }
    answered
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
        let mut changed = None;
        for g in &inner.groups {
            changed = g.fallback.resize(n).or(changed);
        }
        if let Some(previous) = changed {
            let n = inner.groups[0].fallback.divisor();
            Metrics::limiter_fallback_divisor(n);
            tracing::info!(
                live_nodes = n,
                previous,
                "rate limiter: fallback quotas re-divided among live nodes"
            );
        }
    }
}
