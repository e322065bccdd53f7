//! [`SealedTransport`]: chitchat's gossip over UDP with every packet sealed ([`super::seal`]).
//!
//! A received packet is opened, checked against the replay window, then decoded; one that fails any
//! step is dropped, counted in `sluice_gossip_rejected_total{reason}` and logged (at most one line
//! per [`LOG_EVERY`], naming the source address and how many were dropped since the last line).
//!
//! Key rotation: a node seals with its first key, except that it answers a peer in the key that
//! peer last sealed with (if it holds it). So nodes holding `[new, old]` and nodes holding `[old]`
//! form one cluster: the `[old]` nodes cannot open a `[new, old]` node's own Syn, but every exchange
//! they start is answered in `old`, and chitchat's Syn → SynAck → Ack carries state both ways.

use super::ClusterError;
use super::seal::{GossipKeys, OVERHEAD, Reject, ReplayWindow};
use crate::config::ClusterConfig;
use crate::observe::Metrics;
use anyhow::Context as _;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The largest UDP payload over IPv4 (chitchat fills a delta up to this, before sealing).
pub const MAX_DATAGRAM: usize = 65_507;
/// At most one warning line per this long about rejected packets.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Peers whose key choice is remembered; past this the memory starts over (answers use the first key).
const MAX_PEERS: usize = 4_096;

/// The transport `cfg` asks for: sealed with the keys in `cluster.secret_env`, or, with
/// `cluster.insecure: true` and no key, chitchat's plaintext UDP (with a warning).
pub fn from_config(cfg: &ClusterConfig) -> Result<Box<dyn Transport>, ClusterError> {
    let Some(name) = &cfg.secret_env else {
        if !cfg.insecure {
            return Err(ClusterError::Config {
                field: "cluster.secret_env",
                reason: "gossip needs a key, or `insecure: true`".into(),
            });
        }
        tracing::warn!(
            cluster = %cfg.cluster_id,
            "gossip is neither authenticated nor encrypted (cluster.insecure: true): anyone who can send udp to the gossip port can join and steer routing"
        );
        return Ok(Box::new(chitchat::transport::UdpTransport));
    };
    let text = std::env::var(name).unwrap_or_default();
    let keys = GossipKeys::parse(&text).map_err(|e| ClusterError::Config {
        field: "cluster.secret_env",
        reason: format!("`{name}`: {e}"),
    })?;
    let interval = Duration::from_millis(cfg.gossip_interval_ms.max(1));
    tracing::info!(keys = keys.len(), key_ids = ?keys.ids(), "gossip sealed (chacha20-poly1305)");
    Ok(Box::new(SealedTransport::new(
        keys,
        ReplayWindow::window_for(interval),
    )))
}

/// What `/admin/cluster` shows about gossip security.
pub fn admin_json(cfg: &ClusterConfig) -> serde_json::Value {
    let ids = cfg
        .secret_env
        .as_ref()
        .and_then(|n| GossipKeys::parse(&std::env::var(n).unwrap_or_default()).ok())
        .map(|k| k.ids())
        .unwrap_or_default();
    serde_json::json!({"sealed": !ids.is_empty(), "insecure": cfg.insecure, "key_ids": ids})
}

/// Gossip over UDP, sealed with the cluster keys.
pub struct SealedTransport {
    keys: GossipKeys,
    replay_window: Duration,
}

impl SealedTransport {
    /// `replay_window`: see [`ReplayWindow::window_for`].
    pub fn new(keys: GossipKeys, replay_window: Duration) -> SealedTransport {
        SealedTransport {
            keys,
            replay_window,
        }
    }
}

#[async_trait::async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot bind {listen}/udp for gossip"))?;
        Ok(Box::new(SealedSocket::new(
            socket,
            self.keys.clone(),
            ReplayWindow::new(self.replay_window, super::seal::MAX_SEEN),
        )))
    }
}

/// One gossip socket: chitchat calls `send` and `recv` from one task, so no locks.
pub struct SealedSocket {
    socket: tokio::net::UdpSocket,
    keys: GossipKeys,
    replay: ReplayWindow,
    plain: Vec<u8>,
    sealed: Vec<u8>,
    buf: Box<[u8]>,
    /// The key each peer last sealed with, when not our first.
    peer_keys: HashMap<SocketAddr, usize>,
    log: RejectLog,
}

impl SealedSocket {
    pub fn new(socket: tokio::net::UdpSocket, keys: GossipKeys, replay: ReplayWindow) -> Self {
        SealedSocket {
            socket,
            keys,
            replay,
            plain: Vec::with_capacity(MAX_DATAGRAM),
            sealed: Vec::with_capacity(MAX_DATAGRAM + OVERHEAD),
            buf: vec![0u8; MAX_DATAGRAM + OVERHEAD + 1].into_boxed_slice(),
            peer_keys: HashMap::new(),
            log: RejectLog::default(),
        }
    }

    /// Open one received datagram (`len` bytes of `buf`) into an envelope.
    fn accept(&mut self, len: usize, from: SocketAddr) -> Result<ChitchatEnvelope, Reject> {
        let packet = &mut self.buf[..len];
        let opened = self.keys.open(packet)?;
        self.replay.check(
            opened.sent_at_ms,
            opened.nonce,
            super::report::unix_now_ms(),
        )?;
        let mut plain = &packet[opened.plain];
        let envelope = ChitchatEnvelope::deserialize(&mut plain).map_err(|_| Reject::Decode)?;
        if opened.key_index == 0 {
            self.peer_keys.remove(&from);
        } else {
            if self.peer_keys.len() >= MAX_PEERS {
                self.peer_keys.clear();
            }
            self.peer_keys.insert(from, opened.key_index);
        }
        Ok(envelope)
    }
}

#[async_trait::async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket
            .local_addr()
            .context("gossip socket has no address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.plain.clear();
        envelope.serialize(&mut self.plain);
        let key = self.peer_keys.get(&to).copied().unwrap_or(0);
        self.keys.seal(
            key,
            super::report::unix_now_ms(),
            &self.plain,
            &mut self.sealed,
        );
        if self.sealed.len() > MAX_DATAGRAM {
            // Chitchat sizes deltas for plain UDP; the state Sluice gossips stays far below that.
            Metrics::gossip_rejected("too_large");
            tracing::error!(to = %to, bytes = self.sealed.len(), max = MAX_DATAGRAM, "sealed gossip packet too large for one datagram, not sent");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let num_bytes_sent = self
            .socket
            .send_to(&self.sealed, to)
            .await
            .context("cannot send gossip")?;
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(e).context("gossip socket failed"),
            };
            match self.accept(len, from) {
                Ok(envelope) => {
                    return Ok(RecvOutcome {
                        from_addr: from,
                        envelope,
                        num_bytes_received: len,
                    });
                }
                Err(reason) => {
                    Metrics::gossip_rejected(reason.label());
                    self.log.rejected(reason, from, Instant::now());
                }
            }
        }
    }
}

fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
    )
}

/// Rate-limits the warning about rejected packets.
#[derive(Debug, Default)]
struct RejectLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RejectLog {
    /// Whether a line was written.
    fn rejected(&mut self, reason: Reject, from: SocketAddr, now: Instant) -> bool {
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return false;
        }
        tracing::warn!(
            from = %from,
            reason = reason.label(),
            suppressed = self.suppressed,
            "gossip packet rejected"
        );
        self.last = Some(now);
        self.suppressed = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chitchat::ChitchatMessage;
    use chitchat::ProtocolVersion;

    const OLD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const NEW: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn syn() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V1,
            message: ChitchatMessage::BadCluster,
        }
    }

    async fn open(keys: &str) -> Box<dyn Socket> {
        let t = SealedTransport::new(GossipKeys::parse(keys).unwrap(), Duration::from_secs(2));
        t.open("127.0.0.1:0".parse().unwrap()).await.unwrap()
    }

    async fn recv_within(s: &mut Box<dyn Socket>, ms: u64) -> Option<RecvOutcome> {
        tokio::time::timeout(Duration::from_millis(ms), s.recv())
            .await
            .ok()
            .map(|r| r.unwrap())
    }

    #[tokio::test]
    async fn a_captured_packet_replayed_is_dropped() {
        let mut a = open(OLD).await;
        let mut b = open(OLD).await;
        // A spy socket receives what `a` sends, then replays it to `b`.
        let spy = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.send(spy.local_addr().unwrap(), syn()).await.unwrap();
        let mut captured = vec![0u8; 70_000];
        let (n, _) = spy.recv_from(&mut captured).await.unwrap();
        captured.truncate(n);
        let b_addr = b.local_addr().unwrap();
        spy.send_to(&captured, b_addr).await.unwrap();
        let first = recv_within(&mut b, 2_000)
            .await
            .expect("the original is accepted");
        assert_eq!(first.envelope, syn());
        spy.send_to(&captured, b_addr).await.unwrap();
        assert!(
            recv_within(&mut b, 300).await.is_none(),
            "the replay is dropped"
        );
        // The socket still works afterwards.
        a.send(b_addr, syn()).await.unwrap();
        assert!(recv_within(&mut b, 2_000).await.is_some());
        let _ = &mut a;
    }

    #[tokio::test]
    async fn wrong_key_and_plaintext_are_dropped_and_rotation_answers_in_the_peers_key() {
        let mut old = open(OLD).await;
        let mut new_old = open(&format!("{NEW},{OLD}")).await;
        let mut stranger = open(NEW).await;
        let (old_addr, no_addr) = (old.local_addr().unwrap(), new_old.local_addr().unwrap());
        // A stranger with another key, and a plaintext chitchat packet: dropped.
        stranger.send(old_addr, syn()).await.unwrap();
        let plain = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        plain
            .send_to(&syn().serialize_to_vec(), old_addr)
            .await
            .unwrap();
        assert!(recv_within(&mut old, 300).await.is_none());
        // [new, old] seals with new: [old] cannot open it.
        new_old.send(old_addr, syn()).await.unwrap();
        assert!(recv_within(&mut old, 300).await.is_none());
        // [old] speaks first; the answer comes back in old.
        old.send(no_addr, syn()).await.unwrap();
        assert!(recv_within(&mut new_old, 2_000).await.is_some());
        new_old.send(old_addr, syn()).await.unwrap();
        assert!(recv_within(&mut old, 2_000).await.is_some());
    }

    #[test]
    fn the_reject_log_writes_once_per_period() {
        let mut log = RejectLog::default();
        let t = Instant::now();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(log.rejected(Reject::Auth, from, t));
        assert!(!log.rejected(Reject::Auth, from, t + Duration::from_secs(1)));
        assert!(!log.rejected(Reject::Replay, from, t + Duration::from_secs(9)));
        assert_eq!(log.suppressed, 2);
        assert!(log.rejected(Reject::Auth, from, t + LOG_EVERY));
        assert_eq!(log.suppressed, 0);
    }
}
