//! Sharing the providers' quota across the cluster (its own gossip key, its own merge rule).
//!
//! Each node gossips its latest quota observation per backend under `backend:<name>:quota`, when
//! it changed meaningfully (see [`should_publish`]). The merge, per backend:
//! - the basis is the freshest observation (by the time its request was sent), this node's or a
//!   live peer's, while it still says something (not past every reset);
//! - every node takes off what it sent itself since that observation (its own ledger);
//! - `share` = this node plus the live peers whose observation is younger than
//!   [`MAX_REPORT_AGE`]: the nodes using the backend. Each paces itself to its share of the
//!   estimate, so nodes behind one provider key stop together before the wall instead of each
//!   finding it. A backend's name is taken to mean the same provider key on every node.

use super::keys;
use super::membership::Member;
use super::publisher::HEARTBEAT;
use super::report::MAX_REPORT_AGE;
use crate::balance::BackendTable;
use crate::balance::quota::{Basis, Observation};

/// The live peers' quota observations on one backend, pre-folded. This node is not in it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerQuota {
    /// The freshest observation that still says something.
    pub freshest: Option<Observation>,
    /// Peers that observed it within [`MAX_REPORT_AGE`]: they use the backend.
    pub active: u32,
}

/// Fold the ready peers' observations of `backend` (undecodable values are skipped).
pub fn fold<'a>(peers: impl Iterator<Item = &'a Member>, backend: &str, now_ms: u64) -> PeerQuota {
    let key = keys::backend_quota_key(backend);
    let mut out = PeerQuota::default();
    for obs in peers.filter_map(|m| m.values.get(&key).and_then(|v| Observation::decode(v))) {
        if now_ms.saturating_sub(obs.at_ms) <= MAX_REPORT_AGE.as_millis() as u64 {
            out.active += 1;
        }
        if !obs.expired(now_ms) && out.freshest.is_none_or(|f| obs.at_ms > f.at_ms) {
            out.freshest = Some(obs);
        }
    }
    out
}

/// What this node paces by: the freshest of its own observation and the peers'.
pub fn basis(local: Option<Observation>, peers: &PeerQuota) -> Option<Basis> {
    let obs = match (local, peers.freshest) {
        (Some(l), Some(p)) if p.at_ms > l.at_ms => p,
        (Some(l), _) => l,
        (None, p) => p?,
    };
    Some(Basis {
        obs,
        share: 1 + peers.active,
    })
}

/// Publish a new observation when a window appeared, went or moved (its limit or remaining), or
/// the last published one is [`HEARTBEAT`] old (peers count the node as using the backend while
/// its observation is young). `prev`: the last published, with when it was published.
pub fn should_publish(prev: Option<(&Observation, u64)>, next: &Observation, now_ms: u64) -> bool {
    let Some((prev, published_ms)) = prev else {
        return true;
    };
    if next.at_ms <= prev.at_ms {
        return false;
    }
    let moved = prev
        .windows
        .iter()
        .zip(&next.windows)
        .any(|(a, b)| a.map(|w| (w.limit, w.remaining)) != b.map(|w| (w.limit, w.remaining)));
    moved || now_ms.saturating_sub(published_ms) >= HEARTBEAT.as_millis() as u64
}

/// The publisher's memory of what it gossiped.
pub struct QuotaPublisher {
    keys: Vec<String>,
    last: Vec<Option<(Observation, u64)>>,
}

impl QuotaPublisher {
    pub fn new(table: &BackendTable) -> QuotaPublisher {
        QuotaPublisher {
            keys: table
                .iter()
                .map(|b| keys::backend_quota_key(b.name()))
                .collect(),
            last: vec![None; table.len()],
        }
    }

    /// The keys to set now.
    pub fn changes(&mut self, table: &BackendTable, now_ms: u64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, b) in table.iter().enumerate() {
            let Some(obs) = b.local_quota(now_ms) else {
                continue;
            };
            let prev = self.last[i].as_ref().map(|(o, t)| (o, *t));
            if should_publish(prev, &obs, now_ms) {
                out.push((self.keys[i].clone(), obs.encode()));
                self.last[i] = Some((obs, now_ms));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::quota::{QuotaKind, Window};

    const NOW: u64 = 1_764_000_000_000;

    fn obs(at_ms: u64, remaining: u64) -> Observation {
        let mut o = Observation {
            at_ms,
            ..Observation::default()
        };
        o.windows[QuotaKind::Requests as usize] = Some(Window {
            limit: Some(60),
            remaining,
            reset_ms: 30_000,
        });
        o
    }

    #[test]
    fn the_freshest_observation_wins_and_users_share_it() {
        let peers = PeerQuota {
            freshest: Some(obs(NOW - 100, 5)),
            active: 2,
        };
        let b = basis(Some(obs(NOW - 500, 9)), &peers).unwrap();
        assert_eq!((b.obs.at_ms, b.share), (NOW - 100, 3));
        let b = basis(Some(obs(NOW - 50, 4)), &peers).unwrap();
        assert_eq!(b.obs.at_ms, NOW - 50, "this node's own is fresher");
        assert_eq!(basis(None, &PeerQuota::default()), None);
        let b = basis(None, &peers).unwrap();
        assert_eq!(b.obs.window(QuotaKind::Requests).unwrap().remaining, 5);
    }

    #[test]
    fn publishes_moves_and_heartbeats_only() {
        let first = obs(NOW, 10);
        assert!(should_publish(None, &first, NOW));
        let prev = Some((&first, NOW));
        assert!(!should_publish(prev, &obs(NOW, 3), NOW), "not newer");
        assert!(!should_publish(prev, &obs(NOW + 200, 10), NOW + 300));
        assert!(should_publish(prev, &obs(NOW + 200, 9), NOW + 300));
        assert!(should_publish(prev, &obs(NOW + 200, 10), NOW + 5_000));
        let mut gone = obs(NOW + 200, 10);
        gone.windows[QuotaKind::Requests as usize] = None;
        assert!(should_publish(prev, &gone, NOW + 300));
    }

    fn member(id: &str, value: Option<String>) -> Member {
        let mut m = Member::new_self(crate::cluster::NodeInfo {
            id: id.into(),
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
        });
        m.is_self = false;
        if let Some(v) = value {
            m.values.insert(keys::backend_quota_key("b"), v);
        }
        m
    }

    #[test]
    fn fold_takes_the_freshest_and_counts_recent_users() {
        let members = [
            member("a", Some(obs(NOW - 1_000, 7).encode())),
            member("b", Some(obs(NOW - 200, 3).encode())),
            // Observed 12 s ago: no longer a user, but its window has not reset yet.
            member("c", Some(obs(NOW - 12_000, 1).encode())),
            member("d", Some("garbage".into())),
            member("e", None),
        ];
        let p = fold(members.iter(), "b", NOW);
        assert_eq!(p.active, 2);
        assert_eq!(p.freshest, Some(obs(NOW - 200, 3)));
        // Past every reset it says nothing.
        let p = fold(members[2..].iter(), "b", NOW + 30_000);
        assert_eq!(p, PeerQuota::default());
    }
}
