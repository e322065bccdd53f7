//! What a run measured, against what the bucket allows.

use super::{Answer, Counters, Fault, Limits, Outcome, Unit};

/// The sliding windows reported, in seconds (a window longer than the run is left out).
pub const WINDOWS: [f64; 3] = [1.0, 10.0, 60.0];

/// The most admitted in any sliding window of `secs` (requests, or their tokens for a token limit),
/// and the bucket's allowance.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub secs: f64,
    pub max: f64,
    pub allowed: f64,
}

impl Window {
    pub fn ratio(&self) -> f64 {
        self.max / self.allowed
    }
}

#[derive(Debug)]
pub struct Report {
    pub fault: Fault,
    pub limits: Limits,
    /// How long requests were sent.
    pub seconds: f64,
    pub sent: usize,
    /// 200 answers.
    pub admitted: usize,
    /// 429 answers.
    pub limited: usize,
    pub server_errors: usize,
    /// Other statuses (neither 200, 429 nor 5xx).
    pub other: usize,
    /// No answer: refused or reset (a killed node).
    pub failed: usize,
    /// Failed after the node held them a while (it died under them).
    pub held_and_lost: usize,
    /// No answer within the client timeout.
    pub timed_out: usize,
    pub windows: Vec<Window>,
    /// What one admission may add to a window beyond its allowance: one request, or the largest
    /// one's tokens (see [`Report::breaches`]).
    pub grain: f64,
    /// Redis calls made by all nodes during the run.
    pub redis_calls: f64,
    /// Of which failed (timed out or refused).
    pub redis_errors: f64,
    /// p99 of send → response head of admitted requests, in milliseconds.
    pub p99_ms: f64,
    /// The fault's actions, in seconds after the start.
    pub events: Vec<(f64, String)>,
}

impl Report {
    pub fn new(
        fault: Fault,
        limits: Limits,
        seconds: f64,
        outcomes: &[Outcome],
        [redis_calls, redis_errors]: Counters,
        events: Vec<(f64, String)>,
    ) -> Report {
        let status = |f: fn(u16) -> bool| {
            outcomes
                .iter()
                .filter(|o| matches!(o.answer, Answer::Status(s) if f(s)))
                .count()
        };
        let ok: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.answer == Answer::Status(200))
            .collect();
        // When the gateway admitted a request, as near as the client sees it: the upstream answers
        // at once, so the response head comes right after admission (queued ones included); and
        // what it took from the bucket.
        let weight = |o: &Outcome| match limits.unit {
            Unit::Requests => 1.0,
            Unit::Tokens => o.tokens as f64,
        };
        let mut points: Vec<(f64, f64)> = ok.iter().map(|o| (o.done, weight(o))).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let windows = WINDOWS
            .iter()
            .filter(|w| **w <= seconds)
            .map(|&secs| Window {
                secs,
                max: largest_sum(&points, secs),
                allowed: limits.allowed(secs),
            })
            .collect();
        let grain = points.iter().map(|p| p.1).fold(1.0, f64::max);
        let mut latencies: Vec<f64> = ok.iter().map(|o| (o.done - o.sent) * 1000.0).collect();
        latencies.sort_by(f64::total_cmp);
        Report {
            fault,
            limits,
            seconds,
            sent: outcomes.len(),
            admitted: ok.len(),
            limited: status(|s| s == 429),
            server_errors: status(|s| s >= 500),
            other: status(|s| s != 200 && s != 429 && s < 500),
            failed: outcomes
                .iter()
                .filter(|o| o.answer == Answer::Failed)
                .count(),
            // Held by a node that then died (a refused connection fails at once): such a request
            // may have booked its slot, so it counts beside the 200s for Redis calls per admission.
            held_and_lost: outcomes
                .iter()
                .filter(|o| o.answer == Answer::Failed && o.done - o.sent >= 0.05)
                .count(),
            timed_out: outcomes
                .iter()
                .filter(|o| o.answer == Answer::TimedOut)
                .count(),
            windows,
            grain,
            redis_calls,
            redis_errors,
            p99_ms: percentile(&latencies, 0.99),
            events,
        }
    }

    /// Redis calls per admitted request: the 200s, and the requests a killed node held (they may
    /// have booked a slot before it died).
    pub fn calls_per_admitted(&self) -> f64 {
        self.redis_calls / (self.admitted + self.held_and_lost).max(1) as f64
    }

    /// `fault` B=`burst` wait=`max_wait` (or `tokens`): the row's name.
    pub fn name(&self) -> String {
        let wait = self.limits.max_wait_ms as f64 / 1000.0;
        let bucket = match self.limits.unit {
            Unit::Requests => format!("B={}", self.limits.burst),
            Unit::Tokens => "tokens".into(),
        };
        format!("{} {bucket} wait={wait}s", self.fault.name())
    }

    /// What breaks the bounds: a window above `factor` × its allowance, any 5xx, and (for
    /// queueing runs) more than `calls_per_queued` Redis calls per admitted request.
    ///
    /// A window may also hold two admissions more than its allowance whatever `factor` is
    /// ([`Report::grain`] each): admissions are seen through response times, a few milliseconds
    /// later and not all equally late (tens of milliseconds on a busy machine), which can move an
    /// admission at either end into a window that is full to the allowance (at 10 admissions a
    /// second a 1 s window allows 20; × 1.01 would leave no room).
    /// Windows shorter than `shortest` seconds are reported, not checked.
    pub fn breaches(&self, factor: f64, calls_per_queued: f64, shortest: f64) -> Vec<String> {
        let mut out: Vec<String> = self
            .windows
            .iter()
            .filter(|w| w.secs >= shortest)
            .filter(|w| w.max > (w.allowed * factor).max(w.allowed + 2.0 * self.grain))
            .map(|w| {
                format!(
                    "{} s window: {} admitted, allowed {:.0} × {factor} ({:.3}×)",
                    w.secs,
                    w.max,
                    w.allowed,
                    w.ratio()
                )
            })
            .collect();
        if self.server_errors > 0 {
            out.push(format!("{} 5xx answers", self.server_errors));
        }
        if self.limits.max_wait_ms > 0 && self.calls_per_admitted() > calls_per_queued {
            out.push(format!(
                "{:.2} Redis calls per admitted request while queueing (at most {calls_per_queued})",
                self.calls_per_admitted()
            ));
        }
        out
    }

    pub fn row(&self) -> String {
        let windows: Vec<String> = WINDOWS
            .iter()
            .map(|&secs| match self.windows.iter().find(|w| w.secs == secs) {
                Some(w) => format!("{:>4.0}/{:<4.0} {:>5.2}", w.max, w.allowed, w.ratio()),
                None => format!("{:>15}", "-"),
            })
            .collect();
        format!(
            "{:<30} {:>5} {:>5} {:>5} {:>4} {:>4} {} {:>9.2} {:>7.0} {:>8.0}",
            self.name(),
            self.sent,
            self.admitted,
            self.limited,
            self.server_errors,
            self.failed + self.timed_out + self.other,
            windows.join(" "),
            self.calls_per_admitted(),
            self.redis_errors,
            self.p99_ms,
        )
    }

    /// The fault's actions, one line.
    pub fn timeline(&self) -> String {
        let e: Vec<String> = self
            .events
            .iter()
            .map(|(t, what)| format!("{t:.2}s {what}"))
            .collect();
        format!("{}: {}", self.name(), e.join(", "))
    }
}

/// The reports as a table, with each run's fault timeline under it.
pub fn table(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<30} {:>5} {:>5} {:>5} {:>4} {:>4} {:>15} {:>15} {:>15} {:>9} {:>7} {:>8}\n",
        "scenario",
        "sent",
        "200",
        "429",
        "5xx",
        "err",
        "1s max/allow ×",
        "10s max/allow ×",
        "60s max/allow ×",
        "redis/200",
        "rerr",
        "p99 ms"
    );
    for r in reports {
        out.push_str(&r.row());
        out.push('\n');
    }
    out.push_str(
        "(err: no answer, or a status other than 200, 429 and 5xx; window: largest count of 200s / \
         burst + rate × window, ratio; redis/200: Redis calls per 200; rerr: failed Redis calls; \
         p99: send to response head of 200s)\n",
    );
    for r in reports.iter().filter(|r| !r.events.is_empty()) {
        out.push_str(&r.timeline());
        out.push('\n');
    }
    out
}

/// The most `times` (sorted) that fit in a closed window of `secs`.
pub fn largest_window(times: &[f64], secs: f64) -> usize {
    let points: Vec<(f64, f64)> = times.iter().map(|&t| (t, 1.0)).collect();
    largest_sum(&points, secs) as usize
}

/// The largest sum of weights of `(time, weight)` points (sorted by time) in a closed window of
/// `secs`.
pub fn largest_sum(points: &[(f64, f64)], secs: f64) -> f64 {
    let (mut best, mut sum) = (0.0f64, 0.0);
    let mut start = 0;
    for &(t, w) in points {
        sum += w;
        while t - points[start].0 > secs {
            sum -= points[start].1;
            start += 1;
        }
        best = best.max(sum);
    }
    best
}

/// The `q` quantile of sorted `v` (nearest rank); 0 when empty.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
