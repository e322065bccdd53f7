//! A stable 64-bit hash shared by routing (weighted rules), affinity (rendezvous) and the metric
//! handle caches: the same on every node and across releases. Beside it, Redis Cluster's key slot
//! (the rate limiter's breaker groups).

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// MurmurHash3's 64-bit finalizer: full avalanche, a bijection.
pub fn fmix64(mut k: u64) -> u64 {
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

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first
/// `{` and the next `}`, when not empty), else of the whole key, modulo 16384.
pub fn redis_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(key) {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
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

    #[test]
    fn redis_slots_match_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(redis_slot(b"foo"), 12182);
        assert_eq!(redis_slot(b"123456789"), 12739);
        assert_eq!(redis_slot(b"sluice:{acme}:req"), redis_slot(b"acme"));
        assert_eq!(
            redis_slot(b"x:{acme}:tok"),
            redis_slot(b"sluice:{acme}:req")
        );
        assert_ne!(
            redis_slot(b"{}acme"),
            redis_slot(b"acme"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(
            redis_slot(b"a{b}c{d}"),
            redis_slot(b"b"),
            "the first tag counts"
        );
    }
}
