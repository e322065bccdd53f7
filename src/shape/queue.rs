//! `AdmissionQueue`: a bounded async wait queue for requests that cannot start yet (no backend slot,
//! no rate-limit tokens), served by priority, then fairly among tenants, then by deadline.
//!
//! Head-of-line: only the head of the queue runs its `try_start`, on entry and on every
//! [`AdmissionQueue::notify`]; when it succeeds (or leaves for any reason) the next head is woken and
//! tries in turn, so freed capacity drains down the queue in order and nobody jumps ahead. The lock is
//! a std `Mutex` held only for short bookkeeping, never across an `.await` nor while `try_start` runs.

use super::codel::Codel;
use super::fair::{Fair, Key, Pos, Waiter};
pub use super::ticket::{Shed, Ticket};
use crate::config::{Priority, ShapingConfig};
use crate::observe::Metrics;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A queued waiter's mailbox: woken to try, or told it was shed (already removed from the queue).
#[derive(Debug, Default)]
struct Slot {
    notify: Notify,
    /// 0: waiting; otherwise 1 + index in `Shed::ALL`.
    verdict: AtomicU8,
}

impl Slot {
    fn verdict(&self) -> Option<Shed> {
        let v = self.verdict.load(Ordering::Acquire) as usize;
        v.checked_sub(1).and_then(|i| Shed::ALL.get(i).copied())
    }
    fn shed(&self, why: Shed) {
        let code = Shed::ALL.iter().position(|s| *s == why).unwrap_or(0) as u8 + 1;
        self.verdict.store(code, Ordering::Release);
        self.notify.notify_one();
    }
}

#[derive(Debug)]
struct Inner {
    fair: Fair<Arc<Slot>>,
    codel: Codel,
    next_id: u64,
    /// Bumped whenever capacity may have been freed (`notify`).
    epoch: u64,
    /// Waiters that tried and failed since the last success or `notify`: past
    /// [`MAX_FAILED_TURNS`] the turn is not passed on until capacity changes again.
    failed_turns: usize,
    /// How many waiters at the front may try at once: doubles while tries succeed (capacity is
    /// plentiful, so a long queue drains in parallel rather than one task wake after another),
    /// back to 1 on a failure (scarce capacity goes strictly in order).
    window: usize,
}

/// The widest the front window grows.
const MAX_WINDOW: usize = 32;

/// How many waiters in a row may try and fail on one change of capacity before the turn stops
/// being passed on: a freed slot is found by the first few, and a thousand waiters do not each
/// retry on every change (which made one change cost a thousand tries).
const MAX_FAILED_TURNS: usize = 64;

impl Inner {
    /// Give the turn to the first waiters (the window) that have not already failed at the current
    /// capacity.
    fn wake_head(&self) {
        for (_, w) in self.fair.unblocked(self.epoch, self.window) {
            w.slot.notify.notify_one();
        }
    }

    /// Whether waiter `id` is in the front window.
    fn may_try(&self, id: u64, epoch: u64) -> bool {
        self.fair
            .unblocked(epoch, self.window)
            .iter()
            .any(|(i, _)| *i == id)
    }
}

/// The bounded wait queue. Share it (`Arc`) between the requests waiting and whoever frees capacity.
#[derive(Debug)]
pub struct AdmissionQueue {
    inner: Mutex<Inner>,
    len: AtomicUsize,
    max_len: usize,
    max_wait: Duration,
}

/// A queued waiter; dropping it before it finished (client went away) takes it out of the queue and
/// passes the turn on if it was the head.
struct Registration<'a> {
    queue: &'a AdmissionQueue,
    pos: Pos,
    slot: Arc<Slot>,
    enqueued: Instant,
    done: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut inner = self.queue.lock();
        if self.slot.verdict().is_none() {
            self.queue.leave(&mut inner, &self.pos, false);
        }
    }
}

fn record_shed(why: Shed, p: Priority) {
    Metrics::shed(why.label(), p);
}

fn record_wait(p: Priority, enqueued: Instant, now: Instant) {
    Metrics::queue_wait(p, now.saturating_duration_since(enqueued));
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl AdmissionQueue {
    /// At most `max_len` waiters; each waits at most `max_wait` from its `enqueued`; CoDel sheds
    /// non-critical waiters once the head's wait stayed above `codel_target` for `codel_interval`.
    pub fn new(
        max_len: usize,
        max_wait: Duration,
        codel_target: Duration,
        codel_interval: Duration,
    ) -> Self {
        AdmissionQueue {
            inner: Mutex::new(Inner {
                fair: Fair::default(),
                codel: Codel::new(codel_target, codel_interval),
                next_id: 0,
                epoch: 0,
                failed_turns: 0,
                window: 1,
            }),
            len: AtomicUsize::new(0),
            max_len,
            max_wait,
        }
    }

    /// `max_queue`, `max_wait_ms`, `congestion.codel_target_ms`, `congestion.codel_interval_ms`.
    pub fn from_config(c: &ShapingConfig) -> Self {
        AdmissionQueue::new(
            c.max_queue,
            Duration::from_millis(c.max_wait_ms),
            Duration::from_millis(c.congestion.codel_target_ms),
            Duration::from_millis(c.congestion.codel_interval_ms),
        )
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests waiting per class, indexed like `Priority::ALL` (critical first).
    pub fn len_by_priority(&self) -> [usize; 5] {
        let inner = self.lock();
        Priority::ALL.map(|p| inner.fair.class_len(p))
    }

    /// Capacity was freed somewhere: let the head (and, as each one starts, the next) try again.
    pub fn notify(&self) {
        if self.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.failed_turns = 0;
        tracing::trace!(
            len = inner.fair.len(),
            window = inner.window,
            "queue notified"
        );
        self.congestion(&mut inner, Instant::now());
        inner.wake_head();
    }

    /// The backend's limit grew during its slow start: capacity is still being found, so the queue
    /// is transient, not standing — CoDel's clock starts again — and the head tries at once.
    pub fn notify_growing(&self) {
        if self.is_empty() {
            return;
        }
        self.lock().codel.reset();
        self.notify();
    }

    /// Wait for this ticket's turn, running `try_start` whenever it is the head of the queue (on entry
    /// and on every [`notify`](Self::notify)) until it returns `Some`. Cancel-safe.
    pub async fn wait<T>(
        &self,
        ticket: Ticket,
        mut try_start: impl FnMut() -> Option<T>,
    ) -> Result<T, Shed> {
        self.wait_or_retry(ticket, move || try_start().ok_or(None))
            .await
    }

    /// A newcomer's try at once, as [`wait_or_retry`](Self::wait_or_retry) starts: `None` when a
    /// waiter may use the current capacity first, the deadline has passed (the queue then sheds), or
    /// `try_start` finds nothing free.
    pub fn try_now<T>(
        &self,
        deadline: Option<Instant>,
        try_start: impl FnOnce() -> Option<T>,
    ) -> Option<T> {
        if deadline.is_some_and(|d| Instant::now() >= d) || !self.all_blocked() {
            return None;
        }
        try_start()
    }

    /// Nobody waiting can use the current capacity (every waiter already failed at it): a newcomer
    /// may try at once; what it finds free is capacity no waiter could take.
    fn all_blocked(&self) -> bool {
        let inner = self.lock();
        inner.fair.first_unblocked(inner.epoch).is_none()
    }

    /// As [`wait`](Self::wait), for capacity that comes back with time rather than with a release
    /// (rate-limit tokens): `Err(Some(d))` means "not yet, and try again after `d` even if nobody calls
    /// `notify`"; `Err(None)` waits for `notify` only.
    pub async fn wait_or_retry<T>(
        &self,
        ticket: Ticket,
        mut try_start: impl FnMut() -> Result<T, Option<Duration>>,
    ) -> Result<T, Shed> {
        let mut retry_at = None;
        if self.all_blocked() {
            // Free capacity admits at once; only a passed deadline refuses (the client gave up).
            let now = Instant::now();
            if ticket.deadline.is_some_and(|d| now >= d) {
                record_shed(Shed::DeadlineExpired, ticket.priority);
                return Err(Shed::DeadlineExpired);
            }
            match try_start() {
                Ok(v) => return Ok(v),
                Err(after) => retry_at = after.map(|d| now + d),
            }
        }
        let mut reg = self.enter(&ticket)?;
        let expiry = earliest(ticket.deadline, ticket.enqueued.checked_add(self.max_wait));
        let mut try_now = true;
        loop {
            let now = Instant::now();
            let (head, epoch) = {
                let mut inner = self.lock();
                if let Some(why) = self.check(&mut inner, &mut reg, &ticket, now) {
                    return Err(why);
                }
                let epoch = inner.epoch;
                let head = inner.may_try(reg.pos.key.id, epoch);
                if let Some(w) = inner.fair.get_mut(&reg.pos).filter(|_| head && try_now) {
                    w.trying = true;
                }
                (head, epoch)
            };
            if head && try_now {
                let got = try_start();
                let now = Instant::now();
                let mut inner = self.lock();
                if let Some(w) = inner.fair.get_mut(&reg.pos) {
                    w.trying = false;
                    w.blocked = got.is_err().then_some(epoch);
                }
                if got.is_err() {
                    tracing::trace!(
                        failed = inner.failed_turns,
                        len = inner.fair.len(),
                        "queue try failed"
                    );
                    // Pass the turn on: a waiter behind may fit where this one does not.
                    inner.window = 1;
                    inner.failed_turns += 1;
                    if inner.failed_turns < MAX_FAILED_TURNS {
                        inner.wake_head();
                    }
                } else {
                    inner.failed_turns = 0;
                    inner.window = (inner.window * 2).min(MAX_WINDOW);
                }
                match got {
                    Ok(v) => {
                        self.leave(&mut inner, &reg.pos, true);
                        reg.done = true;
                        record_wait(ticket.priority, ticket.enqueued, now);
                        return Ok(v);
                    }
                    Err(after) => retry_at = after.map(|d| now + d),
                }
            }
            let wake = {
                let inner = self.lock();
                match inner.fair.head() {
                    Some((_, key, _)) if key.id == reg.pos.key.id => {
                        let oldest = inner.fair.oldest().unwrap_or(now);
                        let codel = inner.codel.next_check(oldest, now);
                        earliest(expiry, earliest(codel, retry_at))
                    }
                    _ => expiry,
                }
            };
            let notified = reg.slot.notify.notified();
            try_now = match wake {
                Some(at) => tokio::select! {
                    biased;
                    _ = notified => true,
                    _ = tokio::time::sleep_until(at) => {
                        let due = retry_at.is_some_and(|r| Instant::now() >= r);
                        if due && let Some(w) = self.lock().fair.get_mut(&reg.pos) {
                            w.blocked = None;
                        }
                        due
                    }
                },
                None => {
                    notified.await;
                    true
                }
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expired(&self, t: &Ticket, now: Instant) -> Option<Shed> {
        if t.deadline.is_some_and(|d| now >= d) {
            Some(Shed::DeadlineExpired)
        } else if t
            .enqueued
            .checked_add(self.max_wait)
            .is_some_and(|m| now >= m)
        {
            Some(Shed::MaxWait)
        } else {
            None
        }
    }

    /// Join the queue, making room by shedding a less important waiter if it is full.
    fn enter(&self, t: &Ticket) -> Result<Registration<'_>, Shed> {
        let now = Instant::now();
        let mut inner = self.lock();
        let refused = self.expired(t, now).or_else(|| {
            if inner.fair.len() < self.max_len {
                return None;
            }
            match inner.fair.victim(Priority::Critical) {
                Some(v) if v.priority > t.priority => {
                    self.shed(&mut inner, &v, Shed::QueueFull, now);
                    None
                }
                _ => Some(Shed::QueueFull),
            }
        });
        if let Some(why) = refused {
            record_shed(why, t.priority);
            return Err(why);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let pos = Pos {
            priority: t.priority,
            tenant: t.tenant.clone(),
            key: Key::new(t.deadline, id),
        };
        let slot = Arc::new(Slot::default());
        let waiter = Waiter {
            slot: slot.clone(),
            enqueued: t.enqueued,
            trying: false,
            blocked: None,
        };
        inner.fair.push(&pos, t.weight, waiter);
        self.changed(&inner, t.priority, 1.0);
        Ok(Registration {
            queue: self,
            pos,
            slot,
            enqueued: t.enqueued,
            done: false,
        })
    }

    /// Whether this waiter must leave now: shed by someone else, expired, or shed by CoDel.
    fn check(
        &self,
        inner: &mut Inner,
        reg: &mut Registration<'_>,
        t: &Ticket,
        now: Instant,
    ) -> Option<Shed> {
        if let Some(why) = self
            .expired(t, now)
            .filter(|_| reg.slot.verdict().is_none())
        {
            self.leave(inner, &reg.pos, false);
            record_shed(why, t.priority);
            record_wait(t.priority, reg.enqueued, now);
            reg.done = true;
            return Some(why);
        }
        self.congestion(inner, now);
        let why = reg.slot.verdict()?;
        reg.done = true;
        Some(why)
    }

    /// Take a waiter out; if it was the head (or just started), the next head gets its turn.
    fn leave(&self, inner: &mut Inner, pos: &Pos, served: bool) {
        if inner.fair.remove(pos, served).is_some() {
            self.changed(inner, pos.priority, -1.0);
        }
        inner.wake_head();
    }

    /// Remove another waiter and tell it why.
    fn shed(&self, inner: &mut Inner, pos: &Pos, why: Shed, now: Instant) {
        if let Some(w) = inner.fair.remove(pos, false) {
            w.slot.shed(why);
            record_shed(why, pos.priority);
            record_wait(pos.priority, w.enqueued, now);
            self.changed(inner, pos.priority, -1.0);
        }
        inner.wake_head();
    }

    /// CoDel: shed the least important non-critical waiter while the queue stays congested.
    fn congestion(&self, inner: &mut Inner, now: Instant) {
        loop {
            let head = inner.fair.oldest();
            if !inner.codel.should_shed(head, now) {
                return;
            }
            match inner.fair.victim(Priority::High) {
                Some(v) => {
                    tracing::debug!(
                        queued = inner.fair.len(),
                        head_wait_ms =
                            head.map_or(0, |h| now.saturating_duration_since(h).as_millis() as u64),
                        "codel sheds a waiter"
                    );
                    self.shed(inner, &v, Shed::Congested, now);
                    inner.codel.shed(now);
                }
                None => return inner.codel.nothing_to_shed(now),
            }
        }
    }

    fn changed(&self, inner: &Inner, p: Priority, delta: f64) {
        self.len.store(inner.fair.len(), Ordering::SeqCst);
        Metrics::queue_length(p, delta);
    }
}
