//! Budget periods in UTC: which day, calendar month or epoch-aligned window an instant falls in, when
//! that period ends, and the budget clock (the system clock, shifted in tests by the hidden
//! `SLUICE_TEST_CLOCK_OFFSET_MS`). Pure functions of a Unix time in ms.

use crate::calendar::{civil_from_days, days_from_civil};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY_MS: u64 = 86_400_000;

/// A budget's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// The UTC day.
    Day,
    /// The UTC calendar month.
    Month,
    /// Fixed windows of this many ms, starting at multiples of it since the epoch.
    Window(u64),
}

/// One occurrence of a period: `[start_ms, end_ms)` in Unix ms, and a short tag for Redis keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Period {
    /// `day`, `month` or `window`: the metric label and the name in messages.
    pub fn label(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Window(_) => "window",
        }
    }

    /// The config field this period comes from (named in the 429 message).
    pub fn field(self) -> &'static str {
        match self {
            Period::Day => "usd_per_day",
            Period::Month => "usd_per_month",
            Period::Window(_) => "usd_per_window",
        }
    }

    /// The occurrence of this period that `now_ms` falls in.
    pub fn span(self, now_ms: u64) -> Span {
        match self {
            Period::Day => {
                let start = now_ms - now_ms % DAY_MS;
                Span {
                    start_ms: start,
                    end_ms: start + DAY_MS,
                }
            }
            Period::Month => {
                let (y, m, _) = date(now_ms / DAY_MS);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Span {
                    start_ms: month_start(y, m),
                    end_ms: month_start(ny, nm),
                }
            }
            Period::Window(w) => {
                let w = w.max(1);
                let start = now_ms - now_ms % w;
                Span {
                    start_ms: start,
                    end_ms: start + w,
                }
            }
        }
    }

    /// The Redis key suffix of the occurrence starting at `start_ms`: `day:20261127`,
    /// `month:202611`, `window5000:352348213` (window length, window index).
    pub fn tag(self, start_ms: u64) -> String {
        let (y, m, d) = date(start_ms / DAY_MS);
        match self {
            Period::Day => format!("day:{y:04}{m:02}{d:02}"),
            Period::Month => format!("month:{y:04}{m:02}"),
            Period::Window(w) => format!("window{w}:{}", start_ms / w.max(1)),
        }
    }

    /// How long a spend counter is kept after its period ended (a late reconcile still finds it).
    pub fn grace(self) -> Duration {
        match self {
            Period::Day | Period::Month => Duration::from_millis(DAY_MS),
            Period::Window(w) => Duration::from_millis(w.max(1000)),
        }
    }
}

/// `2026-11-28T00:00:00Z` for a Unix time in ms (whole seconds).
pub fn rfc3339(ms: u64) -> String {
    let (y, m, d) = date(ms / DAY_MS);
    let s = (ms % DAY_MS) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01.
fn date(days: u64) -> (i64, u32, u32) {
    let (y, m, d) = civil_from_days(days as i64);
    (y, m as u32, d as u32)
}

/// Unix ms of 00:00 UTC on the first of month `m` of year `y`.
fn month_start(y: i64, m: u32) -> u64 {
    days_from_civil(y, m as i64, 1).max(0) as u64 * DAY_MS
}

/// The budget clock: Unix ms, plus `SLUICE_TEST_CLOCK_OFFSET_MS` when set (tests put a node just
/// before a period boundary with it; it is read once).
pub fn now_ms() -> u64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        std::env::var("SLUICE_TEST_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    real.saturating_add(offset).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: u32, d: u32, h: u64, min: u64, s: u64) -> u64 {
        month_start(y, m) + (d as u64 - 1) * DAY_MS + (h * 3600 + min * 60 + s) * 1000
    }

    #[test]
    fn instants_print_in_utc() {
        assert_eq!(
            rfc3339(at(2026, 11, 27, 18, 5, 9) + 999),
            "2026-11-27T18:05:09Z"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn a_day_runs_from_utc_midnight_to_midnight() {
        let s = Period::Day.span(at(2026, 11, 27, 23, 59, 59) + 999);
        assert_eq!(s.start_ms, at(2026, 11, 27, 0, 0, 0));
        assert_eq!(s.end_ms, at(2026, 11, 28, 0, 0, 0));
        let next = Period::Day.span(s.end_ms);
        assert_eq!(next.start_ms, s.end_ms, "midnight belongs to the new day");
        assert_eq!(Period::Day.tag(s.start_ms), "day:20261127");
        assert_eq!(Period::Day.tag(next.start_ms), "day:20261128");
    }

    #[test]
    fn december_rolls_over_to_january() {
        let s = Period::Month.span(at(2026, 12, 31, 23, 59, 59));
        assert_eq!(s.start_ms, at(2026, 12, 1, 0, 0, 0));
        assert_eq!(s.end_ms, at(2027, 1, 1, 0, 0, 0));
        assert_eq!(Period::Month.tag(s.start_ms), "month:202612");
        assert_eq!(Period::Month.tag(s.end_ms), "month:202701");
        let d = Period::Day.span(at(2026, 12, 31, 12, 0, 0));
        assert_eq!(d.end_ms, at(2027, 1, 1, 0, 0, 0));
        assert_eq!(rfc3339(d.end_ms), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn february_has_29_days_in_leap_years_only() {
        let len = |y, m| {
            let s = Period::Month.span(at(y, m, 10, 0, 0, 0));
            (s.end_ms - s.start_ms) / DAY_MS
        };
        assert_eq!(len(2028, 2), 29, "divisible by 4");
        assert_eq!(len(2026, 2), 28);
        assert_eq!(len(2100, 2), 28, "centuries are not leap years");
        assert_eq!(len(2000, 2), 29, "unless divisible by 400");
        assert_eq!(len(2026, 1), 31);
        assert_eq!(len(2026, 4), 30);
        let leap_day = Period::Day.span(at(2028, 2, 29, 6, 0, 0));
        assert_eq!(Period::Day.tag(leap_day.start_ms), "day:20280229");
        assert_eq!(
            Period::Month.span(leap_day.end_ms).start_ms,
            at(2028, 3, 1, 0, 0, 0)
        );
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let w = Period::Window(5_000);
        let s = w.span(12_345);
        assert_eq!((s.start_ms, s.end_ms), (10_000, 15_000));
        assert_eq!(w.tag(s.start_ms), "window5000:2");
        assert_eq!(w.span(15_000).start_ms, 15_000);
        assert_eq!(w.grace(), Duration::from_secs(5));
    }
}
