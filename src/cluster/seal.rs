//! Sealing gossip packets: the cluster keys, ChaCha20-Poly1305 (ring) with a random nonce per
//! packet, and the replay window. Pure code over byte buffers; [`super::transport`] puts it on UDP.
//!
//! ```text
//!  0      1          5               13              25                       n
//!  │ ver  │ key id   │ sent at (ms)  │ nonce (96 bit)│ ciphertext ‖ tag (16)  │
//!  └──────┴──────────┴───────────────┴───────────────┘
//!   authenticated (AAD: version, key id, time), not encrypted
//! ```
//! - The key id is the first 4 bytes of SHA-256 over a label and the key: it names which key sealed
//!   the packet without telling anything about the key; every key held opens, the first seals.
//! - The time is authenticated, so an old packet cannot be made young again: a packet sent more than
//!   the window ago (or that far in the future) is stale, and a packet seen within the window (same
//!   nonce) is a replay. The seen-set is bounded; when it is full, the oldest entry is forgotten and
//!   nothing older than it is accepted any more (so a replay can never slip through a full set).

use base64::Engine as _;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// The format version, first byte of every sealed packet.
pub const VERSION: u8 = 1;
/// Version, key id, send time.
const AAD_LEN: usize = 1 + 4 + 8;
/// Everything before the ciphertext.
pub const HEADER_LEN: usize = AAD_LEN + NONCE_LEN;
/// Bytes a sealed packet has on top of the plain one.
pub const OVERHEAD: usize = HEADER_LEN + 16;
/// How many packets the replay window remembers at most (about 40 bytes each).
pub const MAX_SEEN: usize = 65_536;

/// A 32-byte cluster key and its public id.
#[derive(Clone)]
struct Key {
    id: [u8; 4],
    aead: LessSafeKey,
}

/// The cluster keys, in order: the first seals, all open.
#[derive(Clone)]
pub struct GossipKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for GossipKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        f.debug_struct("GossipKeys").field("ids", &ids).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no key: expected one or more comma-separated 32-byte keys (base64 or hex)")]
    Empty,
    #[error("key {index}: not base64 or hex")]
    Encoding { index: usize },
    #[error("key {index}: {len} bytes, expected 32")]
    Length { index: usize, len: usize },
}

/// Why a received packet was dropped; `label()` is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Too short, or not our format version (a plaintext chitchat packet lands here).
    Malformed,
    /// Sealed with a key this node does not hold.
    UnknownKey,
    /// The tag does not verify: forged, altered or sealed with another key of the same id.
    Auth,
    /// Sent longer ago than the window (or that far ahead of this node's clock).
    Stale,
    /// Authentic, but seen before.
    Replay,
    /// Authentic, but not a chitchat message.
    Decode,
}

impl Reject {
    pub fn label(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::UnknownKey => "unknown_key",
            Reject::Auth => "auth",
            Reject::Stale => "stale",
            Reject::Replay => "replay",
            Reject::Decode => "decode",
        }
    }
}

/// An opened packet: which key opened it, when it was sent, its nonce, and where the plaintext is.
#[derive(Debug)]
pub struct Opened {
    pub key_index: usize,
    pub sent_at_ms: u64,
    pub nonce: [u8; NONCE_LEN],
    pub plain: std::ops::Range<usize>,
}

impl GossipKeys {
    /// Parse `k1,k2,…`: each key 32 bytes as base64 (standard or URL-safe, padded or not) or as 64
    /// hex digits. Spaces around keys are ignored.
    pub fn parse(text: &str) -> Result<GossipKeys, KeyError> {
        let mut keys = Vec::new();
        for (index, part) in text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let bytes = decode_key(part).ok_or(KeyError::Encoding { index })?;
            let len = bytes.len();
            let raw: [u8; 32] = bytes
                .try_into()
                .map_err(|_| KeyError::Length { index, len })?;
            keys.push(Key::new(&raw));
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(GossipKeys { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public ids (hex), sealing key first, for `/admin/cluster` and logs.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| hex(&k.id)).collect()
    }

    /// Seal `plain` (appended to `out` after the header) with key `key_index` (0: the first).
    pub fn seal(&self, key_index: usize, sent_at_ms: u64, plain: &[u8], out: &mut Vec<u8>) {
        let key = &self.keys[key_index.min(self.keys.len() - 1)];
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        out.clear();
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&sent_at_ms.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let (head, body) = out.split_at_mut(HEADER_LEN);
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&head[..AAD_LEN]),
                body,
            )
            .expect("chacha20-poly1305 seals any gossip-sized packet");
        out.extend_from_slice(tag.as_ref());
    }

    /// Authenticate and decrypt `packet` in place. Replays are for the caller's [`ReplayWindow`].
    pub fn open(&self, packet: &mut [u8]) -> Result<Opened, Reject> {
        if packet.len() < OVERHEAD || packet[0] != VERSION {
            return Err(Reject::Malformed);
        }
        let id = &packet[1..5];
        let key_index = self
            .keys
            .iter()
            .position(|k| k.id == id)
            .ok_or(Reject::UnknownKey)?;
        let sent_at_ms = u64::from_be_bytes(packet[5..AAD_LEN].try_into().expect("8 bytes"));
        let nonce: [u8; NONCE_LEN] = packet[AAD_LEN..HEADER_LEN].try_into().expect("12 bytes");
        let (head, body) = packet.split_at_mut(HEADER_LEN);
        let plain_len = self.keys[key_index]
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&head[..AAD_LEN]),
                body,
            )
            .map_err(|_| Reject::Auth)?
            .len();
        Ok(Opened {
            key_index,
            sent_at_ms,
            nonce,
            plain: HEADER_LEN..HEADER_LEN + plain_len,
        })
    }
}

impl Key {
    fn new(raw: &[u8; 32]) -> Key {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"sluice gossip key id v1");
        ctx.update(raw);
        let digest = ctx.finish();
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest.as_ref()[..4]);
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, raw).expect("32-byte chacha20 key");
        Key {
            id,
            aead: LessSafeKey::new(unbound),
        }
    }
}

fn decode_key(text: &str) -> Option<Vec<u8>> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect();
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(text).ok())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The packets accepted within the window, to refuse a second copy of any of them.
#[derive(Debug)]
pub struct ReplayWindow {
    window_ms: u64,
    cap: usize,
    seen: HashSet<[u8; NONCE_LEN]>,
    /// Accepted packets in arrival order: (send time, nonce).
    order: VecDeque<(u64, [u8; NONCE_LEN])>,
    /// Nothing sent at or before this is accepted: the newest entry evicted early from a full set.
    floor_ms: u64,
}

impl ReplayWindow {
    pub fn new(window: Duration, cap: usize) -> ReplayWindow {
        ReplayWindow {
            window_ms: window.as_millis().max(1) as u64,
            cap: cap.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
            floor_ms: 0,
        }
    }

    /// The replay window for a gossip interval: ten rounds, at least 2 s (clock skew between hosts).
    pub fn window_for(gossip_interval: Duration) -> Duration {
        (gossip_interval * 10).max(Duration::from_secs(2))
    }

    /// Accept a packet sent at `sent_at_ms` with `nonce`, at `now_ms`, and remember it.
    pub fn check(
        &mut self,
        sent_at_ms: u64,
        nonce: [u8; NONCE_LEN],
        now_ms: u64,
    ) -> Result<(), Reject> {
        let oldest = now_ms.saturating_sub(self.window_ms);
        while let Some(&(t, n)) = self.order.front() {
            if t >= oldest {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&n);
        }
        if sent_at_ms < oldest
            || sent_at_ms > now_ms + self.window_ms
            || sent_at_ms <= self.floor_ms
        {
            return Err(Reject::Stale);
        }
        if !self.seen.insert(nonce) {
            return Err(Reject::Replay);
        }
        self.order.push_back((sent_at_ms, nonce));
        while self.order.len() > self.cap {
            if let Some((t, n)) = self.order.pop_front() {
                self.seen.remove(&n);
                self.floor_ms = self.floor_ms.max(t);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32
    const K2_HEX: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn sealed(keys: &GossipKeys, t: u64, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        keys.seal(0, t, plain, &mut out);
        out
    }

    #[test]
    fn keys_parse_base64_and_hex_lists() {
        let k = GossipKeys::parse(&format!(" {K1} , {K2_HEX} ")).unwrap();
        assert_eq!(k.len(), 2);
        let one = GossipKeys::parse(K1).unwrap();
        assert_eq!(one.ids()[0], k.ids()[0], "same key, same id");
        assert_ne!(k.ids()[0], k.ids()[1]);
        assert_eq!(
            GossipKeys::parse(K1.trim_end_matches('=')).unwrap().ids(),
            one.ids()
        );
        assert_eq!(GossipKeys::parse(" , ").unwrap_err(), KeyError::Empty);
        assert_eq!(
            GossipKeys::parse("c2hvcnQ=").unwrap_err(),
            KeyError::Length { index: 0, len: 5 }
        );
        assert_eq!(
            GossipKeys::parse(&format!("{K1},not a key!")).unwrap_err(),
            KeyError::Encoding { index: 1 }
        );
        assert!(!format!("{k:?}").contains(K1), "debug shows ids only");
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_text() {
        let k = GossipKeys::parse(K1).unwrap();
        let plain = b"cluster-id node-7 backend:openai-main:state h=1";
        let mut p = sealed(&k, 1234, plain);
        assert_eq!(p.len(), plain.len() + OVERHEAD);
        assert!(!p.windows(7).any(|w| w == b"cluster"));
        assert!(!p.windows(6).any(|w| w == b"openai"));
        let o = k.open(&mut p).unwrap();
        assert_eq!(&p[o.plain.clone()], plain);
        assert_eq!((o.key_index, o.sent_at_ms), (0, 1234));
        // Two seals of the same text differ (nonce per packet).
        assert_ne!(sealed(&k, 1, b"x"), sealed(&k, 1, b"x"));
    }

    #[test]
    fn tampering_and_foreign_keys_are_rejected() {
        let k = GossipKeys::parse(K1).unwrap();
        let other = GossipKeys::parse(K2_HEX).unwrap();
        let p = sealed(&k, 99, b"hello gossip");
        assert_eq!(other.open(&mut p.clone()).unwrap_err(), Reject::UnknownKey);
        for at in [0usize, 6, 14, HEADER_LEN + 1, p.len() - 1] {
            let mut bad = p.clone();
            bad[at] ^= 1;
            let err = k.open(&mut bad).unwrap_err();
            assert!(
                matches!(err, Reject::Auth | Reject::Malformed),
                "byte {at}: {err:?}"
            );
        }
        // A sealed time cannot be changed: it is authenticated.
        let mut younger = p.clone();
        younger[12] = younger[12].wrapping_add(1);
        assert_eq!(k.open(&mut younger).unwrap_err(), Reject::Auth);
        assert_eq!(k.open(&mut [1u8; 10]).unwrap_err(), Reject::Malformed);
        // A plaintext chitchat packet.
        assert_eq!(k.open(&mut [0u8; 100]).unwrap_err(), Reject::Malformed);
    }

    #[test]
    fn rotation_opens_with_any_key_and_seals_with_the_first() {
        let new_old = GossipKeys::parse(&format!("{K2_HEX},{K1}")).unwrap();
        let old = GossipKeys::parse(K1).unwrap();
        let mut from_old = sealed(&old, 5, b"x");
        assert_eq!(new_old.open(&mut from_old).unwrap().key_index, 1);
        let mut from_new = sealed(&new_old, 5, b"x");
        assert_eq!(old.open(&mut from_new).unwrap_err(), Reject::UnknownKey);
        let mut answer = Vec::new();
        new_old.seal(1, 5, b"x", &mut answer);
        assert!(old.open(&mut answer).is_ok(), "an answer in the old key");
    }

    #[test]
    fn the_window_refuses_replays_and_stale_packets() {
        let mut w = ReplayWindow::new(Duration::from_millis(1000), 100);
        assert_eq!(w.check(10_000, [1; 12], 10_000), Ok(()));
        assert_eq!(w.check(10_000, [1; 12], 10_500), Err(Reject::Replay));
        assert_eq!(w.check(10_400, [2; 12], 10_500), Ok(()));
        assert_eq!(w.check(8_999, [3; 12], 10_000), Err(Reject::Stale));
        assert_eq!(w.check(11_001, [3; 12], 10_000), Err(Reject::Stale));
        // Once out of the window the entry is forgotten, and the packet is stale anyway.
        assert_eq!(w.check(10_000, [1; 12], 11_200), Err(Reject::Stale));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn a_full_window_forgets_the_oldest_and_refuses_anything_as_old() {
        let mut w = ReplayWindow::new(Duration::from_secs(60), 3);
        for i in 0..4u8 {
            assert_eq!(w.check(1_000 + u64::from(i), [i; 12], 2_000), Ok(()));
        }
        assert_eq!(w.len(), 3);
        // Packet 0 was forgotten: its replay is refused as stale, not accepted.
        assert_eq!(w.check(1_000, [0; 12], 2_000), Err(Reject::Stale));
        assert_eq!(w.check(1_001, [1; 12], 2_000), Err(Reject::Replay));
        assert_eq!(w.check(1_010, [9; 12], 2_000), Ok(()));
    }
}
