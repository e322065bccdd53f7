//! Peak-EWMA latency estimation (as linkerd / tower's `PeakEwma`).

use std::time::{Duration, Instant};

/// Peak-sensitive exponentially weighted moving average of latency.
///
/// A sample above the current estimate replaces it at once (so a backend
/// that slows down is penalised immediately); a sample at or below it pulls
/// the estimate down with weight `1 - exp(-elapsed / tau)`, where `elapsed`
/// is the time since the previous sample. Slow recovery, fast reaction.
#[derive(Debug, Clone)]
pub struct PeakEwma {
    tau: Duration,
    /// Current estimate (ms) and when it was last updated.
    last: Option<(f64, Instant)>,
}

impl PeakEwma {
    /// An empty estimator with decay time constant `tau` (zero: always the
    /// latest sample).
    pub fn new(tau: Duration) -> Self {
        PeakEwma { tau, last: None }
    }

    /// Record one latency sample, in milliseconds, taken at `now`.
    /// Non-finite samples are ignored and negative ones count as 0.
    pub fn observe(&mut self, sample_ms: f64, now: Instant) {
        if !sample_ms.is_finite() {
            return;
        }
        let sample = sample_ms.max(0.0);
        self.last = Some(match self.last {
            Some((est, at)) if sample <= est => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let tau = self.tau.as_secs_f64();
                let decay = if tau > 0.0 {
                    (-elapsed / tau).exp()
                } else {
                    0.0
                };
                (est * decay + sample * (1.0 - decay), at.max(now))
            }
            Some((_, at)) => (sample, at.max(now)),
            None => (sample, now),
        });
    }

    /// The current estimate in milliseconds; `None` before the first sample.
    pub fn get(&self, _now: Instant) -> Option<f64> {
        self.last.map(|(est, _)| est)
    }

    /// The decay time constant.
    pub fn tau(&self) -> Duration {
        self.tau
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn empty_until_first_sample() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(TAU);
        assert_eq!(e.get(t0), None);
        e.observe(f64::NAN, t0);
        e.observe(f64::INFINITY, t0);
        assert_eq!(e.get(t0), None);
        e.observe(42.0, t0);
        assert_eq!(e.get(t0), Some(42.0));
        assert_eq!(e.tau(), TAU);
    }

    #[test]
    fn peak_replaces_at_once() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(TAU);
        e.observe(10.0, t0);
        e.observe(500.0, t0 + Duration::from_millis(1));
        assert_eq!(e.get(t0), Some(500.0));
    }

    #[test]
    fn lower_samples_decay_with_tau() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(TAU);
        e.observe(100.0, t0);
        // One tau later: weight of the old estimate is e^-1.
        e.observe(10.0, t0 + TAU);
        let d = (-1.0f64).exp();
        let want = 100.0 * d + 10.0 * (1.0 - d);
        assert!(close(e.get(t0).unwrap(), want), "{:?} vs {want}", e.get(t0));
        // Half a tau later again.
        e.observe(10.0, t0 + TAU + TAU / 2);
        let d = (-0.5f64).exp();
        let want = want * d + 10.0 * (1.0 - d);
        assert!(close(e.get(t0).unwrap(), want));
    }

    #[test]
    fn no_time_elapsed_means_no_decay() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(TAU);
        e.observe(100.0, t0);
        e.observe(1.0, t0);
        assert_eq!(e.get(t0), Some(100.0));
        // Out-of-order timestamps do not move the clock back.
        e.observe(1.0, t0 + TAU);
        let after = e.get(t0).unwrap();
        e.observe(1.0, t0);
        assert_eq!(e.get(t0), Some(after));
    }

    #[test]
    fn converges_to_a_steady_lower_latency() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(TAU);
        e.observe(1000.0, t0);
        for i in 1..=600 {
            e.observe(20.0, t0 + Duration::from_millis(500 * i));
        }
        // 300 s = 30 tau: essentially fully converged.
        assert!((e.get(t0).unwrap() - 20.0).abs() < 1e-6);
        // A single slow response shows at once.
        e.observe(900.0, t0 + Duration::from_secs(301));
        assert_eq!(e.get(t0), Some(900.0));
    }

    #[test]
    fn zero_tau_follows_the_latest_sample() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::ZERO);
        e.observe(100.0, t0);
        e.observe(3.0, t0);
        assert_eq!(e.get(t0), Some(3.0));
        e.observe(-5.0, t0);
        assert_eq!(e.get(t0), Some(0.0));
    }
}
