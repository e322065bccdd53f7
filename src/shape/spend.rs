//! Shape's side of spend budgets: the reservation an admitted request holds ([`HeldBudget`]), settled
//! with the actual cost when its response ends, or given back whole if it never got one (no
//! backend answered, or the request was refused by a later limit).

use crate::ratelimit::{BudgetHold, RateLimiter};
use std::future::Future;
use std::sync::Arc;

/// What a response actually used: its tokens, and their cost at the answering backend's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    pub tokens: u64,
    /// Micro-dollars.
    pub cost: u64,
}

/// An admitted request's budget reservation. Dropped unsettled, it is given back.
pub struct HeldBudget {
    limiter: Arc<dyn RateLimiter>,
    hold: Option<BudgetHold>,
}

impl HeldBudget {
    pub fn new(limiter: Arc<dyn RateLimiter>, hold: BudgetHold) -> HeldBudget {
        HeldBudget {
            limiter,
            hold: Some(hold),
        }
    }

    /// Settle with the actual cost (None: unknown, the reservation stands as the charge).
    pub fn settle(mut self, actual: Option<u64>) {
        let Some(hold) = self.hold.take() else { return };
        if let Some(actual) = actual
            && actual != hold.reserved
        {
            run(self.limiter.clone(), hold, actual);
        }
    }
}

impl Drop for HeldBudget {
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take() {
            run(self.limiter.clone(), hold, 0);
        }
    }
}

/// A local limiter settles at once (before the client can send its next request); a Redis call goes
/// on in its own task.
fn run(limiter: Arc<dyn RateLimiter>, hold: BudgetHold, actual: u64) {
    let mut settle = Box::pin(async move { limiter.settle_budget(&hold, actual).await });
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if settle.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(settle);
    }
}
