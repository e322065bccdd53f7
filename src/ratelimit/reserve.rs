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
    /// The local fallback answering for `plan`'s tenant.
    pub(super) fn local(&self, plan: &Plan) -> Arc<LocalLimiter> {
        self.groups[plan.group].fallback.get()
    }

    /// The tenant's plan under the current config (None: no limits).
    pub(super) fn plan(&self, tenant: &str) -> Option<Arc<Plan>> {
        self.plans.load().get(tenant).cloned()
    }

    pub(super) async fn check(&self, req: LimitRequest<'_>) -> Decision {
        let Some(plan) = self.plan(req.tenant) else {
            return Decision::unlimited();
        };
        let tokens = if plan.tpm > 0 { req.tokens } else { 0 };
        if plan.rpm == 0 && tokens == 0 {
            return Decision::unlimited();
        }
        let breaker = &self.groups[plan.group].breaker;
        if breaker.is_open() && !self.wait_settled(plan.group).await {
            return self.local(&plan).decide(req);
        }
        let clamped = tokens.min(plan.tpm);
        let now = Instant::now();
        plan.asked_with(req.max_wait);
        // Request-only limits may be leased: several request tokens per Redis call.
        let lease = if tokens == 0 && req.requests == 1 {
            lease_size(
                plan.rpm,
                plan.burst,
                self.groups[plan.group].fallback.divisor(),
            )
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
        // A waiting request of a tenant at its limit calls Redis only when no other call of this
        // node is out for the tenant (it waits at most twice the call timeout, then calls anyway);
        // what that call answered is in the cache by the time the turn comes.
        let turn = if !req.max_wait.is_zero() && plan.contended() {
            tokio::time::timeout(self.timeout * 2, plan.flight.lock())
                .await
                .ok()
        } else {
            None
        };
        let now = if turn.is_some() { Instant::now() } else { now };
        // A cached refusal stands only when even the request's wait budget would not reach the slot.
        if let Some(hit) = self.cache.check(req.tenant, req.requests, clamped, now)
            && hit.wait > req.max_wait
        {
            Metrics::limiter_cache_hit();
            return plan.cached(hit, tokens > 0);
        }
        let extra = lease.saturating_sub(1);
        let Some((d, leased)) = self.call_check(&plan, req, tokens, extra).await else {
            return self.local(&plan).decide(req);
        };
        if leased > 0 {
            plan.lease.grant(leased + 1, Instant::now());
        }
        d
    }

    /// Until the first connection attempt is over, wait for it (within the connect budget). True
    /// when breaker group `group` is then closed (global limits).
    pub(super) async fn wait_settled(&self, group: usize) -> bool {
        if *self.settled.borrow() {
            return false;
        }
        let mut rx = self.settled.subscribe();
        let _ = tokio::time::timeout(self.connect_timeout, rx.wait_for(|s| *s)).await;
        !self.groups[group].breaker.is_open()
    }

    /// One script call taking one request and `tokens` (booking within `req.max_wait`), and up to
    /// `extra` more requests as a lease. None when the call failed (answer from the fallback).
    async fn call_check(
        &self,
        plan: &Plan,
        req: LimitRequest<'_>,
        tokens: u64,
        extra: u32,
    ) -> Option<(Decision, u32)> {
        let clamped = tokens.min(plan.tpm);
        let mut inv = self.check_script.prepare_invoke();
        inv.key(&plan.keys[0])
            .key(&plan.keys[1])
            .arg(plan.rpm)
            .arg(plan.burst)
            .arg(req.requests)
            .arg(plan.tpm)
            .arg(tokens)
            .arg(req.max_wait.as_millis() as u64)
            .arg(extra);
        let reply = match self.call::<Vec<i64>>(plan, &inv).await {
            Ok(v) if v.len() >= 12 => v,
            Ok(v) => {
                self.failed(&self.groups[plan.group], CallError::BadReply(v.len()));
                return None;
            }
            Err(_) => return None,
        };
        plan.record(&reply, tokens > 0);
        let d = plan.decision(&reply, tokens > 0);
        // Counted from the reply's arrival, so an entry never expires before Redis would admit.
        let ms = |x: i64| Duration::from_millis(x.max(0) as u64);
        let step = plan.step(clamped);
        let others = || self.groups[plan.group].fallback.divisor().saturating_sub(1);
        if !d.allowed {
            let (mut rw, mut tw) = (ms(reply[6]), ms(reply[7]));
            if let Some(step) = step
                && !req.max_wait.is_zero()
            {
                // Waiting requests book slots as they come within reach, on other nodes too: this
                // node's chance is later (a request that does not wait races for the very slot).
                plan.contention.assume(others());
                if !rw.is_zero() {
                    rw = plan.contention.refused(rw, step);
                } else if !tw.is_zero() {
                    tw = plan.contention.refused(tw, step);
                }
            }
            self.cache
                .refused(req.tenant, Instant::now(), rw, clamped, tw);
        } else if let Some(step) = step
            && !d.wait.is_zero()
        {
            // Booked: this node's next slot is one interval behind this one per node booking in
            // turn; until its wait fits a request's budget, the request is refused without a call.
            let now = Instant::now();
            plan.contention.assume(others());
            let next = plan.contention.booked(now, d.wait, step);
            self.cache.refused(req.tenant, now, next, 0, Duration::ZERO);
        }
        Some((d, reply[9].max(0) as u32))
    }

    /// A booked request gave up: its request and tokens go back to the bucket they came from.
    pub(super) async fn release(&self, tenant: &str, requests: u32, tokens: u64) {
        let Some(plan) = self.plan(tenant) else {
            return;
        };
        let tokens = if plan.tpm > 0 {
            tokens.min(plan.tpm)
        } else {
            0
        };
        if self.groups[plan.group].breaker.is_open() {
            self.local(&plan).give_back(tenant, requests, tokens);
            return;
        }
        let inv = plan.adjust(
            &self.adjust_script,
            (requests as i64, tokens as i64),
            (None, None),
        );
        if self.call::<i64>(&plan, &inv).await.is_err() {
            self.local(&plan).give_back(tenant, requests, tokens);
        }
    }

    pub(super) async fn reconcile(&self, tenant: &str, reserved: u64, actual: u64) {
        let Some(plan) = self.plan(tenant).filter(|p| p.tpm > 0) else {
            return;
        };
        let settled = reserved.min(plan.tpm);
        if settled == actual {
            return;
        }
        if actual < settled {
            self.cache.tokens_returned(tenant);
        }
        if self.groups[plan.group].breaker.is_open() {
            self.local(&plan).adjust_tokens(tenant, reserved, actual);
            return;
        }
        let mut inv = self.reconcile_script.prepare_invoke();
        inv.key(&plan.keys[1])
            .arg(plan.tpm)
            .arg(reserved)
            .arg(actual);
        if self.call::<i64>(&plan, &inv).await.is_err() {
            // Lost for the global bucket; at least the fallback bucket knows.
            self.local(&plan).adjust_tokens(tenant, reserved, actual);
        }
    }
}
