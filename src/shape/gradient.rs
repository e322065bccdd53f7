//! `ConcurrencyLimit`: a per-backend adaptive concurrency limit that reacts to congestion, not to
//! concurrency: a TCP-like slow start, then Gradient2-style (as Netflix's concurrency-limits and
//! Envoy's adaptive concurrency filter), plus the critical reserve check.
//!
//! Slow start: until the first congestion signal, every successful sample taken while the backend is
//! used near its limit adds two slots (one to replace the request, which keeps its slot, and one
//! more), so the number of requests started doubles every round trip (time to first token for
//! streams): a burst of thousands of streams to a backend that takes them finds its level in a few
//! round trips instead of queueing behind a small start. The first congestion signal (latency above
//! `SLOW_START_EXIT` × its baseline and by at least `SLOW_START_MIN_RISE`, or a dropped request)
//! ends slow start for good.
//!
//! Two EWMAs of the latency samples: a long one (the backend's baseline) and a short one (now).
//! `gradient = clamp(TOLERANCE * long / short, 0.5, 1.0)`; `target = limit * gradient + sqrt(limit)`;
//! the limit moves a `SMOOTHING` share towards the target, within `[min_limit, max_limit]`. So while the
//! latency stays near its baseline the limit grows by about `sqrt(limit)` per sample; when queuing
//! shows up as rising latency it shrinks. A dropped request (error, timeout, 429) multiplies the limit
//! by `DROP_FACTOR`. The limit grows only while the backend is used near it (`in_flight >= limit / 2`).
//! Pure: the caller feeds samples.

use crate::config::{CongestionConfig, Priority};
use std::time::Duration;

/// How much slower than its baseline the backend may get before the limit shrinks.
pub const TOLERANCE: f64 = 1.5;
/// Share of the way to the new target the limit moves per sample.
pub const SMOOTHING: f64 = 0.2;
/// In slow start, how much slower than its baseline the backend must get to end it: a clearer
/// signal than `TOLERANCE`, as time to first token varies more than an RPC's latency.
pub const SLOW_START_EXIT: f64 = 2.0;
/// ... and by at least this much (seconds): an LLM's time to first token varies by hundreds of
/// milliseconds with the prompt alone, so a rise from 50 to 100 ms is not a provider queueing up.
pub const SLOW_START_MIN_RISE: f64 = 0.25;
/// Multiplier on a dropped request.
pub const DROP_FACTOR: f64 = 0.8;
/// EWMA windows, in samples.
pub const LONG_WINDOW: u32 = 600;
pub const SHORT_WINDOW: u32 = 10;

/// What became of one request sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: its round-trip time (or time to first token for streams).
    Success(Duration),
    /// Error, timeout or 429.
    Dropped,
}

/// Samples averaged plainly before an EWMA switches to exponential smoothing, so its estimate is not
/// dominated by the first sample.
const WARMUP: u32 = 10;

/// Exponential moving average over about `window` samples, after a `WARMUP` plain average.
#[derive(Debug, Clone)]
struct Ewma {
    window: u32,
    count: u32,
    value: f64,
}

impl Ewma {
    fn new(window: u32) -> Ewma {
        Ewma {
            window: window.max(1),
            count: 0,
            value: 0.0,
        }
    }
    fn add(&mut self, sample: f64) -> f64 {
        if self.count < WARMUP.min(self.window) {
            self.count += 1;
            self.value += (sample - self.value) / f64::from(self.count);
        } else {
            let alpha = 2.0 / (f64::from(self.window) + 1.0);
            self.value += (sample - self.value) * alpha;
        }
        self.value
    }
}

#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    enabled: bool,
    /// No congestion signal seen yet: grow by one per sample (doubling per round trip).
    slow_start: bool,
    limit: f64,
    min: f64,
    max: f64,
    long: Ewma,
    short: Ewma,
}

impl ConcurrencyLimit {
    /// Starts at `initial_limit`. With `enabled: false` the limit is fixed at `max_limit`.
    pub fn new(c: &CongestionConfig) -> Self {
        let min = f64::from(c.min_limit.max(1));
        let max = f64::from(c.max_limit).max(min);
        let initial = if c.enabled {
            f64::from(c.initial_limit)
        } else {
            max
        };
        ConcurrencyLimit {
            enabled: c.enabled,
            slow_start: true,
            limit: initial.clamp(min, max),
            min,
            max,
            long: Ewma::new(LONG_WINDOW),
            short: Ewma::new(SHORT_WINDOW),
        }
    }

    /// The current limit (whole requests).
    pub fn limit(&self) -> u32 {
        self.limit as u32
    }

    /// Still in slow start (no congestion signal seen).
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// Feed one finished request; `in_flight` is the backend's in-flight count when it finished.
    /// Returns the new limit.
    pub fn on_sample(&mut self, outcome: Outcome, in_flight: u32) -> u32 {
        if !self.enabled {
            return self.limit();
        }
        let rtt = match outcome {
            Outcome::Dropped => {
                self.slow_start = false;
                self.limit = (self.limit * DROP_FACTOR).clamp(self.min, self.max);
                return self.limit();
            }
            Outcome::Success(rtt) => rtt.as_secs_f64().max(1e-6),
        };
        let short = self.short.add(rtt);
        let mut long = self.long.add(rtt);
        if long / short > 2.0 {
            // Latency is back to normal after a long overload: let the baseline come down faster.
            long *= 0.95;
            self.long.value = long;
        }
        let gradient = (TOLERANCE * long / short).clamp(0.5, 1.0);
        let busy = self.busy(in_flight);
        if self.slow_start {
            if short <= SLOW_START_EXIT * long || short - long < SLOW_START_MIN_RISE {
                if busy {
                    let target = self.limit + self.limit.sqrt();
                    let gradual = self.limit * (1.0 - SMOOTHING) + target * SMOOTHING;
                    // Two slots per success: unlike a TCP ack, a stream's first token does not
                    // free its slot, so +1 would only grow the limit linearly.
                    self.limit = (self.limit + 2.0).max(gradual).clamp(self.min, self.max);
                }
                return self.limit();
            }
            // The first sign of queueing at the backend: from here on, the gradient decides.
            self.slow_start = false;
        }
        let target = self.limit * gradient + self.limit.sqrt();
        let mut next = self.limit * (1.0 - SMOOTHING) + target * SMOOTHING;
        if !busy {
            // Idle or lightly used: no evidence the backend can take more.
            next = next.min(self.limit);
        }
        self.limit = next.clamp(self.min, self.max);
        self.limit()
    }

    /// Whether the backend is used near its limit: only then is there evidence it can take more.
    fn busy(&self, in_flight: u32) -> bool {
        f64::from(in_flight) >= self.limit / 2.0
    }

    /// A success measured while Sluice itself runs late: its latency says more about Sluice than
    /// about the backend, so it feeds neither average and ends nothing. But the backend did
    /// answer: in slow start it still adds its two slots (the burst that made Sluice late is what
    /// waits on them); past slow start the limit stays. Returns the limit.
    pub fn on_success_while_behind(&mut self, in_flight: u32) -> u32 {
        if self.enabled && self.slow_start && self.busy(in_flight) {
            self.limit = (self.limit + 2.0).clamp(self.min, self.max);
        }
        self.limit()
    }
}

/// Whether a request of `priority` may start on a backend with `in_flight` requests under `limit`:
/// non-critical traffic may use only `limit * (1 - critical_reserve)` slots (at least 1), critical
/// traffic all of them.
pub fn allows(limit: u32, in_flight: u32, priority: Priority, critical_reserve: f64) -> bool {
    if priority == Priority::Critical {
        return in_flight < limit;
    }
    let reserve = critical_reserve.clamp(0.0, 1.0);
    let reserved = (f64::from(limit) * reserve).round() as u32;
    let share = limit.saturating_sub(reserved).max(1);
    in_flight < share
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CongestionConfig {
        CongestionConfig {
            initial_limit: 32,
            min_limit: 2,
            max_limit: 512,
            ..CongestionConfig::default()
        }
    }

    fn feed(l: &mut ConcurrencyLimit, ms: u64, n: usize) -> u32 {
        for _ in 0..n {
            let in_flight = l.limit();
            l.on_sample(Outcome::Success(Duration::from_millis(ms)), in_flight);
        }
        l.limit()
    }

    #[test]
    fn slow_start_doubles_per_round_until_the_first_congestion_signal() {
        let mut l = ConcurrencyLimit::new(&cfg());
        // One round trip at the limit: every request's sample adds at least a slot.
        let one = feed(&mut l, 100, 32);
        assert!(one >= 64, "{one}");
        let two = feed(&mut l, 100, one as usize);
        assert!(two >= 2 * one, "{two} after {one}");
        assert!(l.in_slow_start());
        // Latency rises above the tolerance: slow start ends, the limit backs off.
        let before = l.limit();
        let slow = feed(&mut l, 400, 20);
        assert!(!l.in_slow_start());
        assert!(slow < before, "{slow} vs {before}");
        // A small absolute rise (50 → 120 ms) is LLM noise, not a provider queueing up.
        let mut quick = ConcurrencyLimit::new(&cfg());
        feed(&mut quick, 50, 32);
        feed(&mut quick, 120, 40);
        assert!(quick.in_slow_start());
        // A drop also ends slow start; from a small limit, slow start doubles per round trip
        // where the gradient alone would add about sqrt(limit) × SMOOTHING per sample.
        let small = CongestionConfig {
            initial_limit: 8,
            ..cfg()
        };
        let mut ss = ConcurrencyLimit::new(&small);
        assert!(feed(&mut ss, 100, 8) >= 16);
        let mut l = ConcurrencyLimit::new(&small);
        l.on_sample(Outcome::Dropped, 8);
        assert!(!l.in_slow_start());
        let grown = feed(&mut l, 100, 8);
        assert!(grown < 12, "past slow start: {grown}");
    }

    #[test]
    fn a_success_measured_while_behind_grows_only_in_slow_start_and_moves_no_average() {
        let mut l = ConcurrencyLimit::new(&cfg());
        for _ in 0..32 {
            l.on_success_while_behind(l.limit());
        }
        assert!(l.limit() >= 64, "{}", l.limit());
        assert!(l.in_slow_start());
        // Not busy: no evidence the backend can take more.
        let before = l.limit();
        assert_eq!(l.on_success_while_behind(1), before);
        // The averages did not see those samples: the first measured ones set the baseline, and
        // a later rise still ends slow start.
        feed(&mut l, 100, 20);
        assert!(l.in_slow_start());
        feed(&mut l, 400, 20);
        assert!(!l.in_slow_start());
        // Past slow start a late success moves nothing.
        let after = l.limit();
        assert_eq!(l.on_success_while_behind(after), after);
        // Disabled: fixed.
        let mut off = ConcurrencyLimit::new(&CongestionConfig {
            enabled: false,
            ..cfg()
        });
        let fixed = off.limit();
        assert_eq!(off.on_success_while_behind(fixed), fixed);
    }

    #[test]
    fn grows_at_baseline_shrinks_on_latency_and_recovers() {
        let mut l = ConcurrencyLimit::new(&cfg());
        assert_eq!(l.limit(), 32);
        let baseline = feed(&mut l, 100, 20);
        assert!(baseline > 32, "{baseline}");
        let slow = feed(&mut l, 400, 40);
        assert!(!l.in_slow_start());
        assert!(slow < baseline / 2, "{slow} vs {baseline}");
        assert!(slow >= 2);
        let back = feed(&mut l, 100, 200);
        assert!(back >= baseline, "{back} vs {baseline}");
        assert_eq!(feed(&mut l, 100, 1000), 512);
    }

    #[test]
    fn drops_back_off_multiplicatively_down_to_min() {
        let mut l = ConcurrencyLimit::new(&cfg());
        assert_eq!(l.on_sample(Outcome::Dropped, 32), 25);
        assert_eq!(l.on_sample(Outcome::Dropped, 25), 20);
        for _ in 0..50 {
            l.on_sample(Outcome::Dropped, 0);
        }
        assert_eq!(l.limit(), 2);
    }

    #[test]
    fn idle_backend_does_not_grow() {
        let mut l = ConcurrencyLimit::new(&cfg());
        for _ in 0..100 {
            l.on_sample(Outcome::Success(Duration::from_millis(100)), 3);
        }
        assert_eq!(l.limit(), 32);
        for _ in 0..100 {
            l.on_sample(Outcome::Success(Duration::ZERO), 16);
        }
        assert!(l.limit() > 32);
    }

    #[test]
    fn disabled_is_fixed_at_max() {
        let mut l = ConcurrencyLimit::new(&CongestionConfig {
            enabled: false,
            ..cfg()
        });
        assert_eq!(l.on_sample(Outcome::Dropped, 1), 512);
        assert_eq!(l.limit(), 512);
    }

    #[test]
    fn reserve_is_kept_for_critical() {
        for p in [Priority::High, Priority::Normal, Priority::Batch] {
            assert!(allows(10, 7, p, 0.2));
            assert!(!allows(10, 8, p, 0.2));
        }
        assert!(allows(10, 8, Priority::Critical, 0.2));
        assert!(allows(10, 9, Priority::Critical, 0.2));
        assert!(!allows(10, 10, Priority::Critical, 0.2));
        // At least one slot for everyone; no reserve: the whole limit.
        assert!(allows(1, 0, Priority::Batch, 0.5));
        assert!(!allows(1, 1, Priority::Batch, 0.5));
        assert!(allows(10, 9, Priority::Low, 0.0));
    }
}
