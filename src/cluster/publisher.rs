//! The publisher: every gossip interval, read the local backend table and gossip a
//! [`BackendReport`] per backend, but only when it changed meaningfully or the last one is getting
//! old. Gossip carries every key of every node, so quiet keys keep the traffic small.

use super::keys;
use super::membership::Cluster;
use super::report::{BackendReport, target_id, unix_now_ms};
use crate::balance::BackendTable;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Re-publish an unchanged report this often, so peers know it is still true (they ignore reports
/// older than [`super::report::MAX_REPORT_AGE`]).
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Start publishing this node's view of `table` (stops when the cluster leaves or is dropped).
pub fn publisher(cluster: &Cluster, table: BackendTable) -> JoinHandle<()> {
    let shared = cluster.shared().clone();
    tokio::spawn(async move {
        let keys: Vec<String> = table
            .iter()
            .map(|b| keys::backend_state_key(b.name()))
            .collect();
        let mut last: Vec<Option<BackendReport>> = vec![None; table.len()];
        let mut quotas = super::quota::QuotaPublisher::new(&table);
        let mut tick = tokio::time::interval(shared.gossip_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shared.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let now_ms = unix_now_ms();
            let mut changed = Vec::new();
            for (i, b) in table.iter().enumerate() {
                let next = BackendReport::from_status(&b.local_status(now), now, now_ms)
                    .with_evidence(b.sent(), target_id(&b.cfg.url.value));
                if should_publish(last[i].as_ref(), &next) {
                    changed.push((keys[i].clone(), next.encode()));
                    last[i] = Some(next);
                }
            }
            changed.extend(quotas.changes(&table, now_ms));
            if !changed.is_empty() {
                tracing::trace!(keys = changed.len(), "publishing backend reports");
                shared.set_many(changed).await;
            }
        }
    })
}

/// A meaningful change since the last published report, or a heartbeat is due:
/// - the health verdict flipped;
/// - a cooldown started, ended early or moved by more than 50 ms (one that simply ran out is not a
///   change: peers see the deadline pass);
/// - latency or TTFT appeared, or moved by more than 5 ms AND more than 20% (both, so neither
///   jitter on fast backends nor small drifts on slow ones cause gossip);
/// - in-flight moved by 2 or more;
/// - the last report is [`HEARTBEAT`] old.
pub fn should_publish(prev: Option<&BackendReport>, next: &BackendReport) -> bool {
    let Some(prev) = prev else {
        return true;
    };
    let running = |cd: u64| if cd > next.reported_at_ms { cd } else { 0 };
    let (prev_cd, next_cd) = (running(prev.cooldown_until_ms), next.cooldown_until_ms);
    prev.healthy != next.healthy
        || (prev_cd == 0) != (next_cd == 0)
        || prev_cd.abs_diff(next_cd) > 50
        || moved(prev.latency_ms, next.latency_ms)
        || moved(prev.ttft_ms, next.ttft_ms)
        || prev.in_flight.abs_diff(next.in_flight) >= 2
        || next.reported_at_ms.saturating_sub(prev.reported_at_ms) >= HEARTBEAT.as_millis() as u64
}

fn moved(prev: Option<f64>, next: Option<f64>) -> bool {
    match (prev, next) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            let d = (a - b).abs();
            d > 5.0 && d > 0.2 * a
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BackendReport {
        BackendReport {
            probed: true,
            healthy: true,
            latency_ms: Some(100.0),
            ttft_ms: None,
            in_flight: 3,
            cooldown_until_ms: 0,
            reported_at_ms: 1_000_000,
            sent: 0,
            target: None,
        }
    }

    fn later(f: impl FnOnce(&mut BackendReport)) -> BackendReport {
        let mut r = base();
        r.reported_at_ms += 300;
        f(&mut r);
        r
    }

    #[test]
    fn first_report_is_published() {
        assert!(should_publish(None, &base()));
    }

    #[test]
    fn small_changes_stay_quiet() {
        let b = base();
        assert!(!should_publish(Some(&b), &later(|_| {})));
        assert!(!should_publish(Some(&b), &later(|r| r.in_flight = 4)));
        assert!(!should_publish(Some(&b), &later(|r| r.in_flight = 2)));
        // 15 ms is > 5 ms but < 20 % of 100 ms.
        assert!(!should_publish(
            Some(&b),
            &later(|r| r.latency_ms = Some(115.0))
        ));
        // 40 % but only 2 ms.
        let fast = BackendReport {
            probed: true,
            latency_ms: Some(5.0),
            ..b
        };
        assert!(!should_publish(
            Some(&fast),
            &later(|r| r.latency_ms = Some(7.0))
        ));
    }

    #[test]
    fn meaningful_changes_publish() {
        let b = base();
        assert!(should_publish(Some(&b), &later(|r| r.healthy = false)));
        assert!(should_publish(Some(&b), &later(|r| r.in_flight = 5)));
        assert!(should_publish(Some(&b), &later(|r| r.in_flight = 1)));
        assert!(should_publish(
            Some(&b),
            &later(|r| r.latency_ms = Some(125.0))
        ));
        assert!(should_publish(Some(&b), &later(|r| r.latency_ms = None)));
        assert!(should_publish(Some(&b), &later(|r| r.ttft_ms = Some(1.0))));
        assert!(should_publish(
            Some(&b),
            &later(|r| r.cooldown_until_ms = 1_002_000)
        ));
    }

    #[test]
    fn cooldown_moves_and_expiry() {
        let cooling = BackendReport {
            probed: true,
            cooldown_until_ms: 1_002_000,
            ..base()
        };
        // Same deadline give or take rounding: quiet.
        assert!(!should_publish(
            Some(&cooling),
            &later(|r| r.cooldown_until_ms = 1_002_001)
        ));
        // Extended by a new 429: publish.
        assert!(should_publish(
            Some(&cooling),
            &later(|r| r.cooldown_until_ms = 1_005_000)
        ));
        // Cleared before its deadline: publish.
        assert!(should_publish(Some(&cooling), &later(|_| {})));
        // Ran out by itself: quiet.
        let mut expired = later(|_| {});
        expired.reported_at_ms = 1_002_500;
        let mut prev = cooling;
        prev.reported_at_ms = 1_000_000 + 300;
        assert!(!should_publish(Some(&prev), &expired));
    }

    #[test]
    fn heartbeat_after_five_seconds() {
        let b = base();
        let mut r = base();
        r.reported_at_ms += 4_999;
        assert!(!should_publish(Some(&b), &r));
        r.reported_at_ms += 1;
        assert!(should_publish(Some(&b), &r));
    }
}
