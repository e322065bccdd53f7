//! Session affinity: weighted rendezvous hashing over a stable hash.

use super::Candidate;
use crate::hash::{fmix64, stable_hash};

/// 2^64 / golden ratio: keeps id 0 from hashing to 0.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Session affinity by weighted rendezvous hashing (highest random weight).
///
/// Every candidate gets a score `weight / -ln(u)` with `u` in (0, 1) drawn
/// from the hash of (key, id); the highest wins. The same key maps to the
/// same backend for as long as that backend is in the set; when a backend
/// leaves, only its keys move (spread over the rest in proportion to
/// weight), and when it returns it gets exactly those keys back. A backend
/// wins a share of keys proportional to its weight.
///
/// Ids must mean the same backend on every node (same config order) for
/// nodes to agree. `None` only when `cands` is empty.
pub fn rendezvous(key: &str, cands: &[Candidate]) -> Option<usize> {
    let key_hash = stable_hash(key.as_bytes());
    cands
        .iter()
        .map(|c| (score(key_hash, c), c.id))
        // Highest score; on an exact tie the lower id, for determinism.
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, id)| id)
}

fn score(key_hash: u64, c: &Candidate) -> f64 {
    let h = fmix64(key_hash ^ fmix64((c.id as u64).wrapping_add(GOLDEN)));
    // 52 random bits → u strictly inside (0, 1), exactly representable.
    let u = ((h >> 12) as f64 + 0.5) / (1u64 << 52) as f64;
    f64::from(c.weight.max(1)) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(id, &weight)| Candidate {
                weight,
                ..Candidate::new(id)
            })
            .collect()
    }

    fn keys() -> impl Iterator<Item = String> {
        (0..10_000).map(|i| format!("session-{i}"))
    }

    #[test]
    fn empty_pool_has_no_owner() {
        assert_eq!(rendezvous("k", &[]), None);
    }

    #[test]
    fn same_key_same_backend_regardless_of_order() {
        let cs = pool(&[1, 1, 1, 1, 1]);
        let mut rev = cs.clone();
        rev.reverse();
        for key in keys().take(500) {
            let a = rendezvous(&key, &cs);
            assert_eq!(a, rendezvous(&key, &cs));
            assert_eq!(a, rendezvous(&key, &rev));
        }
    }

    #[test]
    fn about_even_spread() {
        let cs = pool(&[1, 1, 1, 1, 1]);
        let mut counts = [0u32; 5];
        for key in keys() {
            counts[rendezvous(&key, &cs).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (1800..=2200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let all = pool(&[1, 1, 1, 1, 1]);
        let without2: Vec<Candidate> = all.iter().filter(|c| c.id != 2).cloned().collect();
        let mut moved_to = [0u32; 5];
        for key in keys() {
            let before = rendezvous(&key, &all).unwrap();
            let after = rendezvous(&key, &without2).unwrap();
            if before == 2 {
                assert_ne!(after, 2);
                moved_to[after] += 1;
            } else {
                assert_eq!(before, after, "{key} moved off a backend that stayed");
            }
        }
        // The orphans spread over the survivors too.
        let orphans: u32 = moved_to.iter().sum();
        for (id, &m) in moved_to.iter().enumerate() {
            if id != 2 {
                assert!(
                    m * 4 > orphans * 3 / 4 && m * 4 < orphans * 5 / 4,
                    "{moved_to:?}"
                );
            }
        }
    }

    #[test]
    fn weights_are_respected() {
        let cs = pool(&[1, 2, 3, 4]);
        let mut counts = [0f64; 4];
        for key in keys() {
            counts[rendezvous(&key, &cs).unwrap()] += 1.0;
        }
        for (id, &c) in counts.iter().enumerate() {
            let want = 10_000.0 * (id + 1) as f64 / 10.0;
            assert!((c - want).abs() < want * 0.1 + 50.0, "{counts:?}");
        }
    }
}
