//! Session affinity: weighted rendezvous hashing over a stable hash.

use super::Candidate;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// 2^64 / golden ratio: keeps id 0 from hashing to 0.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// MurmurHash3's 64-bit finalizer: full avalanche, a bijection.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// A stable 64-bit hash, identical on every node and across releases
/// (unlike std's randomly keyed SipHash): 64-bit FNV-1a followed by the
/// MurmurHash3 finalizer so that every output bit, the low ones included,
/// depends on every input bit. Not for adversarial (DoS-resistant) use.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(bytes))
}

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

    #[test]
    fn fnv1a_known_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn stable_hash_known_values() {
        // Pinned: changing these re-homes every session in a cluster.
        assert_eq!(stable_hash(b""), STABLE_EMPTY);
        assert_eq!(stable_hash(b"a"), STABLE_A);
        assert_eq!(stable_hash(b"foobar"), STABLE_FOOBAR);
        assert_eq!(stable_hash(b"conversation-42"), STABLE_CONV42);
    }

    const STABLE_EMPTY: u64 = 0xefd0_1f60_ba99_2926;
    const STABLE_A: u64 = 0x82a2_a958_a9be_ce5b;
    const STABLE_FOOBAR: u64 = 0x2c22_1949_22d1_672b;
    const STABLE_CONV42: u64 = 0x002e_3681_e934_545d;

    #[test]
    fn stable_hash_low_bits_are_well_spread() {
        // `hash % 8` over sequential keys: FNV-1a alone is biased here.
        let mut buckets = [0u32; 8];
        for i in 0..8000 {
            buckets[(stable_hash(format!("user-{i}").as_bytes()) % 8) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (850..=1150).contains(&b)),
            "{buckets:?}"
        );
    }

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
