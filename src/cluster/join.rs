//! Joining: [`Cluster::join`] checks the config, starts chitchat with the tuned failure detector
//! and spawns the live-members watcher.

use super::ClusterError;
use super::divisor::{Divisor, seed_count};
use super::keys::{self, NodeStatus};
use super::member::{Member, NodeInfo};
use super::membership::{Cluster, Shared};
use super::watcher::{Outputs, follow};
use crate::config::ClusterConfig;
use crate::observe::Metrics;
use chitchat::transport::Transport;
use chitchat::{
    ChitchatConfig, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

impl Cluster {
    /// Start gossip on `cfg.gossip_listen` and join through `cfg.seeds` (`host:port`; DNS names are
    /// re-resolved by chitchat every minute). `transport`: `&chitchat::transport::UdpTransport` in
    /// production, a `ChannelTransport` in tests. Port 0 in `gossip_listen` picks a free UDP port.
    pub async fn join(
        cfg: &ClusterConfig,
        node_id: &str,
        transport: &dyn Transport,
    ) -> Result<Cluster, ClusterError> {
        if node_id.is_empty() {
            return Err(ClusterError::Config {
                field: "node.id",
                reason: "must not be empty".into(),
            });
        }
        let mut listen: SocketAddr =
            cfg.gossip_listen
                .parse()
                .map_err(|_| ClusterError::Config {
                    field: "cluster.gossip_listen",
                    reason: format!("`{}` is not ip:port", cfg.gossip_listen),
                })?;
        if listen.port() == 0 {
            listen.set_port(free_udp_port(listen)?);
        }
        let advertise = match &cfg.advertise {
            Some(a) => resolve(a).await?,
            None => listen,
        };
        if advertise.ip().is_unspecified() || advertise.port() == 0 {
            return Err(ClusterError::Config {
                field: "cluster.advertise",
                reason: format!("peers cannot reach `{advertise}`: set an address they can"),
            });
        }
        let gossip_interval = Duration::from_millis(cfg.gossip_interval_ms.max(1));
        let dead_after = Duration::from_millis(cfg.dead_after_ms.max(1));
        let chitchat_id = ChitchatId::new(node_id, next_generation(), advertise);
        let self_node = NodeInfo::from_chitchat_id(&chitchat_id);
        let config = ChitchatConfig {
            chitchat_id: chitchat_id.clone(),
            cluster_id: cfg.cluster_id.clone(),
            gossip_interval,
            listen_addr: listen,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: failure_detector_config(gossip_interval, dead_after),
            marked_for_deletion_grace_period: grace_period(dead_after),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
        };
        let initial = vec![(
            keys::STATUS.to_string(),
            NodeStatus::Ready.as_str().to_string(),
        )];
        let handle = spawn_chitchat(config, initial, transport)
            .await
            .map_err(|e| ClusterError::Start {
                addr: listen,
                reason: format!("{e:#}"),
            })?;
        let chitchat = handle.chitchat();
        let watcher = chitchat.lock().await.live_nodes_watcher();
        let self_member = Member::new_self(self_node.clone());
        let (members_tx, members_rx) = watch::channel(Arc::new(vec![self_member]));
        let (count_tx, count_rx) = watch::channel(1usize);
        Metrics::cluster_members(1);
        // Until gossip says otherwise, the limiter divides by the seed count.
        let mut own = vec![
            cfg.gossip_listen.clone(),
            listen.to_string(),
            advertise.to_string(),
        ];
        own.extend(cfg.advertise.clone());
        let seeds = seed_count(&cfg.seeds, &own);
        let (divisor_tx, divisor_rx) = watch::channel(seeds);
        let stop = CancellationToken::new();
        tokio::spawn(follow(
            watcher,
            chitchat.clone(),
            chitchat_id,
            Outputs {
                members: members_tx,
                live_count: count_tx,
                divisor: divisor_tx,
            },
            Divisor::for_dead_after(seeds, dead_after),
            gossip_interval,
            stop.clone(),
        ));
        tracing::info!(
            node = node_id,
            addr = %advertise,
            listen = %listen,
            generation = self_node.generation,
            cluster = %cfg.cluster_id,
            seeds = ?cfg.seeds,
            "joined gossip cluster"
        );
        Ok(Cluster {
            shared: Arc::new(Shared {
                cluster_id: cfg.cluster_id.clone(),
                self_node,
                gossip_interval,
                max_cooldown: Duration::from_millis(cfg.max_cooldown_ms.max(1)),
                chitchat,
                members: members_rx,
                divisor: divisor_rx.clone(),
                stop,
            }),
            handle: Some(handle),
            live_count: count_rx,
            divisor: divisor_rx,
        })
    }
}

/// Phi-accrual tuning so a silent node is declared dead after about `dead_after`.
///
/// chitchat's phi is `time since the last new heartbeat / mean interval between new heartbeats`,
/// and a node is dead above `phi_threshold`. A node learns a peer's newer heartbeat about twice per
/// gossip round (from the peer's own Syn and from its SynAck, more via third parties); measured
/// over ChannelTransport with 2 to 8 nodes the mean settles near `gossip_interval / 2`. So the
/// prior (`initial_interval`, weighted as 5 samples) is `gossip_interval / 2`, and the threshold is
/// `(dead_after - one round) / (gossip_interval / 2)` (18 for the default 300 ms / 3 s): the
/// liveness check itself runs once per round. A slower network raises the mean and the timeout with
/// it (that is what phi accrual is for).
pub fn failure_detector_config(
    gossip_interval: Duration,
    dead_after: Duration,
) -> FailureDetectorConfig {
    let mean_heartbeat = (gossip_interval / 2).max(Duration::from_millis(1));
    let budget = dead_after.saturating_sub(gossip_interval).as_nanos() as f64;
    FailureDetectorConfig {
        phi_threshold: (budget / mean_heartbeat.as_nanos() as f64).clamp(2.0, 200.0),
        sampling_window_size: 200,
        max_interval: dead_after.max(gossip_interval * 2),
        initial_interval: mean_heartbeat,
        dead_node_grace_period: grace_period(dead_after),
    }
}

/// How long chitchat keeps a dead node's state and deleted keys' tombstones: 20 × `dead_after`
/// (a minute by default), at least 10 s. Long enough for every peer to learn of the deletion,
/// short enough that dead generations do not pile up.
fn grace_period(dead_after: Duration) -> Duration {
    (dead_after * 20).max(Duration::from_secs(10))
}

/// Start time in unix ms, strictly increasing within one process (tests restart nodes quickly).
fn next_generation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = super::report::unix_now_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

fn free_udp_port(listen: SocketAddr) -> Result<u16, ClusterError> {
    std::net::UdpSocket::bind(listen)
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClusterError::Start {
            addr: listen,
            reason: e.to_string(),
        })
}

async fn resolve(addr: &str) -> Result<SocketAddr, ClusterError> {
    let err = |reason: String| ClusterError::Resolve {
        addr: addr.to_string(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| err(e.to_string()))?;
    addrs.next().ok_or_else(|| err("no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_detector_defaults() {
        let fd = failure_detector_config(Duration::from_millis(300), Duration::from_millis(3000));
        assert_eq!(fd.phi_threshold, 18.0);
        assert_eq!(fd.initial_interval, Duration::from_millis(150));
        assert_eq!(fd.dead_node_grace_period, Duration::from_secs(60));
        assert_eq!(fd.max_interval, Duration::from_millis(3000));
        // The smallest valid config (dead_after = 3 intervals) still gets a sane threshold.
        let fd = failure_detector_config(Duration::from_millis(10), Duration::from_millis(30));
        assert_eq!(fd.phi_threshold, 4.0);
        assert_eq!(fd.dead_node_grace_period, Duration::from_secs(10));
    }

    #[test]
    fn generations_grow() {
        let a = next_generation();
        let b = next_generation();
        assert!(b > a);
        assert!(a > 1_700_000_000_000, "start time in unix ms");
    }
}
