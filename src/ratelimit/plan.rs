//! A tenant's global limits as the Lua scripts want them: the bucket keys in Redis, the script
//! arguments, and the script's reply turned into a [`Decision`].

use super::Decision;
use super::lease::Lease;
use super::local::Quotas;
use super::overlimit::Hit;
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
    pub(super) keys: [String; 2],
    pub(super) rpm: u32,
    pub(super) burst: u32,
    pub(super) tpm: u64,
    /// Request tokens taken ahead (request-only limits): see `lease`.
    pub(super) lease: Lease,
}

impl Plan {
    pub(super) fn new(prefix: &str, tenant: &str, q: &Quotas) -> Option<Plan> {
        if q.requests_per_minute.is_none() && q.tokens_per_minute.is_none() {
            return None;
        }
        let rpm = q.requests_per_minute.unwrap_or(0);
        Some(Plan {
            keys: bucket_keys(prefix, tenant),
            rpm,
            // Same default as the local limiter: one second's worth.
            burst: q.burst.unwrap_or(rpm.div_ceil(60).max(1)).max(1),
            tpm: q.tokens_per_minute.unwrap_or(0),
            lease: Lease::default(),
        })
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
