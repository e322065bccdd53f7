//! Log lines a peer can trigger at will (a failing accept loop, a hostile upstream's broken streams,
//! unauthenticated gossip) pass a gate: per kind of line, a burst of 10 and then 5 a second, a
//! governor GCRA keyed by the line's name. A suppressed line is counted, and the next line of its kind
//! that passes says how many were suppressed, so a flood costs neither the disk nor the CPU of the
//! log writer and still shows in the log.

use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Mutex, OnceLock};

struct Gate {
    limiter: DefaultKeyedRateLimiter<&'static str>,
    suppressed: Mutex<HashMap<&'static str, u64>>,
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let quota = Quota::per_second(NonZeroU32::new(5).expect("non-zero"))
            .allow_burst(NonZeroU32::new(10).expect("non-zero"));
        Gate {
            // Keys are the `'static` names of log lines: a small fixed set, nothing to evict.
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            suppressed: Mutex::new(HashMap::new()),
        }
    })
}

/// Whether a line of kind `name` may be written now: `Some(n)` with the number of lines of this kind
/// suppressed since the last one written, `None` to suppress this one.
pub fn allow(name: &'static str) -> Option<u64> {
    let g = gate();
    let mut suppressed = g.suppressed.lock().unwrap_or_else(|e| e.into_inner());
    if g.limiter.check_key(&name).is_ok() {
        Some(suppressed.remove(name).unwrap_or(0))
    } else {
        *suppressed.entry(name).or_default() += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_counted() {
        let passed: Vec<u64> = (0..1000).filter_map(|_| allow("test_flood")).collect();
        // The burst of 10 (a few more if the clock ticked a refill meanwhile).
        assert!((10..=12).contains(&passed.len()), "{}", passed.len());
        assert!(passed.iter().all(|n| *n == 0));
        // Another kind of line has its own allowance.
        assert_eq!(allow("test_other"), Some(0));
        // The next line that passes reports what was suppressed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let n = loop {
            if let Some(n) = allow("test_flood") {
                break n;
            }
            assert!(std::time::Instant::now() < deadline, "no refill");
            std::thread::yield_now();
        };
        assert!(n >= 900, "suppressed {n}");
    }
}
