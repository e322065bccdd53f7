//! Shape's one door. A request passes it once: [`Door::admit`] classifies it (priority, client
//! deadline) and takes from its tenant's buckets, waiting for a refill instead of refusing at once
//! when the wait fits its budget; the [`Admitted`] pass it gets back is then the only way to a
//! backend slot ([`Admitted::slot`]): the route's queue (priority, fairness, deadline, CoDel) and the
//! backend's pacing. Deliver asks for a slot without knowing how queues work.

use super::spend::{HeldBudget, Used};
use super::{AdmissionQueue, Pacer, Shed, Ticket, classify, parse_deadline};
use crate::config::{PriceConfig, Priority, ShapingConfig};
use crate::observe::Metrics;
use crate::ratelimit::budget::{cost_micros, period, usd_text};
use crate::ratelimit::{Decision, LimitRequest, RateLimiter};
use http::HeaderMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Output tokens assumed for the token reservation when the client sets no `max_tokens`.
pub const DEFAULT_EST_OUTPUT: u64 = 256;

/// Why the door refused.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("header `{header}`: {reason}")]
    BadDeadline { header: String, reason: String },
    #[error("rate limit exceeded for tenant `{tenant}`")]
    RateLimited { tenant: String, decision: Decision },
    /// The request's estimated cost does not fit what is left of a budget period.
    #[error("{}", over_budget_message(tenant, decision))]
    OverBudget { tenant: String, decision: Decision },
}

/// `budget exceeded for tenant `t`: usd_per_day is 5 USD, 4.99 spent, this request needs up to
/// 0.02; resets at 2026-11-28T00:00:00Z (in 3600 s)`.
fn over_budget_message(tenant: &str, d: &Decision) -> String {
    let Some(v) = d.budget else {
        return format!("budget exceeded for tenant `{tenant}`");
    };
    format!(
        "budget exceeded for tenant `{tenant}`: {} is {} USD, {} spent; resets at {} (in {} s)",
        v.period.field(),
        usd_text(v.limit as i64),
        usd_text(v.spent.min(v.limit) as i64),
        period::rfc3339(v.reset_at_ms),
        v.reset.as_secs_f64().ceil() as u64,
    )
}

/// Who is asking: the tenant, and what the request is.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub tenant: &'a str,
    pub tier: &'a str,
    /// Fair-queuing weight among tenants of the same class.
    pub weight: u32,
    pub headers: &'a HeaderMap,
    /// `chat`, `messages`, … for priority rules.
    pub request_type: &'a str,
    /// Estimated prompt tokens and requested output tokens, if the client set `max_tokens`.
    pub prompt_tokens: u64,
    pub max_tokens: Option<u64>,
    /// The price the estimate is charged at against spend budgets: the highest among the backends
    /// that may serve the request.
    pub price: PriceConfig,
}

/// A slot holder that may have to wait for its backend's pacing before starting.
pub trait Paced {
    fn pacer(&self) -> Option<&Pacer>;
}

/// A waiter that gave up (`Err`) has no pacing to wait out.
impl<T: Paced, E> Paced for Result<T, E> {
    fn pacer(&self) -> Option<&Pacer> {
        self.as_ref().ok().and_then(Paced::pacer)
    }
}

/// Called once with what a response actually used (None when unknown), after it completed. Dropped
/// uncalled (no response), it gives back the request's budget reservation.
pub type UsageSink = Box<dyn FnOnce(Option<Used>) + Send + Sync>;

pub struct Door {
    limiter: Arc<dyn RateLimiter>,
    shaping: ShapingConfig,
    /// `shaping.priority.header` and `shaping.deadline_header`, parsed once (a name given as a
    /// string is parsed and hashed on every lookup).
    priority_header: Option<http::HeaderName>,
    deadline_header: Option<http::HeaderName>,
    /// Requests waiting for their tenant's bucket to refill.
    token_waiters: AtomicUsize,
    /// Each route's slot queue, by route index.
    queues: Vec<Arc<AdmissionQueue>>,
}

/// Past the door: the request's class, deadline and limiter verdict, and its way to a slot.
pub struct Admitted<'a> {
    door: &'a Door,
    pub priority: Priority,
    pub deadline: Option<Instant>,
    pub decision: Decision,
    tenant: Arc<str>,
    weight: u32,
    /// Tokens reserved from the token bucket (estimate), reconciled after the response.
    pub reserved: u64,
    /// Estimated output tokens (for cost estimates).
    pub est_output: u64,
    /// The spend budgets' reservation, taken by [`Admitted::usage_sink`].
    budget: std::sync::Mutex<Option<HeldBudget>>,
}

impl Door {
    /// `routes`: how many routes (rules plus the default) will ask for slots.
    pub fn new(limiter: Arc<dyn RateLimiter>, shaping: &ShapingConfig, routes: usize) -> Door {
        Door {
            limiter,
            queues: (0..routes)
                .map(|_| Arc::new(AdmissionQueue::from_config(shaping)))
                .collect(),
            priority_header: http::HeaderName::from_bytes(shaping.priority.header.as_bytes()).ok(),
            deadline_header: http::HeaderName::from_bytes(shaping.deadline_header.as_bytes()).ok(),
            shaping: shaping.clone(),
            token_waiters: AtomicUsize::new(0),
        }
    }

    /// The slot queue of route `index` (backends wake it when a slot frees up).
    pub fn queue(&self, index: usize) -> &Arc<AdmissionQueue> {
        &self.queues[index]
    }

    pub fn limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.limiter
    }

    /// Classify and admit, waiting for the tenant's bucket when that fits the request's budget
    /// (`shaping.max_wait_ms`, the client deadline) and the waiters stay under `shaping.max_queue`.
    /// Critical requests do not wait: they are refused or admitted. Tokens: the estimate is reserved
    /// now and reconciled with the actual usage when the response ends ([`Admitted::usage_sink`]).
    pub async fn admit(&self, a: Arrival<'_>) -> Result<Admitted<'_>, AdmitError> {
        let s = &self.shaping;
        let header = |name: &Option<http::HeaderName>| {
            a.headers.get(name.as_ref()?).and_then(|v| v.to_str().ok())
        };
        let priority = classify(
            &s.priority,
            header(&self.priority_header),
            a.tier,
            a.request_type,
        );
        let now = Instant::now();
        let deadline = parse_deadline(header(&self.deadline_header), now).map_err(|reason| {
            AdmitError::BadDeadline {
                header: s.deadline_header.clone(),
                reason,
            }
        })?;
        let est_output = a.max_tokens.unwrap_or(DEFAULT_EST_OUTPUT);
        let reserved = a.prompt_tokens + est_output;
        // The budget first: a request over it must not take from the buckets.
        let cost = cost_micros(a.price, a.prompt_tokens, est_output);
        let spend = self.limiter.budget(a.tenant, cost).await;
        if !spend.allowed {
            Metrics::limiter(a.tenant, "over_budget");
            let decision = Decision {
                retry_after: spend.view.map(|v| v.reset),
                budget: spend.view,
                ..Decision::default()
            };
            return Err(AdmitError::OverBudget {
                tenant: a.tenant.to_string(),
                decision,
            });
        }
        // Given back if the buckets refuse.
        let held = spend.hold.map(|h| HeldBudget::new(self.limiter.clone(), h));
        let mut decision = self.take(a.tenant, reserved, priority, now, deadline).await;
        decision.budget = spend.view;
        if !decision.allowed {
            Metrics::limiter(a.tenant, "limited");
            return Err(AdmitError::RateLimited {
                tenant: a.tenant.to_string(),
                decision,
            });
        }
        Metrics::limiter(a.tenant, "allowed");
        Ok(Admitted {
            door: self,
            priority,
            deadline,
            decision,
            tenant: Arc::from(a.tenant),
            weight: a.weight,
            reserved,
            est_output,
            budget: std::sync::Mutex::new(held),
        })
    }

    /// One limiter call: admitted now, admitted with a booked slot to sleep until, or refused. A
    /// request that may wait books within its budget (`max_wait_ms`, the client deadline) while the
    /// waiters stay under `max_queue`; a critical one never waits. Dropped while asleep (client gone),
    /// it gives its slot back.
    async fn take(
        &self,
        tenant: &str,
        tokens: u64,
        priority: Priority,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Decision {
        let budget = now + Duration::from_millis(self.shaping.max_wait_ms);
        let until = deadline.map_or(budget, |d| d.min(budget));
        let waiter = if priority == Priority::Critical {
            None
        } else {
            WaitSlot::enter(&self.token_waiters, self.shaping.max_queue)
        };
        let max_wait = match waiter {
            Some(_) => until.saturating_duration_since(now),
            None => Duration::ZERO,
        };
        let d = self
            .limiter
            .check(LimitRequest {
                tenant,
                requests: 1,
                tokens,
                max_wait,
            })
            .await;
        if !d.allowed || d.wait.is_zero() {
            return d;
        }
        Metrics::limiter(tenant, "queued");
        let _waiting = TokenWait::start(priority, now);
        let mut booking = Booking {
            limiter: &self.limiter,
            tenant,
            tokens,
            kept: false,
        };
        tokio::time::sleep(d.wait).await;
        booking.kept = true;
        d
    }
}

/// A booked slot not yet started; given back if the request goes away before it starts.
struct Booking<'a> {
    limiter: &'a Arc<dyn RateLimiter>,
    tenant: &'a str,
    tokens: u64,
    kept: bool,
}

impl Drop for Booking<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let limiter = self.limiter.clone();
        let tenant = self.tenant.to_string();
        let tokens = self.tokens;
        Metrics::limiter(&tenant, "released");
        tokio::spawn(async move { limiter.release(&tenant, 1, tokens).await });
    }
}

impl Admitted<'_> {
    /// A slot on a backend of route `route`: `try_take` is run whenever this request is the head of
    /// the route's queue until it returns one; then the slot's pacing is waited out. `try_take`
    /// answers `Err(Some(d))` when capacity comes back with time rather than with a release (a
    /// backend cooling down, or paced until its quota resets): the head tries again after `d`, and
    /// the waiters behind keep their priority order. Cancel-safe.
    pub async fn slot<T: Paced>(
        &self,
        route: usize,
        try_take: impl FnMut() -> Result<T, Option<Duration>>,
    ) -> Result<T, Shed> {
        let ticket = Ticket {
            priority: self.priority,
            tenant: self.tenant.clone(),
            weight: self.weight,
            deadline: self.deadline,
            enqueued: Instant::now(),
        };
        let got = self.door.queues[route]
            .wait_or_retry(ticket, try_take)
            .await?;
        self.paced(got).await
    }

    /// A slot taken at once, as [`Admitted::slot`] begins: `None` when waiters go first or nothing
    /// is free now (then [`Admitted::slot`] queues). Its pacing is waited out.
    pub async fn slot_now<T: Paced>(
        &self,
        route: usize,
        try_take: impl FnOnce() -> Option<T>,
    ) -> Option<Result<T, Shed>> {
        let got = self.door.queues[route].try_now(self.deadline, try_take)?;
        Some(self.paced(got).await)
    }

    /// `got`, once its pacing is waited out.
    async fn paced<T: Paced>(&self, got: T) -> Result<T, Shed> {
        if let Some(p) = got.pacer() {
            let wait = p.reserve(Instant::now());
            if !wait.is_zero() {
                if self.deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    return Err(Shed::DeadlineExpired);
                }
                tokio::time::sleep(wait).await;
            }
        }
        Ok(got)
    }

    /// Gives back (or charges) the difference between reserved and used tokens after the response,
    /// and settles the budget reservation with the actual cost; only a token bucket or a budget
    /// needs it. Taken once.
    pub fn usage_sink(&self) -> Option<UsageSink> {
        let budget = self.budget.lock().unwrap_or_else(|e| e.into_inner()).take();
        let tokens = self.decision.tokens_limit.is_some();
        if !tokens && budget.is_none() {
            return None;
        }
        let limiter = self.door.limiter.clone();
        let tenant = self.tenant.clone();
        let reserved = self.reserved;
        Some(Box::new(move |used: Option<Used>| {
            if let Some(b) = budget {
                b.settle(used.map(|u| u.cost));
            }
            let Some(actual) = used.map(|u| u.tokens) else {
                return;
            };
            if tokens && actual != reserved {
                // A local limiter settles at once (before the client can send its next request);
                // a Redis call goes on in its own task.
                let mut settle =
                    Box::pin(async move { limiter.reconcile(&tenant, reserved, actual).await });
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if settle.as_mut().poll(&mut cx).is_pending() {
                    tokio::spawn(settle);
                }
            }
        }))
    }
}

/// A place among the token waiters, held until dropped.
struct WaitSlot<'a>(&'a AtomicUsize);

impl<'a> WaitSlot<'a> {
    fn enter(n: &'a AtomicUsize, max: usize) -> Option<WaitSlot<'a>> {
        if n.fetch_add(1, Ordering::Relaxed) >= max {
            n.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(WaitSlot(n))
    }
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request waiting for its tenant's bucket shows in the same queue metrics as one waiting for a
/// backend slot: the queue length while it waits, the wait histogram when it leaves.
struct TokenWait {
    priority: Priority,
    since: Instant,
}

impl TokenWait {
    fn start(priority: Priority, since: Instant) -> TokenWait {
        Metrics::queue_entered(priority);
        TokenWait { priority, since }
    }
}

impl Drop for TokenWait {
    fn drop(&mut self) {
        Metrics::queue_left(self.priority, self.since.elapsed());
    }
}
