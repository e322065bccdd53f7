//! What starts a reload besides the admin call: SIGHUP, and with `--watch` a change of the file
//! (its hash polled every second). Each runs until `shutdown`.

use super::{Reloader, version_of};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reload on every SIGHUP. The handler is installed here, before the returned future first runs,
/// so a SIGHUP that comes early never meets the default action (ending the process). Needs a Tokio
/// runtime.
#[cfg(unix)]
pub fn on_sighup(
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup());
    async move {
        let mut hup = match hup {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: reload by signal is off");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            reloader.reload("signal").await;
        }
    }
}

/// Reload when the file's content changes to something not served yet, checking every `every`.
pub async fn watch_file(
    path: PathBuf,
    reloader: Arc<Reloader>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let read = |p: &PathBuf| std::fs::read_to_string(p).ok().map(|t| version_of(&t));
    // From what is served: a change made before the first look counts too.
    let mut seen = Some(reloader.version());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let p = path.clone();
        let now = tokio::task::spawn_blocking(move || read(&p))
            .await
            .ok()
            .flatten();
        if now.is_none() || now == seen {
            continue;
        }
        seen = now.clone();
        if now.is_some_and(|v| v != reloader.version()) {
            reloader.reload("watch").await;
        }
    }
}
