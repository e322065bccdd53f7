//! The request path in global mode: check-and-take (with request leases and the over-limit cache in
//! front of Redis) and the token reconcile after the response. Any failed call answers from the
//! local fallback.

use super::cluster_limiter::Inner;
use super::lease::lease_size;
use super::plan::Plan;
use super::script::CallError;
use super::{Decision, LimitRequest, LocalLimiter};
use crate::observe::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl Inner {
    pub(super) fn local(&self) -> Arc<LocalLimiter> {
        self.fallback.get()
    }

    pub(super) async fn check(&self, req: LimitRequest<'_>) -> Decision {
        let Some(plan) = self.plans.get(req.tenant) else {
            return Decision::unlimited();
        };
        let tokens = if plan.tpm > 0 { req.tokens } else { 0 };
        if plan.rpm == 0 && tokens == 0 {
            return Decision::unlimited();
        }
        if self.breaker.is_open() {
            return self.local().decide(req);
        }
        let clamped = tokens.min(plan.tpm);
        let now = Instant::now();
        // Request-only limits may be leased: several request tokens per Redis call.
        let lease = if tokens == 0 && req.requests == 1 {
            lease_size(plan.rpm, plan.burst, self.fallback.divisor())
        } else {
            0
        };
        if lease > 1 && plan.lease.take(now) {
            Metrics::limiter_lease_hit();
            return Decision {
                allowed: true,
                limit: Some(plan.rpm),
                ..Decision::default()
            };
        }
        if let Some(hit) = self.cache.check(req.tenant, req.requests, clamped, now) {
            Metrics::limiter_cache_hit();
            return plan.cached(hit, tokens > 0);
        }
        if lease > 1 {
            let d = self.call_check(plan, req, lease, 0).await;
            if d.allowed {
                plan.lease.grant(lease, Instant::now());
                return d;
            }
            // Fewer than a lease left: ask for exactly one.
            plan.lease.clear();
        }
        self.call_check(plan, req, req.requests, tokens).await
    }

    /// One script call taking `requests` and `tokens`; a failure answers from the local fallback.
    async fn call_check(
        &self,
        plan: &Plan,
        req: LimitRequest<'_>,
        requests: u32,
        tokens: u64,
    ) -> Decision {
        let clamped = tokens.min(plan.tpm);
        let mut inv = self.check_script.prepare_invoke();
        inv.key(&plan.keys[0])
            .key(&plan.keys[1])
            .arg(plan.rpm)
            .arg(plan.burst)
            .arg(requests)
            .arg(plan.tpm)
            .arg(tokens);
        let reply = match self.call::<Vec<i64>>(&inv).await {
            Ok(v) if v.len() >= 8 => v,
            Ok(v) => {
                self.failed(CallError::BadReply(v.len()));
                return self.local().decide(req);
            }
            Err(_) => return self.local().decide(req),
        };
        let d = plan.decision(&reply, tokens > 0);
        if !d.allowed {
            // Counted from the reply's arrival, so the entry never expires before Redis would
            // admit the request.
            let ms = |x: i64| Duration::from_millis(x.max(0) as u64);
            let (rw, tw) = (ms(reply[6]), ms(reply[7]));
            self.cache
                .refused(req.tenant, Instant::now(), rw, clamped, tw);
        }
        d
    }

    pub(super) async fn reconcile(&self, tenant: &str, reserved: u64, actual: u64) {
        let Some(plan) = self.plans.get(tenant).filter(|p| p.tpm > 0) else {
            return;
        };
        let settled = reserved.min(plan.tpm);
        if settled == actual {
            return;
        }
        if actual < settled {
            self.cache.tokens_returned(tenant);
        }
        if self.breaker.is_open() {
            self.local().adjust_tokens(tenant, reserved, actual);
            return;
        }
        let mut inv = self.reconcile_script.prepare_invoke();
        inv.key(&plan.keys[1])
            .arg(plan.tpm)
            .arg(reserved)
            .arg(actual);
        if self.call::<i64>(&inv).await.is_err() {
            // Lost for the global bucket; at least the fallback bucket knows.
            self.local().adjust_tokens(tenant, reserved, actual);
        }
    }
}
