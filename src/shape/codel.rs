//! CoDel (controlled delay) for the admission queue (pure): decides when a standing queue sheds.
//!
//! The queue delay is the head's wait (`now - enqueued`). Once it has stayed at or above `target` for a
//! whole `interval`, the queue enters the dropping state: one waiter is shed at once, the next after
//! `interval / sqrt(count)` (the CoDel control law), and so on until the delay falls below target.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct Codel {
    target: Duration,
    interval: Duration,
    first_above: Option<Instant>,
    dropping: bool,
    count: u32,
    drop_next: Option<Instant>,
}

impl Codel {
    pub fn new(target: Duration, interval: Duration) -> Codel {
        Codel {
            target,
            interval,
            first_above: None,
            dropping: false,
            count: 0,
            drop_next: None,
        }
    }

    pub fn reset(&mut self) {
        self.first_above = None;
        self.dropping = false;
        self.count = 0;
        self.drop_next = None;
    }

    /// Observe the head's enqueue time (`None`: queue empty); true when one waiter should be shed now
    /// (then call [`Codel::shed`] or [`Codel::nothing_to_shed`]).
    pub fn should_shed(&mut self, head_enqueued: Option<Instant>, now: Instant) -> bool {
        let Some(enqueued) = head_enqueued else {
            self.reset();
            return false;
        };
        if now.saturating_duration_since(enqueued) < self.target {
            self.reset();
            return false;
        }
        let Some(first) = self.first_above else {
            self.first_above = Some(now);
            return false;
        };
        if !self.dropping {
            if now < first + self.interval {
                return false;
            }
            self.dropping = true;
            self.count = 0;
            self.drop_next = Some(now);
        }
        self.drop_next.is_some_and(|t| now >= t)
    }

    /// One waiter was shed at `now`.
    pub fn shed(&mut self, now: Instant) {
        self.count = self.count.saturating_add(1);
        self.drop_next = Some(now + self.interval.div_f64(f64::from(self.count).sqrt()));
    }

    /// Congested but nothing may be shed (only critical waiters): look again after an interval.
    pub fn nothing_to_shed(&mut self, now: Instant) {
        self.drop_next = Some(now + self.interval);
    }

    /// When the head should wake to look again (strictly after `now`), if ever.
    pub fn next_check(&self, head_enqueued: Instant, now: Instant) -> Option<Instant> {
        let at = match (self.dropping, self.first_above) {
            (true, _) => self.drop_next?,
            (false, Some(first)) => first + self.interval,
            (false, None) => head_enqueued + self.target,
        };
        (at > now).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_after_a_whole_interval_above_target_then_by_control_law() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut c = Codel::new(ms(50), ms(100));
        let head = Some(t0);
        assert!(!c.should_shed(head, t0 + ms(10)));
        assert_eq!(c.next_check(t0, t0 + ms(10)), Some(t0 + ms(50)));
        assert!(!c.should_shed(head, t0 + ms(50)));
        assert_eq!(c.next_check(t0, t0 + ms(50)), Some(t0 + ms(150)));
        assert!(!c.should_shed(head, t0 + ms(149)));
        assert!(c.should_shed(head, t0 + ms(150)));
        c.shed(t0 + ms(150));
        assert!(!c.should_shed(head, t0 + ms(150)));
        assert_eq!(c.next_check(t0, t0 + ms(150)), Some(t0 + ms(250)));
        assert!(c.should_shed(head, t0 + ms(250)));
        c.shed(t0 + ms(250));
        // interval / sqrt(2) ≈ 70.7ms
        assert!(!c.should_shed(head, t0 + ms(320)));
        assert!(c.should_shed(head, t0 + ms(321)));
        // A fresh head below target ends the dropping state.
        assert!(!c.should_shed(Some(t0 + ms(300)), t0 + ms(321)));
        assert_eq!(c.next_check(t0 + ms(300), t0 + ms(321)), Some(t0 + ms(350)));
        assert!(!c.should_shed(None, t0 + ms(400)));
    }
}
