//! The local limiter: one governor GCRA bucket per tenant (burst, then a sustained rate).

use super::{Decision, LimitFuture, LimitRequest, RateLimiter};
use crate::config::TenantConfig;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

type Bucket = Gcra<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct TenantBucket {
    rpm: u32,
    burst: u32,
    bucket: Bucket,
}

/// Buckets built once from config; tenants without a limit are not limited.
pub struct LocalLimiter {
    buckets: HashMap<String, TenantBucket>,
    clock: DefaultClock,
}

impl LocalLimiter {
    pub fn new<'a>(tenants: impl IntoIterator<Item = &'a TenantConfig>) -> LocalLimiter {
        let mut buckets = HashMap::new();
        for t in tenants {
            let Some(rpm) = t.limits.requests_per_minute else {
                continue;
            };
            let burst = t.limits.burst.unwrap_or(rpm.div_ceil(60).max(1));
            let quota = Quota::per_minute(NonZeroU32::new(rpm).expect("validated above 0"))
                .allow_burst(NonZeroU32::new(burst).expect("validated above 0"));
            let bucket = Gcra::direct(quota).with_middleware::<StateInformationMiddleware>();
            buckets.insert(t.id.clone(), TenantBucket { rpm, burst, bucket });
        }
        LocalLimiter {
            buckets,
            clock: DefaultClock::default(),
        }
    }

    fn decide(&self, req: LimitRequest<'_>) -> Decision {
        let Some(tb) = self.buckets.get(req.tenant) else {
            return Decision::unlimited();
        };
        let per_request = Duration::from_secs_f64(60.0 / tb.rpm as f64);
        let n = NonZeroU32::new(req.requests.max(1)).expect("at least 1");
        match tb.bucket.check_n(n) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: Some(tb.rpm),
                    remaining: Some(remaining),
                    reset: per_request * (tb.burst - remaining.min(tb.burst)),
                    retry_after: None,
                }
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    limit: Some(tb.rpm),
                    remaining: Some(0),
                    reset: per_request * tb.burst,
                    retry_after: Some(wait),
                }
            }
            // More than the burst at once can never pass.
            Err(_) => Decision {
                allowed: false,
                limit: Some(tb.rpm),
                remaining: Some(0),
                reset: per_request * tb.burst,
                retry_after: Some(per_request * tb.burst),
            },
        }
    }
}

impl RateLimiter for LocalLimiter {
    fn check<'a>(&'a self, req: LimitRequest<'a>) -> LimitFuture<'a> {
        let d = self.decide(req);
        Box::pin(std::future::ready(d))
    }

    fn mode(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(rpm: u32, burst: u32) -> TenantConfig {
        serde_saphyr::from_str(&format!(
            "id: t\nkeys: [sk-t1]\nlimits: {{ requests_per_minute: {rpm}, burst: {burst} }}"
        ))
        .unwrap()
    }

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let t = tenant(60, 3);
        let l = LocalLimiter::new([&t]);
        let req = LimitRequest {
            tenant: "t",
            requests: 1,
            tokens: 0,
        };
        let rem: Vec<_> = (0..3).map(|_| l.decide(req)).collect();
        assert!(rem.iter().all(|d| d.allowed));
        assert_eq!(rem[2].remaining, Some(0));
        let d = l.decide(req);
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
}
