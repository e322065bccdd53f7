//! Active health checks: `GET {base}{path}` every interval with a timeout, through the backend's
//! own upstream client; verdicts go to the backend's health in Balance.

use super::client::UpstreamClient;
use crate::balance::BackendTable;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One task per backend with a `health_check` block.
pub fn spawn_probers(
    backends: &BackendTable,
    clients: &[UpstreamClient],
    shutdown: CancellationToken,
) {
    for b in backends.iter() {
        let Some(hc) = b.cfg.health_check.clone() else {
            continue;
        };
        let backend = b.clone();
        let client = clients[b.id].clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let url = format!("{}{}", backend.base_url, hc.path);
            let mut tick = tokio::time::interval(Duration::from_millis(hc.interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let ok = client
                    .probe(&url, Duration::from_millis(hc.timeout_ms))
                    .await;
                backend.probe(ok);
            }
        });
    }
}
