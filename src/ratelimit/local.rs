//! The local limiter: per tenant, a governor GCRA bucket for requests (burst, then a sustained rate) and
//! a token bucket for LLM tokens. Tokens need refunds and debts after the response (reserve the
//! estimate, reconcile with actual usage), which governor cannot do, so that bucket is our own.

use super::{Decision, LimitFuture, LimitRequest, RateLimiter, ReconcileFuture};
use crate::config::TenantConfig;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

type Bucket = Gcra<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A tenant's quota, possibly scaled (a cluster node in fallback holds 1/N of the global rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quotas {
    pub requests_per_minute: Option<u32>,
    pub burst: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

impl Quotas {
    pub fn of(t: &TenantConfig) -> Quotas {
        Quotas {
            requests_per_minute: t.limits.requests_per_minute,
            burst: t.limits.burst,
            tokens_per_minute: t.limits.tokens_per_minute,
        }
    }

    /// This quota divided among `n` nodes (at least 1 of everything).
    pub fn divided(self, n: usize) -> Quotas {
        let n = n.max(1);
        Quotas {
            requests_per_minute: self
                .requests_per_minute
                .map(|r| (r as usize).div_ceil(n).max(1) as u32),
            burst: self.burst.map(|b| (b as usize).div_ceil(n).max(1) as u32),
            tokens_per_minute: self.tokens_per_minute.map(|t| t.div_ceil(n as u64).max(1)),
        }
    }
}

struct RequestBucket {
    rpm: u32,
    burst: u32,
    bucket: Bucket,
}

/// Tokens, refilled continuously at `rate` per second up to `capacity`; may go negative (debt).
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn per_minute(tpm: u64) -> TokenBucket {
        TokenBucket {
            capacity: tpm as f64,
            rate: tpm as f64 / 60.0,
            state: Mutex::new((tpm as f64, Instant::now())),
        }
    }

    fn refill(&self, s: &mut (f64, Instant), now: Instant) {
        let dt = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + dt * self.rate).min(self.capacity);
        s.1 = now;
    }

    /// Take `cost` (clamped to the capacity, so a large request can pass when the bucket is full).
    /// `Err(wait)` when not enough is there; nothing is taken then.
    pub fn take(&self, cost: u64, now: Instant) -> Result<f64, Duration> {
        let mut s = self.state.lock().expect("bucket lock");
        self.refill(&mut s, now);
        let cost = (cost as f64).min(self.capacity);
        if s.0 >= cost {
            s.0 -= cost;
            Ok(s.0)
        } else {
            Err(Duration::from_secs_f64((cost - s.0) / self.rate))
        }
    }

    /// Give back (positive) or charge (negative) tokens after the fact.
    pub fn adjust(&self, delta: f64, now: Instant) {
        let mut s = self.state.lock().expect("bucket lock");
        self.refill(&mut s, now);
        s.0 = (s.0 + delta).min(self.capacity);
    }

    fn until_full(&self, level: f64) -> Duration {
        Duration::from_secs_f64(((self.capacity - level).max(0.0)) / self.rate)
    }
}

struct TenantBuckets {
    requests: Option<RequestBucket>,
    tokens: Option<TokenBucket>,
}

/// Buckets built from config; tenants without limits are not limited.
pub struct LocalLimiter {
    buckets: HashMap<String, TenantBuckets>,
    clock: DefaultClock,
}

impl LocalLimiter {
    pub fn new<'a>(tenants: impl IntoIterator<Item = &'a TenantConfig>) -> LocalLimiter {
        Self::with_quotas(tenants.into_iter().map(|t| (t.id.clone(), Quotas::of(t))))
    }

    /// Build from explicit quotas (e.g. each divided by the live node count).
    pub fn with_quotas(quotas: impl IntoIterator<Item = (String, Quotas)>) -> LocalLimiter {
        let mut buckets = HashMap::new();
        for (id, q) in quotas {
            let requests = q.requests_per_minute.map(|rpm| {
                let burst = q.burst.unwrap_or(rpm.div_ceil(60).max(1));
                let quota = Quota::per_minute(NonZeroU32::new(rpm).expect("validated above 0"))
                    .allow_burst(NonZeroU32::new(burst).expect("validated above 0"));
                RequestBucket {
                    rpm,
                    burst,
                    bucket: Gcra::direct(quota).with_middleware::<StateInformationMiddleware>(),
                }
            });
            let tokens = q.tokens_per_minute.map(TokenBucket::per_minute);
            if requests.is_some() || tokens.is_some() {
                buckets.insert(id, TenantBuckets { requests, tokens });
            }
        }
        LocalLimiter {
            buckets,
            clock: DefaultClock::default(),
        }
    }

    pub fn decide(&self, req: LimitRequest<'_>) -> Decision {
        let Some(tb) = self.buckets.get(req.tenant) else {
            return Decision::unlimited();
        };
        let now = Instant::now();
        let mut d = Decision {
            allowed: true,
            ..Decision::default()
        };
        // Tokens first: a refusal there must not consume a request slot.
        if let Some(tok) = &tb.tokens
            && req.tokens > 0
        {
            d.tokens_limit = Some(tok.capacity as u64);
            match tok.take(req.tokens, now) {
                Ok(level) => {
                    d.tokens_remaining = Some(level.max(0.0) as u64);
                    d.tokens_reset = tok.until_full(level);
                }
                Err(wait) => {
                    d.allowed = false;
                    d.tokens_remaining = Some(0);
                    d.tokens_reset = tok.until_full(0.0);
                    d.retry_after = Some(wait);
                    self.fill_requests(tb, &mut d, false);
                    return d;
                }
            }
        }
        if !self.fill_requests(tb, &mut d, true) {
            // Refused on requests: give the tokens back.
            if let Some(tok) = &tb.tokens
                && req.tokens > 0
            {
                tok.adjust((req.tokens as f64).min(tok.capacity), now);
            }
        }
        d
    }

    /// Take one request (when `take`), filling the request fields of `d`; false when refused.
    fn fill_requests(&self, tb: &TenantBuckets, d: &mut Decision, take: bool) -> bool {
        let Some(rb) = &tb.requests else { return true };
        let per_request = Duration::from_secs_f64(60.0 / rb.rpm as f64);
        d.limit = Some(rb.rpm);
        if !take {
            return true;
        }
        match rb.bucket.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                d.remaining = Some(remaining);
                d.reset = per_request * (rb.burst - remaining.min(rb.burst));
                true
            }
            Err(not_until) => {
                d.allowed = false;
                d.remaining = Some(0);
                d.reset = per_request * rb.burst;
                d.retry_after = Some(not_until.wait_time_from(self.clock.now()));
                false
            }
        }
    }

    pub fn adjust_tokens(&self, tenant: &str, reserved: u64, actual: u64) {
        if let Some(tok) = self.buckets.get(tenant).and_then(|b| b.tokens.as_ref()) {
            let reserved = (reserved as f64).min(tok.capacity);
            tok.adjust(reserved - actual as f64, Instant::now());
        }
    }
}

impl RateLimiter for LocalLimiter {
    fn check<'a>(&'a self, req: LimitRequest<'a>) -> LimitFuture<'a> {
        let d = self.decide(req);
        Box::pin(std::future::ready(d))
    }

    fn reconcile<'a>(&'a self, tenant: &'a str, reserved: u64, actual: u64) -> ReconcileFuture<'a> {
        self.adjust_tokens(tenant, reserved, actual);
        Box::pin(std::future::ready(()))
    }

    fn mode(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(yaml_limits: &str) -> TenantConfig {
        serde_saphyr::from_str(&format!("id: t\nkeys: [sk-t1]\nlimits: {yaml_limits}")).unwrap()
    }

    fn req(tokens: u64) -> LimitRequest<'static> {
        LimitRequest {
            tenant: "t",
            requests: 1,
            tokens,
        }
    }

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let t = tenant("{ requests_per_minute: 60, burst: 3 }");
        let l = LocalLimiter::new([&t]);
        let rem: Vec<_> = (0..3).map(|_| l.decide(req(0))).collect();
        assert!(rem.iter().all(|d| d.allowed));
        assert_eq!(rem[2].remaining, Some(0));
        let d = l.decide(req(0));
        assert!(!d.allowed);
        let wait = d.retry_after.unwrap();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn unknown_or_unlimited_tenant_passes() {
        let l = LocalLimiter::new([]);
        assert!(
            l.decide(LimitRequest {
                tenant: "x",
                requests: 1,
                tokens: 0
            })
            .allowed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_reserve_then_reconcile_refunds_and_charges() {
        let t = tenant("{ tokens_per_minute: 600 }");
        let l = LocalLimiter::new([&t]);
        // Reserve 500 of 600.
        let d = l.decide(req(500));
        assert!(d.allowed);
        assert_eq!(d.tokens_remaining, Some(100));
        // 200 more do not fit: refused, with the wait for 100 tokens at 10/s.
        let d = l.decide(req(200));
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(10)));
        // Only 50 were used: 450 come back.
        l.adjust_tokens("t", 500, 50);
        assert!(l.decide(req(200)).allowed);
        // Used more than reserved: the overage is charged, the bucket goes into debt.
        l.adjust_tokens("t", 10, 1000);
        let d = l.decide(req(10));
        assert!(!d.allowed);
        // Time pays the debt back and refills it.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(l.decide(req(10)).allowed);
    }

    #[test]
    fn a_token_refusal_does_not_use_a_request_slot() {
        let t = tenant("{ requests_per_minute: 60, burst: 2, tokens_per_minute: 100 }");
        let l = LocalLimiter::new([&t]);
        assert!(l.decide(req(100)).allowed);
        let d = l.decide(req(50));
        assert!(!d.allowed);
        assert_eq!(d.tokens_remaining, Some(0));
        // The refused request took no request slot: one is still there.
        assert!(l.decide(req(0)).allowed);
        assert!(!l.decide(req(0)).allowed);
    }

    #[test]
    fn quotas_divide_among_nodes() {
        let q = Quotas {
            requests_per_minute: Some(600),
            burst: Some(30),
            tokens_per_minute: Some(10_000),
        };
        assert_eq!(
            q.divided(3),
            Quotas {
                requests_per_minute: Some(200),
                burst: Some(10),
                tokens_per_minute: Some(3334)
            }
        );
        assert_eq!(q.divided(0), q);
    }
}
