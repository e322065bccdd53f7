//! Runtime settings (atomics), the token-bucket rate limiter, and the `/_mock/*` endpoints.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::MockConfig;
use super::body::{MockBody, error, json_response};
use super::fault::{FaultSetting, StreamFault};
use super::state::{State, unix_now_ms};
use crate::protocol::{Protocol, ratelimit, ratelimit::Limit};

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
            limiter: RateLimiter::new(cfg),
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

/// A token bucket: `capacity` units, refilled continuously at `rate` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: f64,
    capacity: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: Option<f64>) -> Bucket {
        let capacity = burst.filter(|b| *b >= 1.0).unwrap_or(rate.max(1.0)).floor();
        Bucket {
            rate,
            capacity,
            // Rate 0 rejects everything.
            level: if rate > 0.0 { capacity } else { 0.0 },
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.rate).min(self.capacity);
        self.last = now;
    }

    /// How long until `n` units are there (`None`: never, at rate 0).
    fn wait_for(&self, n: f64) -> Option<Duration> {
        if self.level >= n {
            return Some(Duration::ZERO);
        }
        (self.rate > 0.0 && n <= self.capacity)
            .then(|| Duration::from_secs_f64((n - self.level) / self.rate))
    }

    /// What the provider's headers say of it.
    fn report(&self) -> Limit {
        let missing = self.capacity - self.level;
        let reset_ms = if self.rate <= 0.0 {
            1000
        } else if missing <= 0.0 {
            0
        } else {
            (missing / self.rate * 1000.0).ceil() as u64
        };
        Limit {
            limit: Some(self.capacity as u64),
            remaining: self.level.floor() as u64,
            reset_ms,
        }
    }
}

/// The simulated provider's limits: a bucket of requests (`rate_limit_rps`, `rate_limit_burst`) and
/// one of tokens (`rate_limit_tps`, `rate_limit_token_burst`), both optional. A request takes one
/// request and its estimated tokens (input by body size plus `max_tokens`) from both, or nothing.
pub(crate) struct RateLimiter {
    requests: Mutex<Option<Bucket>>,
    tokens: Mutex<Option<Bucket>>,
}

/// The limits' state after a request, as the rate-limit headers report it.
#[derive(Debug, Default)]
pub(crate) struct Quota {
    requests: Option<Limit>,
    tokens: Option<Limit>,
}

impl Quota {
    /// Write both windows in `protocol`'s family (Anthropic's input and output token windows
    /// repeat the one token bucket).
    pub fn write(&self, protocol: Protocol, h: &mut HeaderMap) {
        let openai = protocol == Protocol::Openai;
        let now_ms = unix_now_ms();
        if let Some(l) = &self.requests {
            ratelimit::write(h, openai, 0, l, now_ms);
        }
        if let Some(l) = &self.tokens {
            for i in 1..ratelimit::WINDOWS {
                ratelimit::write(h, openai, i, l, now_ms);
            }
        }
    }
}

impl RateLimiter {
    fn new(cfg: &MockConfig) -> Self {
        let bucket = |rate: Option<f64>, burst| rate.map(|r| Bucket::new(sanitize_rate(r), burst));
        RateLimiter {
            requests: Mutex::new(bucket(cfg.rate_limit_rps, cfg.rate_limit_burst)),
            tokens: Mutex::new(bucket(cfg.rate_limit_tps, cfg.rate_limit_token_burst)),
        }
    }

    fn rps(&self) -> Option<f64> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|b| b.rate)
    }

    /// A new request limit (`None`: unlimited), its bucket full.
    fn set(&self, rps: Option<f64>, burst: Option<f64>) {
        *self.requests.lock().unwrap_or_else(PoisonError::into_inner) =
            rps.map(|r| Bucket::new(r, burst));
    }

    /// Take one request and `tokens` tokens, or say how long until both are there; either way,
    /// what the headers report.
    pub fn check(&self, tokens: u64) -> Result<Quota, (Quota, Duration)> {
        let now = Instant::now();
        let mut req = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tok = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wait = Duration::ZERO;
        for (b, n) in [(req.as_mut(), 1.0), (tok.as_mut(), tokens as f64)] {
            if let Some(b) = b {
                b.refill(now);
                wait = wait.max(b.wait_for(n).unwrap_or(Duration::from_secs(1)));
            }
        }
        if wait.is_zero() {
            for (b, n) in [(req.as_mut(), 1.0), (tok.as_mut(), tokens as f64)] {
                if let Some(b) = b {
                    b.level -= n;
                }
            }
        }
        let quota = Quota {
            requests: req.map(|b| b.report()),
            tokens: tok.map(|b| b.report()),
        };
        if wait.is_zero() {
            Ok(quota)
        } else {
            Err((quota, wait))
        }
    }

    /// Whether a token limit is set (requests then need their token estimate).
    pub fn counts_tokens(&self) -> bool {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
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
            Change::RateLimit(v, burst) => s.limiter.set(v, burst),
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
    RateLimit(Option<f64>, Option<f64>),
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
            "rate_limit_rps" if v.is_null() => Change::RateLimit(None, None),
            "rate_limit_rps" => {
                let burst = match map.get("rate_limit_burst") {
                    None => None,
                    Some(b) => Some(b.as_f64().filter(|x| *x >= 1.0).ok_or_else(bad)?),
                };
                Change::RateLimit(Some(non_neg()?), burst)
            }
            // Read with `rate_limit_rps`.
            "rate_limit_burst" if map.contains_key("rate_limit_rps") => continue,
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

    fn limiter(rps: Option<f64>, burst: Option<f64>) -> RateLimiter {
        RateLimiter::new(&MockConfig {
            rate_limit_rps: rps,
            rate_limit_burst: burst,
            ..MockConfig::default()
        })
    }

    #[test]
    fn limiter_allows_burst_then_rejects() {
        let l = limiter(Some(3.0), None);
        for left in [2, 1, 0] {
            let q = l.check(0).unwrap();
            assert_eq!(q.requests.unwrap().remaining, left);
        }
        let (q, wait) = l.check(0).unwrap_err();
        assert!(wait <= Duration::from_millis(334), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        let r = q.requests.unwrap();
        assert_eq!((r.limit, r.remaining), (Some(3), 0));
        assert!((900..=1000).contains(&r.reset_ms), "{r:?}");
    }

    #[test]
    fn limiter_off_and_zero() {
        assert!(limiter(None, None).check(0).is_ok());
        let zero = limiter(Some(0.0), None);
        assert_eq!(zero.check(0).unwrap_err().1, Duration::from_secs(1));
        let slow = limiter(Some(0.1), None);
        assert!(slow.check(0).is_ok());
        assert_eq!(retry_after_secs(slow.check(0).unwrap_err().1), 10);
    }

    #[test]
    fn a_bucket_of_sixty_refilled_one_a_second() {
        let l = limiter(Some(1.0), Some(60.0));
        for _ in 0..60 {
            assert!(l.check(0).is_ok());
        }
        let (q, wait) = l.check(0).unwrap_err();
        assert!(wait > Duration::from_millis(900), "{wait:?}");
        let r = q.requests.unwrap();
        assert_eq!((r.limit, r.remaining), (Some(60), 0));
        assert!((59_000..=60_000).contains(&r.reset_ms), "{r:?}");
        let mut h = HeaderMap::new();
        q.write(Protocol::Openai, &mut h);
        assert_eq!(h["x-ratelimit-limit-requests"], "60");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert!(h.get("x-ratelimit-reset-requests").is_some());
    }

    #[test]
    fn tokens_are_limited_too() {
        let mut cfg = MockConfig::new(Protocol::Anthropic, "m");
        cfg.rate_limit_tps = Some(10.0);
        cfg.rate_limit_token_burst = Some(100.0);
        let l = RateLimiter::new(&cfg);
        assert!(l.counts_tokens());
        let q = l.check(70).unwrap();
        assert_eq!(q.tokens.unwrap().remaining, 30);
        assert!(q.requests.is_none());
        let (_, wait) = l.check(70).unwrap_err();
        assert!(wait > Duration::from_secs(3), "{wait:?}");
        let mut h = HeaderMap::new();
        q.write(Protocol::Anthropic, &mut h);
        for w in ["tokens", "input-tokens", "output-tokens"] {
            assert_eq!(h[format!("anthropic-ratelimit-{w}-remaining")], "30");
        }
        assert!(h.get("anthropic-ratelimit-requests-remaining").is_none());
    }
}
