//! One backend's live state: config plus what we learn (health, latency, in-flight, cooldown, its
//! adaptive concurrency limit). Atomics for the hot counters, short non-async locks for the
//! estimators. Deliver and the health prober write to it; the balancer reads it.

use super::quota::{self, Assessment, Observation, Units};
use super::{Health, HealthPolicy, HealthState, PeakEwma};
use crate::config::{BackendConfig, CongestionConfig, Priority};
use crate::observe::Metrics;
use crate::observe::metrics::BackendHandles;
use crate::shape::{AdmissionQueue, ConcurrencyLimit, Outcome, Pacer, allows};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

/// A snapshot of one backend as the balancer sees it.
#[derive(Debug, Clone, Copy)]
pub struct BackendStatus {
    /// This node actively probes the backend (its health verdict is evidence for the cluster).
    pub probed: bool,
    pub available: bool,
    pub healthy: bool,
    pub in_flight: u32,
    pub latency_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub cooldown_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Backend {
    pub id: usize,
    pub cfg: BackendConfig,
    /// Resolved base url (`mock://` replaced by the in-process simulator's address), no trailing slash.
    pub base_url: String,
    /// The API key to inject (`api_key_env`, read once at start by whoever builds the table).
    pub api_key: Option<String>,
    pub policy: HealthPolicy,
    /// What this node learned of the backend: kept by name across a config reload
    /// ([`Backend::carried`]), whatever its position in the new table.
    live: Arc<Learned>,
    /// No cooldown runs longer than this, whatever `Retry-After` says (`cluster.max_cooldown_ms`).
    max_cooldown: Duration,
    congestion_enabled: bool,
    critical_reserve: f64,
    /// GCRA spacing of request starts (`smoothing`); kept across a reload that does not change it.
    pub pacer: Option<Arc<Pacer>>,
    /// Its metric handles (in flight, upstream duration, time to first token).
    pub metrics: BackendHandles,
    /// The name as the `x-sluice-backend` header value (None if it cannot be one).
    pub name_header: Option<http::HeaderValue>,
}

/// A backend's learned state: health, ejections, cooldowns, EWMAs, the adaptive limit, in-flight
/// count and quota. Shared by the [`Backend`]s of successive configs that name the same backend.
#[derive(Debug)]
struct Learned {
    in_flight: AtomicU32,
    /// Requests this node has sent to the backend since start (evidence for its cooldowns).
    sent: AtomicU64,
    health: Mutex<Health>,
    /// Signalled when a passive ejection starts: wakes the probe-back task.
    ejected: tokio::sync::Notify,
    latency: Mutex<PeakEwma>,
    ttft: Mutex<PeakEwma>,
    /// Adaptive concurrency limit (congestion control); `limit` mirrors it for the hot path.
    congestion: Mutex<ConcurrencyLimit>,
    limit: AtomicU32,
    /// The congestion settings `congestion` was built from (a reload that changes them starts over).
    congestion_cfg: Mutex<Option<String>>,
    /// The pacer and the `smoothing` settings it was built from.
    pacer: Mutex<Option<(String, Arc<Pacer>)>>,
    /// Queues of the routes that use this backend, under every config still serving requests:
    /// told when a slot frees up.
    queues: ArcSwap<Vec<Weak<AdmissionQueue>>>,
    /// The provider's rate-limit headers as last seen, and what this node sent since.
    quota: Mutex<quota::Local>,
    /// Its quota does not cover calls now (a log line on each change).
    paced: AtomicBool,
}

const EWMA_TAU: Duration = Duration::from_secs(10);
/// The cap on a cooldown without a `cluster:` section (`cluster.max_cooldown_ms` sets it there).
pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(120);

impl Backend {
    pub fn new(id: usize, cfg: BackendConfig, base_url: String) -> Backend {
        Metrics::healthy(&cfg.name, true);
        let live = Arc::new(Learned {
            in_flight: AtomicU32::new(0),
            sent: AtomicU64::new(0),
            health: Mutex::new(Health::new()),
            ejected: tokio::sync::Notify::new(),
            latency: Mutex::new(PeakEwma::new(EWMA_TAU)),
            ttft: Mutex::new(PeakEwma::new(EWMA_TAU)),
            congestion: Mutex::new(ConcurrencyLimit::new(&CongestionConfig::default())),
            limit: AtomicU32::new(CongestionConfig::default().initial_limit),
            congestion_cfg: Mutex::new(None),
            pacer: Mutex::new(None),
            queues: ArcSwap::default(),
            quota: Mutex::new(quota::Local::default()),
            paced: AtomicBool::new(false),
        });
        Self::with_learned(id, cfg, base_url, live)
    }

    /// The backend `prev` named, under a new config and at position `id` of a new table: what
    /// this node learned of it carries over (health, ejection, cooldown, EWMAs, adaptive limit,
    /// in-flight count, quota). The caller builds it as [`Backend::new`]'s result is built.
    pub fn carried(id: usize, cfg: BackendConfig, base_url: String, prev: &Backend) -> Backend {
        let probed_before = prev.cfg.health_check.is_some();
        let b = Self::with_learned(id, cfg, base_url, prev.live.clone());
        if probed_before && b.cfg.health_check.is_none() {
            // Nothing probes it any more: a verdict of the probes would never clear.
            let mut h = b.live.health.lock().expect("health lock");
            if h.state() == HealthState::Unhealthy {
                let once = HealthPolicy {
                    healthy_threshold: 1,
                    ..b.policy
                };
                h.probe(true, &once);
                Metrics::healthy(b.name(), true);
            }
        }
        b
    }

    fn with_learned(
        id: usize,
        cfg: BackendConfig,
        base_url: String,
        live: Arc<Learned>,
    ) -> Backend {
        let policy = HealthPolicy {
            unhealthy_threshold: cfg
                .health_check
                .as_ref()
                .map_or(2, |h| h.unhealthy_threshold),
            healthy_threshold: cfg.health_check.as_ref().map_or(2, |h| h.healthy_threshold),
            eject_after: cfg.eject_after,
            eject_for: Duration::from_millis(cfg.eject_for_ms),
            eject_max: cfg.eject_max(),
        };
        let cfg_name = cfg.name.clone();
        Backend {
            id,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: None,
            policy,
            cfg,
            live,
            max_cooldown: DEFAULT_MAX_COOLDOWN,
            congestion_enabled: false,
            critical_reserve: 0.0,
            pacer: None,
            metrics: Metrics::backend_handles(&cfg_name),
            name_header: http::HeaderValue::from_str(&cfg_name).ok(),
        }
    }

    /// Whether `other` shares this backend's learned state (the same backend across a reload).
    pub fn same_learned(&self, other: &Backend) -> bool {
        Arc::ptr_eq(&self.live, &other.live)
    }

    /// The key Deliver injects into every request to this backend.
    pub fn with_api_key(mut self, key: Option<String>) -> Backend {
        self.api_key = key;
        self
    }

    /// Cap every cooldown at `max` from its start.
    pub fn with_max_cooldown(mut self, max: Duration) -> Backend {
        self.max_cooldown = max;
        self
    }

    /// Turn on congestion control and smoothing as configured.
    pub fn with_shaping(mut self, c: &CongestionConfig) -> Backend {
        // A carried backend keeps its adaptive limit unless the congestion settings changed.
        let settings = format!("{c:?}");
        {
            let mut built = self.live.congestion_cfg.lock().expect("congestion lock");
            if built.as_deref() != Some(settings.as_str()) {
                let limiter = ConcurrencyLimit::new(c);
                self.live.limit.store(limiter.limit(), Ordering::Relaxed);
                *self.live.congestion.lock().expect("congestion lock") = limiter;
                *built = Some(settings);
            }
        }
        self.congestion_enabled = c.enabled;
        self.critical_reserve = c.critical_reserve;
        self.pacer = self.cfg.smoothing.map(|s| {
            let settings = format!("{s:?}");
            let mut kept = self.live.pacer.lock().expect("pacer lock");
            match kept.as_ref() {
                Some((was, p)) if *was == settings => p.clone(),
                _ => {
                    let p = Arc::new(Pacer::new(s.rate_per_sec, s.burst));
                    *kept = Some((settings, p.clone()));
                    p
                }
            }
        });
        Metrics::concurrency_limit(self.name(), self.concurrency_limit());
        self
    }

    /// Attach the queues to wake when a slot frees: those of this config's routes that use the
    /// backend, beside those of earlier configs still serving requests (a reload keeps them until
    /// their config is dropped).
    pub fn attach_queues(&self, queues: Vec<Arc<AdmissionQueue>>) {
        let mut all: Vec<Weak<AdmissionQueue>> = self
            .live
            .queues
            .load()
            .iter()
            .filter(|q| q.strong_count() > 0)
            .cloned()
            .collect();
        all.extend(queues.iter().map(Arc::downgrade));
        self.live.queues.store(Arc::new(all));
    }

    fn wake_queues(&self) {
        for q in self.live.queues.load().iter() {
            if let Some(q) = q.upgrade() {
                q.notify();
            }
        }
    }

    /// The most requests this backend takes at once now: the adaptive limit, capped by `max_concurrent`.
    pub fn concurrency_limit(&self) -> u32 {
        let adaptive = if self.congestion_enabled {
            self.live.limit.load(Ordering::Relaxed)
        } else {
            u32::MAX
        };
        adaptive.min(self.cfg.max_concurrent.unwrap_or(u32::MAX))
    }

    /// Whether a request of `priority` may start here with `in_flight` already running (critical traffic
    /// may use the reserved share).
    pub fn has_room(&self, in_flight: u32, priority: Priority) -> bool {
        let limit = self.concurrency_limit();
        if limit == u32::MAX {
            return true;
        }
        allows(limit, in_flight, priority, self.critical_reserve)
    }

    /// Feed the congestion controller with a finished request.
    pub fn congestion_sample(&self, outcome: Outcome) {
        if !self.congestion_enabled {
            return;
        }
        // A latency measured while this worker runs late is Sluice's own delay as much as the
        // backend's: it neither shrinks the limit nor ends slow start (drops still count); in
        // slow start the answer still grows the limit, so a burst that made Sluice late does not
        // queue behind a limit that cannot grow until the burst has passed.
        let behind = matches!(outcome, Outcome::Success(_)) && crate::observe::lag::behind();
        let before = self.live.limit.load(Ordering::Relaxed);
        // Requests waiting for a slot are demand as much as requests in flight: the limit may grow
        // while they wait, not only once they have started.
        let waiting = self
            .live
            .queues
            .load()
            .iter()
            .any(|q| q.upgrade().is_some_and(|q| !q.is_empty()));
        let in_flight = if waiting {
            self.in_flight().max(before)
        } else {
            self.in_flight()
        };
        let (limit, slow_start) = {
            let mut c = self.live.congestion.lock().expect("congestion lock");
            let limit = if behind {
                c.on_success_while_behind(in_flight)
            } else {
                c.on_sample(outcome, in_flight)
            };
            (limit, c.in_slow_start())
        };
        if limit != before {
            self.live.limit.store(limit, Ordering::Relaxed);
            Metrics::concurrency_limit(self.name(), self.concurrency_limit());
            // Only a limit that lets more start wakes the queues (`max_concurrent` may cap it).
            let cap = self.cfg.max_concurrent.unwrap_or(u32::MAX);
            if limit.min(cap) > before.min(cap) {
                for q in self.live.queues.load().iter().filter_map(Weak::upgrade) {
                    if slow_start {
                        q.notify_growing();
                    } else {
                        q.notify();
                    }
                }
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn in_flight(&self) -> u32 {
        self.live.in_flight.load(Ordering::Relaxed)
    }

    /// Requests sent to this backend from this node since start.
    pub fn sent(&self) -> u64 {
        self.live.sent.load(Ordering::Relaxed)
    }

    /// Take a slot if one is free for `priority`, atomically with the check.
    pub fn try_start(self: &Arc<Self>, priority: Priority) -> Option<InFlightGuard> {
        let prev = self
            .live
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                self.has_room(n, priority).then_some(n + 1)
            })
            .ok()?;
        self.live.sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.set(f64::from(prev + 1));
        Some(InFlightGuard {
            backend: self.clone(),
        })
    }

    /// Count a request in flight until the guard drops (the response body finished or was dropped).
    pub fn start(self: &Arc<Self>) -> InFlightGuard {
        let n = self.live.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.live.sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.set(f64::from(n));
        InFlightGuard {
            backend: self.clone(),
        }
    }

    pub fn local_status(&self, now: Instant) -> BackendStatus {
        let health = self.live.health.lock().expect("health lock");
        BackendStatus {
            probed: self.cfg.health_check.is_some(),
            available: health.available(now),
            healthy: health.state() == HealthState::Healthy,
            in_flight: self.in_flight(),
            latency_ms: self.live.latency.lock().expect("ewma lock").get(now),
            ttft_ms: self.live.ttft.lock().expect("ewma lock").get(now),
            cooldown_until: health.cooldown(),
        }
    }

    /// Whole-response latency (non-streaming) or time to first byte.
    pub fn observe_latency(&self, d: Duration, now: Instant) {
        self.live
            .latency
            .lock()
            .expect("ewma lock")
            .observe(d.as_secs_f64() * 1000.0, now);
    }

    /// Time to first token of a stream.
    pub fn observe_ttft(&self, d: Duration, now: Instant) {
        self.live
            .ttft
            .lock()
            .expect("ewma lock")
            .observe(d.as_secs_f64() * 1000.0, now);
    }

    /// A request outcome seen by Deliver: connect errors and 5xx count against the backend.
    pub fn passive(&self, ok: bool, now: Instant) {
        let ejected_for = {
            let mut h = self.live.health.lock().expect("health lock");
            h.passive(ok, &self.policy, now)
                .then(|| h.ejected_until().map_or(Duration::ZERO, |t| t - now))
        };
        if let Some(d) = ejected_for {
            tracing::warn!(backend = %self.name(), for_ms = d.as_millis() as u64, "backend ejected after consecutive failures");
            Metrics::ejected(self.name());
            self.live.ejected.notify_one();
        }
    }

    /// Wait for the next passive ejection (one that started since the last wait counts too).
    pub async fn ejection_started(&self) {
        self.live.ejected.notified().await;
    }

    /// While the backend is ejected at `now`: how long until the next probe-back, given the
    /// configured `interval` (it backs off after relapses, see [`Health::probe_back_delay`]).
    pub fn probe_back_due(&self, interval: Duration, now: Instant) -> Option<Duration> {
        let h = self.live.health.lock().expect("health lock");
        h.is_ejected(now)
            .then(|| h.probe_back_delay(&self.policy, interval))
    }

    /// A probe-back's result while ejected: a success ends the ejection.
    pub fn probe_back(&self, ok: bool, now: Instant) {
        Metrics::probe_back(self.name(), ok);
        let ended = self
            .live
            .health
            .lock()
            .expect("health lock")
            .probe_back(ok, now);
        if ended {
            tracing::info!(backend = %self.name(), "backend answered a probe: ejection ended");
            self.wake_queues();
        }
    }

    /// An upstream 429 with `Retry-After`: no request goes there until then (at most `max_cooldown`).
    pub fn cooldown(&self, until: Instant) {
        let until = until.min(Instant::now() + self.max_cooldown);
        self.live
            .health
            .lock()
            .expect("health lock")
            .cooldown_until(until);
    }

    /// What an answer's rate-limit headers said (older than the one held: ignored).
    pub fn observe_quota(&self, obs: Observation) {
        if obs.is_empty() || !self.live.quota.lock().expect("quota lock").observe(obs) {
            return;
        }
        for kind in quota::KINDS {
            if let Some(w) = obs.window(kind) {
                Metrics::quota(self.name(), kind.as_str(), w.remaining, w.reset_ms);
            }
        }
    }

    /// This node's latest quota observation, while it still says something at `now_ms`.
    pub fn local_quota(&self, now_ms: u64) -> Option<Observation> {
        let q = self.live.quota.lock().expect("quota lock");
        q.obs.filter(|o| !o.expired(now_ms))
    }

    /// What this node sent here after `at_ms`.
    pub fn quota_sent_since(&self, at_ms: u64) -> Units {
        self.live
            .quota
            .lock()
            .expect("quota lock")
            .ledger
            .since(at_ms)
    }

    /// A call is on its way here: it counts against the quota until an answer reports it.
    pub fn record_send(&self, units: Units, now_ms: u64) {
        self.live
            .quota
            .lock()
            .expect("quota lock")
            .ledger
            .record(now_ms, units);
    }

    /// Log when the backend starts or stops being paced by its quota.
    pub fn note_pacing(&self, a: &Assessment) {
        let paced = !a.fits;
        if self.live.paced.swap(paced, Ordering::Relaxed) == paced {
            return;
        }
        match a.short {
            Some((kind, left)) if paced => {
                tracing::info!(backend = %self.name(), kind = kind.as_str(), left = left.floor() as u64, ready_in_ms = a.ready_in.as_millis() as u64, "backend paced: its remaining quota does not cover the call");
            }
            _ => tracing::info!(backend = %self.name(), "backend no longer paced: quota available"),
        }
    }

    /// An active probe's result.
    pub fn probe(&self, ok: bool) {
        let change = self
            .live
            .health
            .lock()
            .expect("health lock")
            .probe(ok, &self.policy);
        if let Some(state) = change {
            let healthy = state == HealthState::Healthy;
            tracing::info!(backend = %self.name(), healthy, "backend health changed");
            Metrics::healthy(self.name(), healthy);
            if healthy {
                self.wake_queues();
            }
        }
    }
}

/// Decrements the backend's in-flight count on drop.
#[derive(Debug)]
pub struct InFlightGuard {
    backend: Arc<Backend>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let n = self
            .backend
            .live
            .in_flight
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        self.backend.metrics.in_flight.set(f64::from(n));
        self.backend.wake_queues();
    }
}

/// A slot on a backend waits out the backend's pacing (`smoothing`) before it starts.
impl crate::shape::Paced for (Arc<Backend>, InFlightGuard) {
    fn pacer(&self) -> Option<&Pacer> {
        self.0.pacer.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> BackendConfig {
        let yaml = format!("name: b\nurl: http://127.0.0.1:9\nprotocol: openai\n{extra}");
        serde_saphyr::from_str(&yaml).expect("backend config")
    }

    #[test]
    fn a_carried_backend_keeps_what_was_learned_at_its_new_position() {
        let shaping = CongestionConfig::default();
        let old = Arc::new(
            Backend::new(0, cfg("eject_after: 2\n"), "http://127.0.0.1:9".into())
                .with_shaping(&shaping),
        );
        let now = Instant::now();
        old.observe_latency(Duration::from_millis(40), now);
        let guard = old.start();
        old.passive(false, now);
        old.passive(false, now);
        assert!(!old.local_status(now).available, "ejected");

        // The next config lists it second, with another weight: same learned state.
        let new = Backend::carried(
            1,
            cfg("eject_after: 2\nweight: 5\n"),
            "http://127.0.0.1:9".into(),
            &old,
        )
        .with_shaping(&shaping);
        assert!(new.same_learned(&old));
        assert_eq!((new.id, new.cfg.weight), (1, 5));
        let st = new.local_status(now);
        assert!(!st.available);
        assert_eq!(st.in_flight, 1);
        assert!(st.latency_ms.is_some_and(|l| l > 30.0));
        assert_eq!(new.concurrency_limit(), old.concurrency_limit());
        let paced = "smoothing: { rate_per_sec: 10, burst: 1 }\n";
        let p = Backend::new(0, cfg(paced), "http://127.0.0.1:9".into()).with_shaping(&shaping);
        let same =
            Backend::carried(0, cfg(paced), "http://127.0.0.1:9".into(), &p).with_shaping(&shaping);
        assert!(Arc::ptr_eq(
            p.pacer.as_ref().unwrap(),
            same.pacer.as_ref().unwrap()
        ));
        let faster = "smoothing: { rate_per_sec: 20, burst: 1 }\n";
        let other = Backend::carried(0, cfg(faster), "http://127.0.0.1:9".into(), &p)
            .with_shaping(&shaping);
        assert!(!Arc::ptr_eq(
            p.pacer.as_ref().unwrap(),
            other.pacer.as_ref().unwrap()
        ));
        // A request started on the old config ends: the count both see drops.
        drop(guard);
        assert_eq!(new.in_flight(), 0);
    }

    #[test]
    fn a_backend_no_longer_probed_does_not_stay_unhealthy() {
        let probed = "health_check: { path: /health, unhealthy_threshold: 1 }\n";
        let old = Backend::new(0, cfg(probed), "http://127.0.0.1:9".into());
        old.probe(false);
        assert!(!old.local_status(Instant::now()).healthy);
        let kept = Backend::carried(0, cfg(probed), "http://127.0.0.1:9".into(), &old);
        assert!(!kept.local_status(Instant::now()).healthy);
        let unprobed = Backend::carried(0, cfg(""), "http://127.0.0.1:9".into(), &old);
        assert!(unprobed.local_status(Instant::now()).healthy);
    }
}
