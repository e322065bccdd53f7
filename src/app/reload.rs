//! A config reload of the running [`App`]: load and validate the file, refuse what needs a
//! restart, start what the new config adds (simulated upstreams, the certificate), retune the
//! limiter, build the next pipeline with [`assemble`] and swap it in.

use super::{App, Running, assemble, start_mocks};
use crate::config::{Config, ConfigError};
use crate::reload::{Outcome, Reload, diff};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

impl App {
    /// Load the file again and swap it in, or say why not (the running config keeps serving).
    async fn reload_now(&self) -> Outcome {
        let Some(source) = self.source.get() else {
            return Outcome::Invalid {
                error: "started without a config file: nothing to reload".into(),
                field: None,
                line: None,
            };
        };
        let mut running = self.running.lock().await;
        let path = source.path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await;
        let text = match read.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
            Ok(t) => t,
            Err(e) => {
                return Outcome::invalid(&ConfigError::Read {
                    path: source.path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let version = crate::reload::version_of(&text);
        let mut cfg = match Config::parse(&text) {
            Ok(c) => c,
            Err(e) => return Outcome::invalid(&e),
        };
        if let Some(l) = &source.listen {
            cfg.listen.address = l.clone();
        }
        let fields = diff::restart_needed(&running.cfg, &cfg);
        if !fields.is_empty() {
            return Outcome::RestartRequired { fields };
        }
        let mocks = match start_mocks(&cfg, &self.base.shutdown, &running.mocks).await {
            Ok(m) => m,
            Err(e) => {
                return Outcome::Invalid {
                    error: e.to_string(),
                    field: Some("mock_upstreams".into()),
                    line: None,
                };
            }
        };
        if let (Some(t), Some(certs)) = (&cfg.listen.tls, self.tls.get())
            && let Err(e) = certs.reload(t)
        {
            return Outcome::Invalid {
                error: format!("listen.tls: {e}"),
                field: Some("listen.tls".into()),
                line: None,
            };
        }

        // Commit: limits first (a changed limit applies from here on), then the pipeline.
        let tenant_cfgs: Vec<_> = cfg.tenants.iter().map(|t| t.value.clone()).collect();
        self.base.limiter.retune(&tenant_cfgs);
        let prev = self.live.load_full();
        let addrs = mocks.iter().map(|(n, (_, a))| (n.clone(), *a)).collect();
        let next = {
            let membership = self.membership.lock().await;
            assemble(
                &self.base,
                &cfg,
                &addrs,
                Some(&prev),
                membership.as_ref(),
                &version,
                &self.reloader,
            )
        };
        self.live.store(Arc::new(next.pipeline));
        running.probes.cancel();
        if let Some(p) = running.publisher.take() {
            p.abort();
        }
        let (backends, tenants) = (
            diff::backends(&running.cfg, &cfg),
            diff::tenants(&running.cfg, &cfg),
        );
        tracing::info!(
            backends_added = ?backends.added,
            backends_removed = ?backends.removed,
            tenants_added = ?tenants.added,
            tenants_removed = ?tenants.removed,
            "new config swapped in: state carried over by name"
        );
        *running = Running {
            cfg,
            mocks,
            probes: next.probes,
            publisher: next.publisher,
        };
        // Still under the reload lock: the version recorded is the one swapped in.
        let previous = self.version();
        self.set_version(version.clone()).await;
        drop(running);
        Outcome::Ok { version, previous }
    }
}

impl Reload for App {
    fn reload(
        self: Arc<Self>,
        trigger: &'static str,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        Box::pin(async move {
            // On the background runtime: the new config's tasks must not live on a serving worker's.
            let rt = self.base.runtime.clone();
            let outcome = rt
                .spawn(async move { self.reload_now().await })
                .await
                .unwrap_or_else(|_| Outcome::unavailable());
            outcome.record(trigger);
            outcome
        })
    }

    fn version(&self) -> String {
        self.version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
