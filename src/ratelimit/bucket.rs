//! One token bucket with continuous refill and reservations: the maths of `lua/token_bucket.lua`,
//! for the local limiter (one node alone, or a cluster node in fallback). Capacity `capacity`,
//! refilled at `rate` per second. A caller that may wait books a later slot: when too little is there
//! now but enough would be within its wait budget, the cost is taken anyway (the level goes into
//! debt) and the caller is told how long until its slot starts. Later callers queue behind the debt,
//! so booked slots come out at the bucket's rate. governor's GCRA cannot carry a debt or book a slot,
//! which is why this bucket is ours; for requests it admits exactly what GCRA does.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What a take did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Taken; the slot starts after `wait` (zero: now). `level` is what is left (negative: debt).
    Taken { level: f64, wait: Duration },
    /// Nothing taken: the cost would fit only after `wait`, beyond the caller's budget.
    Refused { wait: Duration },
}

#[derive(Debug)]
pub struct Bucket {
    capacity: f64,
    /// Refill per second.
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A bucket holding `level` (clamped to the capacity) now.
    pub fn new(capacity: f64, per_second: f64, level: f64) -> Bucket {
        Bucket {
            capacity,
            rate: per_second,
            state: Mutex::new((level.min(capacity), Instant::now())),
        }
    }

    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    fn refilled(&self, s: &mut (f64, Instant), now: Instant) {
        let dt = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + dt * self.rate).min(self.capacity);
        s.1 = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take `cost` (clamped to the capacity, so a large ask can pass when the bucket is full), now or
    /// booked up to `max_wait` ahead.
    pub fn take(&self, cost: f64, now: Instant, max_wait: Duration) -> Take {
        let mut s = self.lock();
        self.refilled(&mut s, now);
        let cost = cost.min(self.capacity);
        let wait = if s.0 >= cost {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((cost - s.0) / self.rate)
        };
        if wait > max_wait {
            return Take::Refused { wait };
        }
        s.0 -= cost;
        Take::Taken { level: s.0, wait }
    }

    /// Give back (positive) or charge (negative) after the fact; capped at the capacity, and a
    /// charge never takes the level below `-capacity` (bookings may have, a charge adds nothing).
    pub fn adjust(&self, delta: f64, now: Instant) {
        let mut s = self.lock();
        self.refilled(&mut s, now);
        let after = s.0 + delta;
        s.0 = if delta < 0.0 {
            after.max(s.0.min(-self.capacity))
        } else {
            after.min(self.capacity)
        };
    }

    /// The level now (negative: debt).
    pub fn level(&self, now: Instant) -> f64 {
        let mut s = self.lock();
        self.refilled(&mut s, now);
        s.0
    }

    /// How long until a bucket at `level` is full again.
    pub fn until_full(&self, level: f64) -> Duration {
        Duration::from_secs_f64((self.capacity - level).max(0.0) / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WAIT: Duration = Duration::ZERO;

    fn taken(t: Take) -> (f64, Duration) {
        match t {
            Take::Taken { level, wait } => (level, wait),
            Take::Refused { wait } => panic!("refused, wait {wait:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refuse_without_budget() {
        let b = Bucket::new(3.0, 1.0, 3.0);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(taken(b.take(1.0, now, NO_WAIT)).1, Duration::ZERO);
        }
        assert_eq!(
            b.take(1.0, now, NO_WAIT),
            Take::Refused {
                wait: Duration::from_secs(1)
            }
        );
        assert_eq!(b.level(now), 0.0, "a refusal takes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn bookings_queue_behind_each_other_at_the_rate() {
        let b = Bucket::new(2.0, 2.0, 0.0);
        let now = Instant::now();
        let budget = Duration::from_secs(2);
        let waits: Vec<_> = (0..4).map(|_| taken(b.take(1.0, now, budget)).1).collect();
        assert_eq!(
            waits,
            [500, 1000, 1500, 2000].map(Duration::from_millis).to_vec()
        );
        // The fifth would start after 2.5 s: beyond the budget, refused, nothing taken.
        assert_eq!(
            b.take(1.0, now, budget),
            Take::Refused {
                wait: Duration::from_millis(2500)
            }
        );
        assert_eq!(b.level(now), -4.0);
        // One booking gives up: the next caller's slot moves a place forward.
        b.adjust(1.0, now);
        assert_eq!(taken(b.take(1.0, now, budget)).1, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn debt_is_paid_back_by_time_and_full_is_the_cap() {
        let b = Bucket::new(10.0, 10.0, 0.0);
        let t0 = Instant::now();
        taken(b.take(5.0, t0, Duration::from_secs(1)));
        assert_eq!(b.level(t0), -5.0);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.level(Instant::now()), 10.0);
        b.adjust(-100.0, Instant::now());
        assert_eq!(
            b.level(Instant::now()),
            -10.0,
            "a charge stops at -capacity"
        );
        assert_eq!(b.until_full(-10.0), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cost_above_the_capacity_is_clamped() {
        let b = Bucket::new(100.0, 1.0, 100.0);
        let (level, wait) = taken(b.take(1000.0, Instant::now(), NO_WAIT));
        assert_eq!((level, wait), (0.0, Duration::ZERO));
    }
}
