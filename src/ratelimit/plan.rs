//! A tenant's global limits as the Lua scripts want them: the bucket keys in Redis, the script
//! arguments, and the script's reply turned into a [`Decision`].

use super::Decision;
use super::contention::Contention;
use super::lease::Lease;
use super::local::{Levels, Quotas};
use super::overlimit::Hit;
use ::redis::{Script, ScriptInvocation};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The Redis keys of a tenant's buckets: `<prefix>:{<tenant>}:req` and `<prefix>:{<tenant>}:tok`.
/// Both carry the hash tag `{<tenant>}`, so they live in one Redis Cluster slot. Braces and `%` in
/// the prefix or the tenant id are percent-encoded so the tag is always exactly the tenant.
pub fn bucket_keys(prefix: &str, tenant: &str) -> [String; 2] {
    let (p, t) = (escape(prefix), escape(tenant));
    [format!("{p}:{{{t}}}:req"), format!("{p}:{{{t}}}:tok")]
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// One tenant's global limits, as the script's ARGV wants them (0 = no such limit).
#[derive(Debug)]
pub(super) struct Plan {
    /// What it was built from (a reload that changes them builds a new plan).
    pub(super) quotas: Quotas,
    pub(super) keys: [String; 2],
    pub(super) rpm: u32,
    pub(super) burst: u32,
    pub(super) tpm: u64,
    /// Request tokens taken ahead (request-only limits): see `lease`.
    pub(super) lease: Lease,
    /// The global buckets' levels in the last reply (what the fallback starts from).
    last: Mutex<Option<Levels>>,
    /// Other nodes' bookings between ours: when to ask again after a booking.
    pub(super) contention: Contention,
    /// The last reply refused or booked ahead (or nothing is known yet): the tenant is at its limit
    /// and waiting requests take turns calling Redis ([`Plan::flight`]).
    contended: AtomicBool,
    /// Held across a waiting request's Redis call while the tenant is contended: requests that
    /// came together (a node resuming after a pause, a burst) ask one after another, each seeing
    /// the over-limit cache the previous answer left, instead of all asking for the same slot.
    pub(super) flight: tokio::sync::Mutex<()>,
    /// The longest wait budget a request of this tenant asked with (ms): how deep bookings may put
    /// the buckets in debt, and so how deep a charge of fallback admissions may.
    horizon_ms: AtomicU64,
    /// The breaker group answering for this tenant (see `group`).
    pub(super) group: usize,
}

impl Plan {
    pub(super) fn new(prefix: &str, tenant: &str, q: &Quotas) -> Option<Plan> {
        if q.requests_per_minute.is_none() && q.tokens_per_minute.is_none() {
            return None;
        }
        let rpm = q.requests_per_minute.unwrap_or(0);
        Some(Plan {
            quotas: *q,
            keys: bucket_keys(prefix, tenant),
            rpm,
            // Same default as the local limiter: one second's worth.
            burst: q.burst.unwrap_or(rpm.div_ceil(60).max(1)).max(1),
            tpm: q.tokens_per_minute.unwrap_or(0),
            lease: Lease::default(),
            last: Mutex::new(None),
            contention: Contention::default(),
            contended: AtomicBool::new(true),
            flight: tokio::sync::Mutex::new(()),
            horizon_ms: AtomicU64::new(0),
            group: 0,
        })
    }

    /// `lua/adjust.lua` for this tenant: give back (positive) or charge (negative) `amounts` of
    /// (requests, tokens), after capping the buckets at `ceiling` where one is given.
    pub(super) fn adjust<'s>(
        &self,
        script: &'s Script,
        amounts: (i64, i64),
        ceiling: (Option<i64>, Option<i64>),
    ) -> ScriptInvocation<'s> {
        let (floor_r, floor_t) = self.debt_floor();
        let cap = |c: Option<i64>| c.map_or(String::new(), |c| c.to_string());
        let mut inv = script.prepare_invoke();
        inv.key(&self.keys[0])
            .key(&self.keys[1])
            .arg(self.rpm)
            .arg(self.burst)
            .arg(amounts.0)
            .arg(self.tpm)
            .arg(amounts.1)
            .arg(floor_r)
            .arg(floor_t)
            .arg(cap(ceiling.0))
            .arg(cap(ceiling.1));
        inv
    }

    /// A request asked with this wait budget.
    pub(super) fn asked_with(&self, max_wait: Duration) {
        let ms = max_wait.as_millis() as u64;
        if ms > self.horizon_ms.load(Ordering::Relaxed) {
            self.horizon_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// How far below empty bookings may have put the (requests, tokens) buckets.
    pub(super) fn debt_floor(&self) -> (i64, i64) {
        let ms = self.horizon_ms.load(Ordering::Relaxed) as f64;
        let per_ms = |per_minute: f64| (ms * per_minute / 60_000.0).ceil() as i64;
        (per_ms(self.rpm as f64), per_ms(self.tpm as f64))
    }

    /// How far apart bookings of this ask come out: one request's interval, or for a token-only
    /// limit the time the bucket takes to refill `tokens` (None: nothing to space).
    pub(super) fn step(&self, tokens: u64) -> Option<Duration> {
        if self.rpm > 0 {
            Some(Duration::from_secs_f64(60.0 / self.rpm as f64))
        } else if self.tpm > 0 && tokens > 0 {
            Some(Duration::from_secs_f64(
                tokens as f64 * 60.0 / self.tpm as f64,
            ))
        } else {
            None
        }
    }

    /// Whether waiting requests of this tenant take turns calling Redis.
    pub(super) fn contended(&self) -> bool {
        self.contended.load(Ordering::Relaxed)
    }

    /// Remember the global levels a reply reports (`tokens_asked`: the token bucket was consulted),
    /// and whether the tenant is at its limit (refused, or booked a slot ahead).
    pub(super) fn record(&self, v: &[i64], tokens_asked: bool) {
        if v.len() < 12 {
            return;
        }
        let at_limit = v[0] != 1 || v.get(8).is_some_and(|w| *w > 0);
        self.contended.store(at_limit, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let l = last.get_or_insert(Levels::EMPTY);
        if self.rpm > 0 {
            l.requests = Some(v[10] as f64);
        }
        if tokens_asked {
            l.tokens = Some(v[11] as f64);
        }
    }

    /// The global levels last seen (None: this node never heard of the tenant's buckets).
    pub(super) fn last_levels(&self) -> Option<Levels> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The script's reply (see `lua/token_bucket.lua`) as a decision.
    pub(super) fn decision(&self, v: &[i64], tokens_asked: bool) -> Decision {
        let ms = |x: i64| Duration::from_millis(x.max(0) as u64);
        let allowed = v[0] == 1;
        let mut d = Decision {
            allowed,
            ..Decision::default()
        };
        if self.rpm > 0 {
            d.limit = Some(self.rpm);
            d.remaining = Some(v[1].clamp(0, u32::MAX as i64) as u32);
            d.reset = ms(v[4]);
        }
        if tokens_asked {
            d.tokens_limit = Some(self.tpm);
            d.tokens_remaining = Some(v[2].max(0) as u64);
            d.tokens_reset = ms(v[5]);
        }
        if !allowed {
            d.retry_after = Some(ms(v[3]));
        } else if v.len() >= 9 {
            d.wait = ms(v[8]);
        }
        d
    }

    /// A refusal from the over-limit cache (the emptied bucket reported empty, full again after one
    /// whole refill).
    pub(super) fn cached(&self, hit: Hit, tokens_asked: bool) -> Decision {
        let mut d = Decision {
            allowed: false,
            retry_after: Some(hit.wait),
            ..Decision::default()
        };
        if self.rpm > 0 {
            d.limit = Some(self.rpm);
            if hit.requests {
                d.remaining = Some(0);
                d.reset = Duration::from_secs_f64(60.0 * self.burst as f64 / self.rpm as f64);
            }
        }
        if tokens_asked {
            d.tokens_limit = Some(self.tpm);
            if hit.tokens {
                d.tokens_remaining = Some(0);
                d.tokens_reset = Duration::from_secs(60);
            }
        }
        d
    }
}
