//! The circuit breaker in front of Redis: closed = global mode (calls go to Redis), open = fallback
//! mode (no Redis calls at all; the background probe closes it again when Redis answers).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    failures: AtomicU32,
    open: AtomicBool,
}

impl Breaker {
    /// Starts open: nothing is known about Redis until the first probe answers.
    pub(crate) fn new(threshold: u32) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            failures: AtomicU32::new(0),
            open: AtomicBool::new(true),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// A call answered: the failure streak ends.
    pub(crate) fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// A call failed. True when this failure opened the breaker (exactly one caller sees true).
    #[cfg(test)]
    pub(crate) fn failure(&self) -> bool {
        self.failure_counted().1
    }

    /// A call failed: its place in the failure streak (1 = the streak starts; exactly one caller
    /// sees each number), and whether it opened the breaker.
    pub(crate) fn failure_counted(&self) -> (u32, bool) {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let opened = n >= self.threshold
            && self
                .open
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        (n, opened)
    }

    /// The probe succeeded. True when this closed the breaker.
    pub(crate) fn close(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        self.open
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_consecutive_failures_once() {
        let b = Breaker::new(3);
        assert!(b.is_open());
        assert!(b.close());
        assert!(!b.close());
        assert!(!b.failure());
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.failure(), "third consecutive failure opens");
        assert!(b.is_open());
        assert!(!b.failure(), "already open: no second transition");
        assert!(b.close());
        assert_eq!(b.consecutive_failures(), 0);
        assert!(!b.is_open());
    }
}
