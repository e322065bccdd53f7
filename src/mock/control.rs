//! Runtime settings (atomics), the token-bucket rate limiter, and the `/_mock/*` endpoints.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::MockConfig;
use super::body::{MockBody, error, json_response};
use super::fault::{FaultSetting, StreamFault};
use super::state::State;

/// Behaviour knobs changeable at run time; read once per request via [`Settings::snapshot`].
pub(crate) struct Settings {
    latency_ms: AtomicU64,
    ttft_ms: AtomicU64,
    tokens_per_sec: AtomicU64,
    error_rate: AtomicU64,
    healthy: AtomicBool,
    /// Forced status for every API request; 0 = none.
    status: AtomicU32,
    stream_fault: FaultSetting,
    /// `Retry-After` seconds on forced statuses; 0 = none.
    retry_after_s: AtomicU64,
    /// Size to pad non-streamed answers to; 0 = off.
    body_bytes: AtomicU64,
    pub limiter: RateLimiter,
}

/// The settings as read at the start of one request.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub latency: Duration,
    pub ttft: Duration,
    pub tokens_per_sec: f64,
    pub error_rate: f64,
    pub status: Option<u16>,
    pub stream_fault: StreamFault,
    pub retry_after_s: Option<u64>,
    pub body_bytes: u64,
    /// `echo_key_event`: the error event to send mid-stream, echoing this request's credentials.
    pub echo_event: Option<bytes::Bytes>,
}

impl Settings {
    pub fn new(cfg: &MockConfig) -> Self {
        Settings {
            latency_ms: AtomicU64::new(cfg.latency_ms),
            ttft_ms: AtomicU64::new(cfg.ttft_ms),
            tokens_per_sec: AtomicU64::new(sanitize_rate(cfg.tokens_per_sec).to_bits()),
            error_rate: AtomicU64::new(sanitize_rate(cfg.error_rate).min(1.0).to_bits()),
            healthy: AtomicBool::new(true),
            status: AtomicU32::new(0),
            stream_fault: FaultSetting::new(cfg.stream_fault),
            retry_after_s: AtomicU64::new(0),
            body_bytes: AtomicU64::new(cfg.body_bytes),
            limiter: RateLimiter::new(cfg.rate_limit_rps.map(sanitize_rate)),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let status = self.status.load(Ordering::Relaxed);
        Snapshot {
            latency: Duration::from_millis(self.latency_ms.load(Ordering::Relaxed)),
            ttft: Duration::from_millis(self.ttft_ms.load(Ordering::Relaxed)),
            tokens_per_sec: f64::from_bits(self.tokens_per_sec.load(Ordering::Relaxed)),
            error_rate: f64::from_bits(self.error_rate.load(Ordering::Relaxed)),
            status: u16::try_from(status).ok().filter(|s| *s != 0),
            stream_fault: self.stream_fault.get(),
            retry_after_s: Some(self.retry_after_s.load(Ordering::Relaxed)).filter(|s| *s != 0),
            body_bytes: self.body_bytes.load(Ordering::Relaxed),
            echo_event: None,
        }
    }

    pub fn stream_fault(&self) -> StreamFault {
        self.stream_fault.get()
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn to_json(&self, name: &str) -> Value {
        let s = self.snapshot();
        json!({
            "name": name,
            "latency_ms": s.latency.as_millis() as u64,
            "ttft_ms": s.ttft.as_millis() as u64,
            "tokens_per_sec": s.tokens_per_sec,
            "error_rate": s.error_rate,
            "rate_limit_rps": self.limiter.rps(),
            "healthy": self.healthy(),
            "status": s.status,
            "stream_fault": s.stream_fault.as_str(),
            "retry_after_s": s.retry_after_s,
            "body_bytes": s.body_bytes,
        })
    }
}

/// NaN and negatives become 0.
fn sanitize_rate(v: f64) -> f64 {
    if v.is_nan() || v < 0.0 { 0.0 } else { v }
}

/// Lock-free token bucket (GCRA form): rate `rps`, burst `max(1, rps)`.
pub(crate) struct RateLimiter {
    /// Requests per second as f64 bits; NaN = unlimited; 0 = reject everything.
    rps: AtomicU64,
    /// Theoretical arrival time, in nanoseconds since `epoch`.
    tat: AtomicU64,
    epoch: Instant,
}

impl RateLimiter {
    fn new(rps: Option<f64>) -> Self {
        RateLimiter {
            rps: AtomicU64::new(rps.unwrap_or(f64::NAN).to_bits()),
            tat: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn rps(&self) -> Option<f64> {
        let rps = f64::from_bits(self.rps.load(Ordering::Relaxed));
        (!rps.is_nan()).then_some(rps)
    }

    fn set(&self, rps: Option<f64>) {
        self.rps
            .store(rps.unwrap_or(f64::NAN).to_bits(), Ordering::Relaxed);
        self.tat.store(0, Ordering::Relaxed);
    }

    /// Take one token, or say how long until one is available.
    pub fn check(&self) -> Result<(), Duration> {
        let Some(rps) = self.rps() else {
            return Ok(());
        };
        if rps <= 0.0 {
            return Err(Duration::from_secs(1));
        }
        let interval = (1e9 / rps).max(1.0) as u64;
        let tolerance = ((rps.max(1.0) - 1.0) * interval as f64) as u64;
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > tolerance {
                return Err(Duration::from_nanos(start - tolerance - now));
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

/// `Retry-After` value: whole seconds, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// `GET /health`.
pub(crate) fn health(state: &State) -> Response<MockBody> {
    if state.settings.healthy() {
        json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(br#"{"status":"unhealthy"}"#),
        )
    }
}

/// `GET /_mock/stats`.
pub(crate) fn stats(state: &State) -> Response<MockBody> {
    json_value(StatusCode::OK, &state.stats.to_json(&state.cfg.name))
}

/// `POST /_mock/reset`.
pub(crate) fn reset(state: &State) -> Response<MockBody> {
    state.stats.reset();
    json_value(StatusCode::OK, &state.stats.to_json(&state.cfg.name))
}

/// `GET /_mock/control`: the current settings.
pub(crate) fn settings(state: &State) -> Response<MockBody> {
    json_value(StatusCode::OK, &state.settings.to_json(&state.cfg.name))
}

/// `POST /_mock/control`: apply any subset of the settings, answer the new settings.
pub(crate) fn control(state: &State, body: &[u8]) -> Response<MockBody> {
    let map: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) => {
            let msg = format!("control body must be a JSON object: {e}");
            return error(state.cfg.protocol, StatusCode::BAD_REQUEST, &msg);
        }
    };
    let changes = match parse_changes(&map) {
        Ok(c) => c,
        Err(msg) => return error(state.cfg.protocol, StatusCode::BAD_REQUEST, &msg),
    };
    let s = &state.settings;
    for change in changes {
        match change {
            Change::Latency(v) => s.latency_ms.store(v, Ordering::Relaxed),
            Change::Ttft(v) => s.ttft_ms.store(v, Ordering::Relaxed),
            Change::TokensPerSec(v) => s.tokens_per_sec.store(v.to_bits(), Ordering::Relaxed),
            Change::ErrorRate(v) => s.error_rate.store(v.to_bits(), Ordering::Relaxed),
            Change::RateLimit(v) => s.limiter.set(v),
            Change::Healthy(v) => s.healthy.store(v, Ordering::Relaxed),
            Change::Status(v) => s.status.store(v.map_or(0, u32::from), Ordering::Relaxed),
            Change::StreamFault(f) => s.stream_fault.set(f),
            Change::RetryAfter(v) => s.retry_after_s.store(v.unwrap_or(0), Ordering::Relaxed),
            Change::BodyBytes(v) => s.body_bytes.store(v, Ordering::Relaxed),
        }
    }
    tracing::debug!(mock = %state.cfg.name, settings = %s.to_json(&state.cfg.name), "mock settings changed");
    settings(state)
}

enum Change {
    Latency(u64),
    Ttft(u64),
    TokensPerSec(f64),
    ErrorRate(f64),
    RateLimit(Option<f64>),
    Healthy(bool),
    Status(Option<u16>),
    StreamFault(StreamFault),
    RetryAfter(Option<u64>),
    BodyBytes(u64),
}

/// Validate every key before applying any, so a bad request changes nothing.
fn parse_changes(map: &Map<String, Value>) -> Result<Vec<Change>, String> {
    let mut out = Vec::with_capacity(map.len());
    for (key, v) in map {
        let bad = || format!("invalid value for `{key}`: {v}");
        let non_neg = || v.as_f64().filter(|x| *x >= 0.0).ok_or_else(bad);
        let change = match key.as_str() {
            "latency_ms" => Change::Latency(v.as_u64().ok_or_else(bad)?),
            "ttft_ms" => Change::Ttft(v.as_u64().ok_or_else(bad)?),
            "tokens_per_sec" => Change::TokensPerSec(non_neg()?),
            "error_rate" => Change::ErrorRate(
                v.as_f64()
                    .filter(|x| (0.0..=1.0).contains(x))
                    .ok_or_else(bad)?,
            ),
            "rate_limit_rps" if v.is_null() => Change::RateLimit(None),
            "rate_limit_rps" => Change::RateLimit(Some(non_neg()?)),
            "healthy" => Change::Healthy(v.as_bool().ok_or_else(bad)?),
            "status" if v.is_null() => Change::Status(None),
            "status" => {
                let code = v
                    .as_u64()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(bad)?;
                Change::Status(Some(code as u16))
            }
            "retry_after_s" if v.is_null() => Change::RetryAfter(None),
            "retry_after_s" => Change::RetryAfter(Some(v.as_u64().ok_or_else(bad)?)),
            "body_bytes" => Change::BodyBytes(v.as_u64().ok_or_else(bad)?),
            "stream_fault" => {
                Change::StreamFault(v.as_str().and_then(StreamFault::parse).ok_or_else(bad)?)
            }
            _ => return Err(format!("unknown control key `{key}`")),
        };
        out.push(change);
    }
    Ok(out)
}

fn json_value(status: StatusCode, v: &Value) -> Response<MockBody> {
    json_response(status, Bytes::from(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_burst_then_rejects() {
        let l = RateLimiter::new(Some(3.0));
        for _ in 0..3 {
            assert!(l.check().is_ok());
        }
        let wait = l.check().unwrap_err();
        assert!(wait <= Duration::from_millis(334), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
    }

    #[test]
    fn limiter_off_and_zero() {
        assert!(RateLimiter::new(None).check().is_ok());
        assert!(RateLimiter::new(Some(0.0)).check().is_err());
        let slow = RateLimiter::new(Some(0.1));
        assert!(slow.check().is_ok());
        assert_eq!(retry_after_secs(slow.check().unwrap_err()), 10);
    }
}
