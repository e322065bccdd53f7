//! The member count the rate limiter's fallback divides quotas by: stale membership is not solitude.
//!
//! The live count from gossip is right while gossip flows. It is wrong in two moments: when this node
//! has heard nothing for a while (it was paused, or it is cut off), its failure detector declares
//! every peer dead and the count falls to 1 although the peers are still admitting; and at start,
//! before the first gossip round, it is 1 although the cluster has more members. The rule:
//!
//! - **Silent** (no peer's heartbeat advanced for `stale_after`, or none ever did): divide by the last
//!   stable count; at start that is the seed count (configured seed peers + this node).
//! - **Settling** (gossip resumed less than `settle` ago): divide by the larger of the live count and
//!   the last stable count; a failure detector that has not caught up yet cannot make the count drop.
//! - Otherwise the live count, which becomes the stable count.
//!
//! Growth is taken at once; a drop only while gossip flows and has settled. So a node never divides by
//! fewer than the members it last knew because it stopped hearing them; peers that leave gracefully
//! or die while others still gossip are dropped as before.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Divisor {
    stable: usize,
    last_heard: Option<Instant>,
    resumed_at: Option<Instant>,
    stale_after: Duration,
    settle: Duration,
}

impl Divisor {
    /// Before any gossip: `seed_count` (at least 1).
    pub fn new(seed_count: usize, stale_after: Duration, settle: Duration) -> Divisor {
        Divisor {
            stable: seed_count.max(1),
            last_heard: None,
            resumed_at: None,
            stale_after,
            settle,
        }
    }

    /// `stale_after` and `settle` for a failure detector tuned to `dead_after`: silence is noticed
    /// well before the detector gives up on a peer (half of `dead_after`), and after a silence drops
    /// wait two `dead_after` for the detector to see the peers again.
    pub fn for_dead_after(seed_count: usize, dead_after: Duration) -> Divisor {
        Divisor::new(seed_count, dead_after / 2, dead_after * 2)
    }

    /// A peer's heartbeat advanced (seen at `now`).
    pub fn heard(&mut self, now: Instant) {
        if self.silent(now) {
            self.resumed_at = Some(now);
        }
        self.last_heard = Some(now);
    }

    /// No peer heard within `stale_after` (or ever).
    pub fn silent(&self, now: Instant) -> bool {
        self.last_heard
            .is_none_or(|t| now.saturating_duration_since(t) >= self.stale_after)
    }

    /// What to divide by at `now`, with `live` members seen by gossip (this node included).
    pub fn divisor(&mut self, live: usize, now: Instant) -> usize {
        if self.silent(now) {
            return self.stable;
        }
        let settling = self
            .resumed_at
            .is_some_and(|t| now.saturating_duration_since(t) < self.settle);
        let n = if settling {
            live.max(self.stable)
        } else {
            live.max(1)
        };
        self.stable = n;
        n
    }
}

/// The seed count: the configured seeds that are not this node's own gossip address, plus this node.
pub fn seed_count(seeds: &[String], own: &[String]) -> usize {
    let mut peers: Vec<&String> = seeds.iter().filter(|s| !own.contains(s)).collect();
    peers.sort();
    peers.dedup();
    peers.len() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn divisor() -> Divisor {
        Divisor::new(3, 500 * MS, 2000 * MS)
    }

    /// Peers heard every 100 ms from `from` to `to` (ms after `t0`).
    fn gossip(d: &mut Divisor, t0: Instant, from: u32, to: u32) {
        for ms in (from..=to).step_by(100) {
            d.heard(t0 + ms * MS);
        }
    }

    #[test]
    fn starts_with_the_seed_count_until_gossip_says_otherwise() {
        let t0 = Instant::now();
        let mut d = divisor();
        // No gossip yet: the failure detector knows only this node.
        assert_eq!(d.divisor(1, t0), 3);
        assert_eq!(d.divisor(1, t0 + 5000 * MS), 3, "never heard: seeds");
        // First contact: one peer seen so far, the other not yet: still 3 while settling.
        d.heard(t0 + 5000 * MS);
        assert_eq!(d.divisor(2, t0 + 5100 * MS), 3);
        gossip(&mut d, t0, 5000, 6900);
        assert_eq!(d.divisor(2, t0 + 6900 * MS), 3);
        // Settled with a third seed that never came: gossip tells it is 2.
        gossip(&mut d, t0, 7000, 7100);
        assert_eq!(d.divisor(2, t0 + 7100 * MS), 2);
    }

    #[test]
    fn growth_is_taken_at_once() {
        let t0 = Instant::now();
        let mut d = Divisor::new(1, 500 * MS, 2000 * MS);
        assert_eq!(d.divisor(1, t0), 1);
        d.heard(t0);
        assert_eq!(d.divisor(2, t0), 2);
        assert_eq!(d.divisor(4, t0 + 100 * MS), 4);
    }

    #[test]
    fn a_paused_node_keeps_the_last_stable_count() {
        let t0 = Instant::now();
        let mut d = divisor();
        assert_eq!(d.divisor(3, t0), 3);
        // Gossip flows for a while: settled.
        gossip(&mut d, t0, 0, 3000);
        let t1 = t0 + 3000 * MS;
        assert_eq!(d.divisor(3, t1), 3);
        // Paused 10 s: on waking, the failure detector declares both peers dead before any gossip.
        let woke = t1 + 10_000 * MS;
        assert!(d.silent(woke));
        assert_eq!(d.divisor(1, woke), 3);
        // Gossip arrives, the detector has not caught up: no drop while settling.
        d.heard(woke + 5 * MS);
        assert_eq!(d.divisor(1, woke + 5 * MS), 3);
        assert_eq!(d.divisor(2, woke + 100 * MS), 3);
        d.heard(woke + 200 * MS);
        assert_eq!(d.divisor(3, woke + 200 * MS), 3);
    }

    #[test]
    fn a_node_cut_off_keeps_its_count_until_it_hears_peers_again() {
        let t0 = Instant::now();
        let mut d = divisor();
        gossip(&mut d, t0, 0, 2500);
        assert_eq!(d.divisor(3, t0 + 2500 * MS), 3);
        // Cut off: heartbeats stop; after dead_after the detector drops the peers.
        for s in [3, 10, 60, 600] {
            assert_eq!(d.divisor(1, t0 + s * 1000 * MS), 3, "{s} s after");
        }
        // Healed: the majority side had dropped this node and takes it back; this node settles.
        let healed = t0 + 700_000 * MS;
        d.heard(healed);
        assert_eq!(d.divisor(1, healed), 3);
        gossip(&mut d, t0, 700_000, 702_000);
        assert_eq!(d.divisor(3, healed + 2000 * MS), 3);
    }

    #[test]
    fn peers_lost_while_gossip_flows_are_dropped() {
        let t0 = Instant::now();
        let mut d = divisor();
        gossip(&mut d, t0, 0, 3000);
        // One peer dies (or leaves); the other keeps gossiping: divide by 2.
        assert_eq!(d.divisor(2, t0 + 3000 * MS), 2);
        // The last peer leaves gracefully (its announcement is heard): alone, and stays so.
        d.heard(t0 + 3100 * MS);
        assert_eq!(d.divisor(1, t0 + 3100 * MS), 1);
        assert_eq!(d.divisor(1, t0 + 60_000 * MS), 1);
    }

    #[test]
    fn for_dead_after_and_seed_count() {
        let d = Divisor::for_dead_after(3, Duration::from_secs(3));
        assert_eq!(d.stale_after, Duration::from_millis(1500));
        assert_eq!(d.settle, Duration::from_secs(6));
        assert_eq!(Divisor::new(0, MS, MS).stable, 1);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let own = s(&["127.0.0.1:7001"]);
        assert_eq!(seed_count(&[], &own), 1);
        assert_eq!(
            seed_count(&s(&["127.0.0.1:7002", "127.0.0.1:7003"]), &own),
            3
        );
        // Its own address in the shared seed list, and a repeated seed, count once.
        let seeds = s(&["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7002"]);
        assert_eq!(seed_count(&seeds, &own), 2);
    }
}
