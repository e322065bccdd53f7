//! The merge rule, as pure functions: the live peers' fresh reports on one backend are folded into a
//! [`PeerAggregate`] (off the request path), then [`merge`] combines it with this node's own
//! [`BackendStatus`] (on the request path: no allocation, no lock, no gossip state).
//!
//! Reporters are this node plus every live peer with a fresh report (≤ [`MAX_REPORT_AGE`]) on the
//! backend. Voters are the reporters with evidence on its health: they probe it actively, or they
//! ejected it after failures (a node that neither probes nor saw failures has no say). Then:
//! - `healthy` = locally healthy AND NOT (a strict majority of the voters say unhealthy); so a
//!   backend failing the probes of the only node that probes it is down for every node, and one
//!   node's bad path to a backend among three probing nodes does not take it out elsewhere;
//! - `available` = locally available AND NOT (that majority) AND no cooldown reported by any voter
//!   is still running;
//! - `latency_ms`, `ttft_ms` = median of the voters' measured values (even count: mean of the two
//!   middle ones); `None` when nobody measured;
//! - `in_flight` = sum over the voters, so least-connections sees the whole cluster's load;
//! - `cooldown_until` = the latest of this node's and of the peers that sent requests to the
//!   backend (`n` > 0 in their report: a 429 is only seen by sending), each capped at
//!   `cluster.max_cooldown_ms` from now whatever `Retry-After` said.
//!
//! A peer's report counts at all only if it names the same upstream under that backend name
//! (`u`, the [`target_id`] of the configured url): a node cannot speak for a backend it is not
//! configured to reach.
//!
//! Why: the health verdict needs evidence (probes or failures seen) so a node that never talks to
//! a backend cannot outvote those that do; a cooldown is the most damaging single-node signal (one
//! report blocks the backend everywhere), so it needs the evidence of requests sent and a bound on
//! its length; and a report about another upstream that happens to share the name says nothing
//! about ours. Gossip itself is sealed (only key holders report at all).
//!
//! [`MAX_REPORT_AGE`]: super::report::MAX_REPORT_AGE

use super::report::{BackendReport, unix_ms_to_instant, verdict};
use crate::balance::BackendStatus;
use std::time::{Duration, Instant};

/// What a peer's report must match, and the cooldown cap, for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// [`target_id`](super::report::target_id) of this node's url for the backend.
    pub target: u32,
    /// `cluster.max_cooldown_ms`.
    pub max_cooldown: Duration,
}

/// The live peers' fresh reports on one backend, pre-folded. This node is not in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerAggregate {
    /// Peers with a fresh report.
    pub reporters: u32,
    /// Of those, the ones with evidence on health: they probe it, or they ejected it.
    pub voters: u32,
    /// Of the voters, how many say unhealthy.
    pub down: u32,
    /// Sum of the peers' in-flight counts.
    pub in_flight: u32,
    /// The peers' latency EWMAs, sorted ascending.
    pub latencies_ms: Vec<f64>,
    /// The peers' TTFT EWMAs, sorted ascending.
    pub ttfts_ms: Vec<f64>,
    /// The latest cooldown a peer reports that is still running at aggregation time.
    pub cooldown_until: Option<Instant>,
}

/// Fold the peers' reports (stale ones, and ones about another upstream, are skipped). `now` and
/// `now_unix_ms` are the same moment on the monotonic and the wall clock (peers' cooldowns travel as
/// unix ms).
pub fn aggregate<'a>(
    reports: impl IntoIterator<Item = &'a BackendReport>,
    rules: Rules,
    now: Instant,
    now_unix_ms: u64,
) -> PeerAggregate {
    let mut agg = PeerAggregate::default();
    for r in reports {
        if !r.is_fresh(now_unix_ms) || r.target != Some(rules.target) {
            continue;
        }
        agg.reporters += 1;
        if r.probed || !r.healthy {
            agg.voters += 1;
            agg.down += u32::from(!r.healthy);
        }
        agg.in_flight = agg.in_flight.saturating_add(r.in_flight);
        agg.latencies_ms.extend(r.latency_ms);
        agg.ttfts_ms.extend(r.ttft_ms);
        if r.sent > 0 {
            let cd = unix_ms_to_instant(r.cooldown_until_ms, now, now_unix_ms)
                .map(|c| c.min(now + rules.max_cooldown));
            agg.cooldown_until = agg.cooldown_until.max(cd);
        }
    }
    agg.latencies_ms.sort_by(f64::total_cmp);
    agg.ttfts_ms.sort_by(f64::total_cmp);
    agg
}

/// This node's status merged with the peers' (the rule in the module doc).
pub fn merge(local: &BackendStatus, peers: &PeerAggregate, now: Instant) -> BackendStatus {
    let local_ok = verdict(local, now);
    let local_votes = local.probed || !local_ok;
    let voters = peers.voters + u32::from(local_votes);
    let down = peers.down + u32::from(local_votes && !local_ok);
    let majority_down = voters > 0 && down * 2 > voters;
    let cooldown_until = local.cooldown_until.max(peers.cooldown_until);
    let cooling = cooldown_until.is_some_and(|c| c > now);
    BackendStatus {
        probed: true,
        available: local.available && !majority_down && !cooling,
        healthy: local.healthy && !majority_down,
        in_flight: local.in_flight.saturating_add(peers.in_flight),
        latency_ms: median_with(&peers.latencies_ms, local.latency_ms),
        ttft_ms: median_with(&peers.ttfts_ms, local.ttft_ms),
        cooldown_until,
    }
}

/// Median of `sorted` plus one optional extra value, without allocating.
pub fn median_with(sorted: &[f64], extra: Option<f64>) -> Option<f64> {
    let n = sorted.len() + usize::from(extra.is_some());
    if n == 0 {
        return None;
    }
    let at = |i: usize| -> f64 {
        let Some(x) = extra else {
            return sorted[i];
        };
        let p = sorted.partition_point(|v| *v < x);
        match i.cmp(&p) {
            std::cmp::Ordering::Less => sorted[i],
            std::cmp::Ordering::Equal => x,
            std::cmp::Ordering::Greater => sorted[i - 1],
        }
    };
    if n % 2 == 1 {
        Some(at(n / 2))
    } else {
        Some((at(n / 2 - 1) + at(n / 2)) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW_MS: u64 = 1_764_000_000_000;
    const RULES: Rules = Rules {
        target: 7,
        max_cooldown: Duration::from_secs(120),
    };

    fn local_ok() -> BackendStatus {
        BackendStatus {
            probed: true,
            available: true,
            healthy: true,
            in_flight: 1,
            latency_ms: Some(10.0),
            ttft_ms: None,
            cooldown_until: None,
        }
    }

    #[test]
    fn only_nodes_with_evidence_vote() {
        let now = Instant::now();
        let quiet = BackendReport {
            probed: false,
            ..report(true)
        };
        // The only node that probes it says down: down for everyone, even a node that never probes.
        let local = BackendStatus {
            probed: false,
            ..local_ok()
        };
        assert!(!merged(&local, &[report(false), quiet], now).available);
        // Nodes without probes and without failures have no say either way.
        assert!(merged(&local, &[quiet, quiet], now).available);
        // Two probing nodes, one says down: no majority.
        assert!(merged(&local_ok(), &[report(false), quiet], now).available);
        // A non-probing node that ejected it after failures has evidence: with it, a majority.
        let ejected = BackendReport {
            probed: false,
            ..report(false)
        };
        assert!(!merged(&local_ok(), &[report(false), ejected], now).available);
    }

    fn report(healthy: bool) -> BackendReport {
        BackendReport {
            probed: true,
            healthy,
            latency_ms: None,
            ttft_ms: None,
            in_flight: 0,
            cooldown_until_ms: 0,
            reported_at_ms: NOW_MS - 1_000,
            sent: 1,
            target: Some(RULES.target),
        }
    }

    fn merged(local: &BackendStatus, reports: &[BackendReport], now: Instant) -> BackendStatus {
        merge(local, &aggregate(reports, RULES, now, NOW_MS), now)
    }

    #[test]
    fn alone_is_local() {
        let now = Instant::now();
        let s = merged(&local_ok(), &[], now);
        assert!(s.available && s.healthy);
        assert_eq!(s.in_flight, 1);
        assert_eq!(s.latency_ms, Some(10.0));
        let local_down = BackendStatus {
            probed: true,
            available: false,
            healthy: false,
            ..local_ok()
        };
        let s = merged(&local_down, &[], now);
        assert!(!s.available && !s.healthy);
    }

    #[test]
    fn majority_down_marks_unavailable_everywhere() {
        let now = Instant::now();
        // 3 voters, 2 say down: down here too although our own probes are fine.
        let s = merged(&local_ok(), &[report(false), report(false)], now);
        assert!(!s.available && !s.healthy);
        // 3 voters, 1 says down: no majority.
        let s = merged(&local_ok(), &[report(false), report(true)], now);
        assert!(s.available && s.healthy);
        // 2 voters, 1 says down: a tie is not a majority.
        let s = merged(&local_ok(), &[report(false)], now);
        assert!(s.available && s.healthy);
        // Self counts as one voter: self + 1 peer down out of 3.
        let local_down = BackendStatus {
            probed: true,
            available: false,
            healthy: false,
            ..local_ok()
        };
        let s = merged(&local_down, &[report(false), report(true)], now);
        assert!(!s.available && !s.healthy);
        // Peers cannot make a locally down backend available.
        let s = merged(&local_down, &[report(true), report(true)], now);
        assert!(!s.available && !s.healthy);
    }

    #[test]
    fn cooldown_from_any_node_blocks() {
        let now = Instant::now();
        let mut peer = report(true);
        peer.cooldown_until_ms = NOW_MS + 2_000;
        let s = merged(&local_ok(), &[report(true), peer], now);
        assert!(!s.available, "one peer's running cooldown is enough");
        assert!(s.healthy, "a cooldown is not a health verdict");
        assert_eq!(s.cooldown_until, Some(now + Duration::from_millis(2_000)));
        // The latest cooldown wins, local or peer.
        let local = BackendStatus {
            probed: true,
            cooldown_until: Some(now + Duration::from_millis(5_000)),
            available: false,
            ..local_ok()
        };
        let s = merged(&local, &[peer], now);
        assert_eq!(s.cooldown_until, Some(now + Duration::from_millis(5_000)));
        // An expired peer cooldown does not block.
        let mut old = report(true);
        old.cooldown_until_ms = NOW_MS - 1;
        let s = merged(&local_ok(), &[old], now);
        assert!(s.available);
        assert_eq!(s.cooldown_until, None);
    }

    #[test]
    fn latency_is_the_median() {
        let now = Instant::now();
        let with = |lat: Option<f64>| BackendReport {
            probed: true,
            latency_ms: lat,
            ttft_ms: lat.map(|l| l * 10.0),
            ..report(true)
        };
        // Self 10, peers 30, 50 → 30.
        let s = merged(&local_ok(), &[with(Some(50.0)), with(Some(30.0))], now);
        assert_eq!(s.latency_ms, Some(30.0));
        assert_eq!(
            s.ttft_ms,
            Some(400.0),
            "self has no ttft: median of 300, 500"
        );
        // Self 10, peers 30, 50, 1000 → (30 + 50) / 2.
        let s = merged(
            &local_ok(),
            &[with(Some(50.0)), with(Some(1000.0)), with(Some(30.0))],
            now,
        );
        assert_eq!(s.latency_ms, Some(40.0));
        // Unmeasured peers do not count.
        let s = merged(&local_ok(), &[with(None), with(Some(20.0))], now);
        assert_eq!(s.latency_ms, Some(15.0));
        // Nobody measured.
        let local = BackendStatus {
            probed: true,
            latency_ms: None,
            ..local_ok()
        };
        assert_eq!(merged(&local, &[with(None)], now).latency_ms, None);
    }

    #[test]
    fn median_with_inserts_extra_anywhere() {
        assert_eq!(median_with(&[], None), None);
        assert_eq!(median_with(&[], Some(3.0)), Some(3.0));
        assert_eq!(median_with(&[1.0, 2.0], Some(0.0)), Some(1.0));
        assert_eq!(median_with(&[1.0, 2.0], Some(9.0)), Some(2.0));
        assert_eq!(median_with(&[1.0, 3.0], Some(2.0)), Some(2.0));
        assert_eq!(median_with(&[1.0, 3.0, 5.0], Some(4.0)), Some(3.5));
        assert_eq!(median_with(&[1.0, 3.0, 5.0], None), Some(3.0));
        assert_eq!(median_with(&[2.0, 2.0], Some(2.0)), Some(2.0));
    }

    #[test]
    fn in_flight_is_summed() {
        let now = Instant::now();
        let r = |n| BackendReport {
            probed: true,
            in_flight: n,
            ..report(true)
        };
        let s = merged(&local_ok(), &[r(4), r(7)], now);
        assert_eq!(s.in_flight, 12);
    }

    #[test]
    fn stale_reports_are_ignored() {
        let now = Instant::now();
        let stale = |healthy| BackendReport {
            probed: true,
            reported_at_ms: NOW_MS - 10_001,
            in_flight: 50,
            latency_ms: Some(900.0),
            cooldown_until_ms: NOW_MS + 60_000,
            ..report(healthy)
        };
        let agg = aggregate(&[stale(false), stale(false)], RULES, now, NOW_MS);
        assert_eq!(agg, PeerAggregate::default());
        let s = merge(&local_ok(), &agg, now);
        assert!(s.available && s.healthy);
        assert_eq!(s.in_flight, 1);
        assert_eq!(s.latency_ms, Some(10.0));
        assert_eq!(s.cooldown_until, None);
        // Exactly at the limit still counts.
        let edge = BackendReport {
            probed: true,
            reported_at_ms: NOW_MS - 10_000,
            ..report(false)
        };
        let agg = aggregate(&[edge, edge], RULES, now, NOW_MS);
        assert_eq!(agg.reporters, 2);
        assert_eq!(agg.down, 2);
    }

    #[test]
    fn a_cooldown_needs_requests_sent_and_is_capped() {
        let now = Instant::now();
        let mut claim = report(true);
        claim.cooldown_until_ms = NOW_MS + 3_600_000;
        // No request sent to the backend: no say on its cooldown.
        let idle = BackendReport { sent: 0, ..claim };
        let s = merged(&local_ok(), &[idle], now);
        assert!(s.available, "a cooldown without evidence is ignored");
        assert_eq!(s.cooldown_until, None);
        // With evidence: honoured, but for at most the cap.
        let s = merged(&local_ok(), &[claim], now);
        assert!(!s.available);
        assert_eq!(s.cooldown_until, Some(now + RULES.max_cooldown));
        // A short one is kept as it is.
        claim.cooldown_until_ms = NOW_MS + 2_000;
        let s = merged(&local_ok(), &[claim], now);
        assert_eq!(s.cooldown_until, Some(now + Duration::from_secs(2)));
    }

    #[test]
    fn reports_about_another_upstream_are_ignored() {
        let now = Instant::now();
        let elsewhere = |target| BackendReport {
            target,
            cooldown_until_ms: NOW_MS + 5_000,
            ..report(false)
        };
        let agg = aggregate(
            &[elsewhere(Some(8)), elsewhere(None), elsewhere(Some(8))],
            RULES,
            now,
            NOW_MS,
        );
        assert_eq!(agg, PeerAggregate::default());
        let local = BackendStatus {
            probed: false,
            ..local_ok()
        };
        assert!(merge(&local, &agg, now).available);
        // The same reports naming our upstream: down (the only voters) and cooling.
        let ours = aggregate(&[elsewhere(Some(7))], RULES, now, NOW_MS);
        assert_eq!((ours.voters, ours.down), (1, 1));
        assert!(!merge(&local, &ours, now).available);
    }
}
