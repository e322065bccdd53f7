//! Shared per-server state: config, runtime settings, counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde_json::{Map, Value, json};

use super::MockConfig;
use super::control::Settings;

/// Everything a request handler needs, shared by all connections.
pub(crate) struct State {
    pub cfg: MockConfig,
    pub name_header: HeaderValue,
    pub settings: Settings,
    pub stats: Stats,
    /// Conversations of stored Responses, for `previous_response_id`.
    pub responses: super::responses::Store,
    /// The W3C trace context of the last API request (`GET /_mock/last_trace`).
    last_trace: std::sync::Mutex<Value>,
    ids: AtomicU64,
}

impl State {
    pub fn new(cfg: MockConfig) -> Self {
        let name_header =
            HeaderValue::from_str(&cfg.name).unwrap_or_else(|_| HeaderValue::from_static("mock"));
        State {
            name_header,
            settings: Settings::new(&cfg),
            stats: Stats::new(),
            responses: Default::default(),
            last_trace: std::sync::Mutex::new(Value::Null),
            ids: AtomicU64::new(1),
            cfg,
        }
    }

    /// Keep `traceparent` and `tracestate` of an API request (null when absent).
    pub fn saw_trace(&self, h: &http::HeaderMap) {
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let v = json!({"traceparent": get("traceparent"), "tracestate": get("tracestate")});
        *self.last_trace.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// The trace context [`State::saw_trace`] kept last.
    pub fn last_trace(&self) -> Value {
        self.last_trace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Next value of the response id counter.
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Unix time in seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix time in milliseconds.
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Counters of API requests (not `/health` nor `/_mock/*`).
pub(crate) struct Stats {
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Indexed by status code (100..=999).
    by_status: Box<[AtomicU64]>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            by_status: (0..1000).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Count a response status.
    pub fn record(&self, status: u16) {
        if let Some(slot) = self.by_status.get(usize::from(status)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Zero the counters (the in-flight gauge stays; its maximum restarts from it).
    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        for slot in self.by_status.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        let now = self.in_flight.load(Ordering::Relaxed);
        self.max_in_flight.store(now, Ordering::Relaxed);
    }

    pub fn to_json(&self, name: &str) -> Value {
        let mut by_status = Map::new();
        for (code, slot) in self.by_status.iter().enumerate() {
            let n = slot.load(Ordering::Relaxed);
            if n > 0 {
                by_status.insert(code.to_string(), n.into());
            }
        }
        json!({
            "name": name,
            "requests": self.requests.load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "max_in_flight": self.max_in_flight.load(Ordering::Relaxed),
            "by_status": by_status,
        })
    }
}

/// Counts one API request as in flight until dropped (streams move it into their producer).
pub(crate) struct InFlight(Arc<State>);

impl InFlight {
    pub fn enter(state: &Arc<State>) -> Self {
        let stats = &state.stats;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let now = stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
