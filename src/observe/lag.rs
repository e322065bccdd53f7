//! How late this worker's runtime runs what is ready: beside every stage. Congestion control
//! (Shape, fed from Deliver) reads it so a proxy short of CPU is not taken for a congested backend:
//! when Sluice itself is behind, every latency it measures grows by its own delay, and shrinking
//! the backends' concurrency limits for that would shed requests no backend refused.

use std::cell::Cell;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the probe asks to be woken.
const PERIOD: Duration = Duration::from_millis(10);
/// Weight of a new lateness in the average (about the last 8 probes, 80 ms).
const ALPHA: f64 = 0.125;
/// Above this average lateness the runtime is behind: its latency samples say more about Sluice
/// than about the backend.
pub const BEHIND: Duration = Duration::from_millis(15);

thread_local! {
    /// This thread's average lateness in microseconds (0 on threads without a probe).
    static LAG_US: Cell<u64> = const { Cell::new(0) };
}

/// This thread's runtime's average lateness (zero where no probe runs).
pub fn current() -> Duration {
    Duration::from_micros(LAG_US.with(Cell::get))
}

/// Whether this thread's runtime is behind (see [`BEHIND`]).
pub fn behind() -> bool {
    current() >= BEHIND
}

/// The next average from the last one and a new lateness (pure).
pub fn next_average(avg_us: f64, late: Duration) -> f64 {
    avg_us + ALPHA * (late.as_micros() as f64 - avg_us)
}

/// Runs on a current-thread runtime (one per worker) until `shutdown`: asks to be woken every
/// [`PERIOD`] and records how late it was, for the code on this thread to read.
pub async fn probe(worker: usize, shutdown: CancellationToken) {
    let mut avg = 0.0;
    let mut reported = 0u64;
    loop {
        let asked = Instant::now();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        let late = asked.elapsed().saturating_sub(PERIOD);
        avg = next_average(avg, late);
        let us = avg as u64;
        LAG_US.with(|c| c.set(us));
        // The gauge moves on changes worth seeing (a millisecond), not every 10 ms.
        if us.abs_diff(reported) >= 1_000 {
            reported = us;
            crate::observe::Metrics::runtime_lag(worker, Duration::from_micros(us));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_a_lasting_delay_and_forgets_a_single_one() {
        let mut avg = 0.0;
        avg = next_average(avg, Duration::from_millis(100));
        assert!(
            avg < BEHIND.as_micros() as f64,
            "one late wake-up is not behind: {avg}"
        );
        for _ in 0..20 {
            avg = next_average(avg, Duration::from_millis(40));
        }
        assert!(avg > BEHIND.as_micros() as f64, "{avg}");
        for _ in 0..40 {
            avg = next_average(avg, Duration::from_micros(300));
        }
        assert!(avg < 1_000.0, "{avg}");
    }

    #[test]
    fn a_thread_without_a_probe_is_never_behind() {
        assert!(!behind());
        assert_eq!(current(), Duration::ZERO);
    }
}
