//! `Pacer`: spaces request starts to a backend with GCRA (generic cell rate algorithm): at most `burst`
//! at once, then one every `1 / rate` seconds. Callers book a start time and sleep until it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    /// Time between starts; `None`: no pacing.
    interval: Option<Duration>,
    /// How far ahead of its theoretical time a start may go: `(burst - 1) * interval`.
    tolerance: Duration,
    /// Theoretical arrival time of the next start.
    tat: Mutex<Option<Instant>>,
}

impl Pacer {
    /// `rate_per_sec` starts per second after a burst of `burst` (0 counts as 1). A rate that is not a
    /// positive finite number disables pacing.
    pub fn new(rate_per_sec: f64, burst: u32) -> Pacer {
        let interval = (rate_per_sec.is_finite() && rate_per_sec > 0.0)
            .then(|| Duration::try_from_secs_f64(1.0 / rate_per_sec).ok())
            .flatten()
            .filter(|d| !d.is_zero());
        let tolerance = interval
            .and_then(|i| i.checked_mul(burst.max(1) - 1))
            .unwrap_or(Duration::MAX);
        Pacer {
            interval,
            tolerance,
            tat: Mutex::new(None),
        }
    }

    /// Book the next start: how long this request must wait from `now` before starting (zero within the
    /// burst). The slot is taken whether or not the caller then starts.
    pub fn reserve(&self, now: Instant) -> Duration {
        let Some(interval) = self.interval else {
            return Duration::ZERO;
        };
        let mut tat = self.tat.lock().unwrap_or_else(PoisonError::into_inner);
        let next = tat.map_or(now, |t| t.max(now));
        let start = next.checked_sub(self.tolerance).map_or(now, |t| t.max(now));
        *tat = Some(next + interval);
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn spaces_a_burst_at_the_rate() {
        let p = Pacer::new(5.0, 1);
        let t0 = Instant::now();
        let waits: Vec<_> = (0..10).map(|_| p.reserve(t0)).collect();
        let want: Vec<_> = (0..10).map(|i| ms(200 * i)).collect();
        assert_eq!(waits, want);
        // Arriving later shortens the wait by as much.
        assert_eq!(p.reserve(t0 + ms(1500)), ms(500));
    }

    #[test]
    fn burst_starts_at_once_then_refills() {
        let p = Pacer::new(5.0, 3);
        let t0 = Instant::now();
        let waits: Vec<_> = (0..5).map(|_| p.reserve(t0)).collect();
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(200), ms(400)]);
        // After a long idle gap the whole burst is available again, but no more.
        let t1 = t0 + Duration::from_secs(10);
        let waits: Vec<_> = (0..4).map(|_| p.reserve(t1)).collect();
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(200)]);
        // Spacing holds at the steady rate.
        assert_eq!(p.reserve(t1 + ms(400)), ms(0));
        assert_eq!(p.reserve(t1 + ms(400)), ms(200));
    }

    #[test]
    fn no_rate_no_pacing() {
        let p = Pacer::new(0.0, 1);
        let t0 = Instant::now();
        assert!((0..5).all(|_| p.reserve(t0).is_zero()));
    }
}
