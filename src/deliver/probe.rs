//! Probes, through the backend's own upstream client (for `http://` backends that is the same
//! in-task HTTP/1.1 client as the traffic, in the background client set 0); verdicts go to the
//! backend's health in Balance.
//!
//! - Active health checks: `GET {base}{health_check.path}` every `interval_ms` with a timeout; a
//!   2xx is healthy.
//! - Probe-back of an ejected backend: from an ejection's start, every `eject_probe_ms` (backing
//!   off after relapses, see `balance::Health`) until the ejection ends. It asks the health check
//!   path when there is one (a 2xx ends the ejection), else `GET {base}/v1/models` with the backend's
//!   key, which OpenAI and Anthropic APIs (and most compatible servers) answer cheaply: any answer
//!   but a 5xx ends the ejection, as only connect errors and 5xx count toward one. Its timeout is
//!   the health check's, else the probe interval.

use super::client::UpstreamClient;
use super::upstream::api_probe_headers;
use crate::balance::{Backend, BackendTable};
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One health-check task per backend with a `health_check` block, one probe-back task per backend
/// with `eject_probe_ms` above 0.
pub fn spawn_probers(
    backends: &BackendTable,
    clients: &[UpstreamClient],
    shutdown: CancellationToken,
) {
    for b in backends.iter() {
        let client = &clients[b.id];
        if let Some(every) = b.cfg.eject_probe() {
            let probe = ProbeBack::of(b, every);
            tokio::spawn(probe_back(
                b.clone(),
                client.clone(),
                probe,
                shutdown.clone(),
            ));
        }
        let Some(hc) = b.cfg.health_check.clone() else {
            continue;
        };
        let backend = b.clone();
        let client = client.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(hc.interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let timeout = Duration::from_millis(hc.timeout_ms);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let status = client.probe(&hc.path, HeaderMap::new(), timeout).await;
                backend.probe(status.is_some_and(|s| s.is_success()));
            }
        });
    }
}

/// What a probe-back asks and which answers end the ejection.
#[derive(Debug, Clone)]
struct ProbeBack {
    every: Duration,
    path: String,
    headers: HeaderMap,
    timeout: Duration,
    /// Probing the health check path (a 2xx is needed) rather than the API (anything but a 5xx).
    health_path: bool,
}

impl ProbeBack {
    fn of(b: &Backend, every: Duration) -> ProbeBack {
        match &b.cfg.health_check {
            Some(hc) => ProbeBack {
                every,
                path: hc.path.clone(),
                headers: HeaderMap::new(),
                timeout: Duration::from_millis(hc.timeout_ms),
                health_path: true,
            },
            None => ProbeBack {
                every,
                path: "/v1/models".into(),
                headers: api_probe_headers(b),
                timeout: every,
                health_path: false,
            },
        }
    }
}

/// Whether a probe-back's answer (`None`: none in time) ends an ejection.
fn ends_ejection(health_path: bool, status: Option<StatusCode>) -> bool {
    match status {
        None => false,
        Some(s) if health_path => s.is_success(),
        Some(s) => !s.is_server_error(),
    }
}

/// Sleeps until the backend is ejected, then probes it until the ejection ends (a good answer, or
/// its time ran out); again at the next ejection.
async fn probe_back(
    backend: Arc<Backend>,
    client: UpstreamClient,
    probe: ProbeBack,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = backend.ejection_started() => {}
        }
        while let Some(wait) = backend.probe_back_due(probe.every, Instant::now()) {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if backend
                .probe_back_due(probe.every, Instant::now())
                .is_none()
            {
                break;
            }
            let status = client
                .probe(&probe.path, probe.headers.clone(), probe.timeout)
                .await;
            let ok = ends_ejection(probe.health_path, status);
            tracing::debug!(backend = %backend.name(), status = status.map(|s| s.as_u16()), ok, "probe of an ejected backend");
            backend.probe_back(ok, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_answers_end_an_ejection() {
        let s = |n| Some(StatusCode::from_u16(n).unwrap());
        // The health check path must say healthy.
        assert!(ends_ejection(true, s(200)));
        assert!(!ends_ejection(true, s(404)));
        assert!(!ends_ejection(true, s(503)));
        // The API only has to answer without a server error (a 401 or 429 is an answer).
        assert!(ends_ejection(false, s(200)));
        assert!(ends_ejection(false, s(401)));
        assert!(ends_ejection(false, s(429)));
        assert!(!ends_ejection(false, s(500)));
        assert!(!ends_ejection(false, s(503)));
        assert!(!ends_ejection(false, None));
        assert!(!ends_ejection(true, None));
    }
}
