//! A backend's quota as its provider reports it (rate-limit headers), and whether a call fits in it.
//! Pure: observations, what this node sent since, and the time come in as values.
//!
//! An [`Observation`] is what one answer said, per [`QuotaKind`]: the limit, what remains and when
//! the window is whole again, stamped with the moment the request was sent (the provider counted it
//! then). Providers refill continuously (token buckets): between the observation and the reset,
//! the estimate grows linearly from `remaining` to `limit`; after the reset the window no longer
//! constrains (the next answer says again). From that estimate Sluice takes off what this node sent
//! since the observation ([`Ledger`]), and in a cluster divides it by the number of nodes using the
//! backend (`share`): each node paces itself to its part, so together they stop before the wall.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

/// What a provider limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    Requests = 0,
    Tokens = 1,
    InputTokens = 2,
    OutputTokens = 3,
}

pub const KINDS: [QuotaKind; 4] = [
    QuotaKind::Requests,
    QuotaKind::Tokens,
    QuotaKind::InputTokens,
    QuotaKind::OutputTokens,
];

impl QuotaKind {
    /// The metric label and the gossip field.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Requests => "requests",
            QuotaKind::Tokens => "tokens",
            QuotaKind::InputTokens => "input_tokens",
            QuotaKind::OutputTokens => "output_tokens",
        }
    }

    fn parse(s: &str) -> Option<QuotaKind> {
        KINDS.into_iter().find(|k| k.as_str() == s)
    }
}

/// One limit as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The whole window; unknown when the provider did not say.
    pub limit: Option<u64>,
    pub remaining: u64,
    /// Milliseconds after the observation at which the window is whole again.
    pub reset_ms: u64,
}

/// What one answer said of the backend's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// Unix ms: when the request it answered was sent.
    pub at_ms: u64,
    /// By [`QuotaKind`] index.
    pub windows: [Option<Window>; 4],
}

impl Observation {
    pub fn window(&self, kind: QuotaKind) -> Option<Window> {
        self.windows[kind as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.windows.iter().all(Option::is_none)
    }

    /// Every window has reset by `now_ms`: it says nothing any more.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.windows
            .iter()
            .flatten()
            .all(|w| now_ms >= self.at_ms.saturating_add(w.reset_ms))
    }

    /// The gossip value: `t=<at_ms>;requests=<limit>/<remaining>/<reset_ms>;…` (limit `-` unknown).
    pub fn encode(&self) -> String {
        let mut s = format!("t={}", self.at_ms);
        for kind in KINDS {
            if let Some(w) = self.window(kind) {
                let limit = w.limit.map_or("-".to_string(), |l| l.to_string());
                let _ = write!(
                    s,
                    ";{}={limit}/{}/{}",
                    kind.as_str(),
                    w.remaining,
                    w.reset_ms
                );
            }
        }
        s
    }

    /// The inverse of [`encode`](Self::encode); unknown fields are skipped, a malformed one is `None`.
    pub fn decode(value: &str) -> Option<Observation> {
        let mut obs = Observation::default();
        let mut at = None;
        for part in value.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=')?;
            if k == "t" {
                at = Some(v.parse().ok()?);
                continue;
            }
            let Some(kind) = QuotaKind::parse(k) else {
                continue;
            };
            let mut it = v.split('/');
            let (limit, remaining, reset) = (it.next()?, it.next()?, it.next()?);
            obs.windows[kind as usize] = Some(Window {
                limit: if limit == "-" {
                    None
                } else {
                    Some(limit.parse().ok()?)
                },
                remaining: remaining.parse().ok()?,
                reset_ms: reset.parse().ok()?,
            });
        }
        obs.at_ms = at?;
        Some(obs)
    }
}

/// Units of each kind: what a call needs, or what this node sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Units {
    pub requests: u64,
    pub input: u64,
    pub output: u64,
}

impl Units {
    /// One request of `input` + `output` estimated tokens.
    pub fn call(input: u64, output: u64) -> Units {
        Units {
            requests: 1,
            input,
            output,
        }
    }

    pub fn of(&self, kind: QuotaKind) -> u64 {
        match kind {
            QuotaKind::Requests => self.requests,
            QuotaKind::Tokens => self.input.saturating_add(self.output),
            QuotaKind::InputTokens => self.input,
            QuotaKind::OutputTokens => self.output,
        }
    }

    fn plus(self, o: Units) -> Units {
        Units {
            requests: self.requests.saturating_add(o.requests),
            input: self.input.saturating_add(o.input),
            output: self.output.saturating_add(o.output),
        }
    }

    fn minus(self, o: Units) -> Units {
        Units {
            requests: self.requests.saturating_sub(o.requests),
            input: self.input.saturating_sub(o.input),
            output: self.output.saturating_sub(o.output),
        }
    }
}

/// The observation a node paces by, and how many nodes share the backend's quota.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Basis {
    pub obs: Observation,
    /// This node plus the peers that use the backend (≥ 1).
    pub share: u32,
}

impl Basis {
    /// For `/admin/cluster`: per window, what was reported and this node's estimate of its part
    /// now (`spent`: what it sent since the observation).
    pub fn to_json(&self, spent: Units, now_ms: u64) -> serde_json::Value {
        let elapsed = now_ms.saturating_sub(self.obs.at_ms);
        let mut windows = serde_json::Map::new();
        for kind in KINDS {
            let Some(w) = self.obs.window(kind) else {
                continue;
            };
            let estimate = level(&w, elapsed).map(|(pool, _)| {
                (pool / f64::from(self.share.max(1)) - spent.of(kind) as f64)
                    .max(0.0)
                    .floor()
            });
            windows.insert(
                kind.as_str().into(),
                serde_json::json!({
                    "limit": w.limit,
                    "remaining": w.remaining,
                    "reset_in_ms": w.reset_ms.saturating_sub(elapsed),
                    "estimate": estimate,
                }),
            );
        }
        serde_json::json!({
            "observed_ms_ago": elapsed,
            "share": self.share,
            "windows": windows,
        })
    }
}

/// Whether a call fits in a backend's quota now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub fits: bool,
    /// The smallest estimated fraction of a window left (0..1), over windows with a known limit.
    pub headroom: Option<f64>,
    /// When it does not fit: how long until it will (at the latest, the window's reset).
    pub ready_in: Duration,
    /// The window that does not cover the call, and its estimated units left for this node.
    pub short: Option<(QuotaKind, f64)>,
}

impl Assessment {
    pub const FITS: Assessment = Assessment {
        fits: true,
        headroom: None,
        ready_in: Duration::ZERO,
        short: None,
    };
}

/// The units a window holds `elapsed_ms` after its observation (linear refill to the limit), and
/// the refill rate per ms; `None` once it has reset.
fn level(w: &Window, elapsed_ms: u64) -> Option<(f64, f64)> {
    if elapsed_ms >= w.reset_ms {
        return None;
    }
    let rate = w.limit.map_or(0.0, |l| {
        l.saturating_sub(w.remaining) as f64 / w.reset_ms as f64
    });
    Some((w.remaining as f64 + rate * elapsed_ms as f64, rate))
}

/// Whether `need` fits this node's part of the quota at `now_ms`, having sent `spent` since the
/// observation.
pub fn assess(basis: &Basis, spent: Units, need: Units, now_ms: u64) -> Assessment {
    let share = f64::from(basis.share.max(1));
    let elapsed = now_ms.saturating_sub(basis.obs.at_ms);
    let mut out = Assessment::FITS;
    for kind in KINDS {
        let Some(w) = basis.obs.window(kind) else {
            continue;
        };
        let Some((pool, rate)) = level(&w, elapsed) else {
            continue;
        };
        let sent = spent.of(kind) as f64;
        let mine = pool / share - sent;
        if let Some(l) = w.limit.filter(|l| *l > 0) {
            let h = ((pool - sent) / l as f64).clamp(0.0, 1.0);
            out.headroom = Some(out.headroom.map_or(h, |x: f64| x.min(h)));
        }
        let n = need.of(kind) as f64;
        if mine >= n {
            continue;
        }
        out.fits = false;
        let to_reset = (w.reset_ms - elapsed) as f64;
        let wait = if rate > 0.0 {
            (((n + sent) * share - pool) / rate).min(to_reset)
        } else {
            to_reset
        };
        let wait = Duration::from_millis(wait.max(1.0).ceil() as u64);
        if wait >= out.ready_in {
            out.ready_in = wait;
            out.short = Some((kind, mine.max(0.0)));
        }
    }
    out
}

/// Wall-clock now in unix ms (observations travel between nodes on the wall clock).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One backend's quota as this node knows it: the latest observation it made, and its sends.
#[derive(Debug, Default)]
pub struct Local {
    pub obs: Option<Observation>,
    pub ledger: Ledger,
}

impl Local {
    /// Keep `obs` if it is at least as recent as the one held (answers may arrive out of order).
    pub fn observe(&mut self, obs: Observation) -> bool {
        if self.obs.is_some_and(|o| o.at_ms > obs.at_ms) {
            return false;
        }
        self.obs = Some(obs);
        self.ledger
            .forget_until(obs.at_ms.saturating_sub(LEDGER_KEEP_MS));
        true
    }
}

/// Sends older than this before the latest observation are forgotten (a peer's observation may be
/// a little older than this node's own).
const LEDGER_KEEP_MS: u64 = 60_000;

/// What this node sent to a backend, by time: how much since a given moment.
#[derive(Debug, Default)]
pub struct Ledger {
    /// (unix ms, cumulative units up to and including that send), oldest first.
    sends: VecDeque<(u64, Units)>,
    /// Cumulative units of the sends no longer kept.
    base: Units,
    total: Units,
}

/// Sends kept: enough for a few minutes of heavy traffic to one backend.
const LEDGER_CAP: usize = 8192;

impl Ledger {
    pub fn record(&mut self, at_ms: u64, units: Units) {
        self.total = self.total.plus(units);
        if self.sends.len() == LEDGER_CAP
            && let Some((_, cum)) = self.sends.pop_front()
        {
            self.base = cum;
        }
        self.sends.push_back((at_ms, self.total));
    }

    /// Units sent after `at_ms` (a send in the same millisecond counts as before it).
    pub fn since(&self, at_ms: u64) -> Units {
        let i = self.sends.partition_point(|(t, _)| *t <= at_ms);
        let before = if i == 0 {
            self.base
        } else {
            self.sends[i - 1].1
        };
        self.total.minus(before)
    }

    /// Forget the sends at or before `at_ms` (no observation that old will be asked about again).
    pub fn forget_until(&mut self, at_ms: u64) {
        while let Some(&(t, cum)) = self.sends.front() {
            if t > at_ms {
                break;
            }
            self.base = cum;
            self.sends.pop_front();
        }
    }
}

#[cfg(test)]
#[path = "quota_tests.rs"]
mod tests;
