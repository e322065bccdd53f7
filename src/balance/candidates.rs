//! Step 1 of a choice: which backends of a route's pool may take this call now. Pure: the backends'
//! facts and statuses come in as values, so every case is unit-tested without I/O.

use super::quota::{Assessment, Units};
use super::{BackendStatus, Candidate};
use crate::config::{PriceConfig, Priority};
use crate::protocol::Endpoint;
use std::time::Instant;

/// What Balance needs to know of a call.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    pub endpoint: Endpoint,
    /// The model the client named.
    pub model: &'a str,
    pub stream: bool,
    pub priority: Priority,
    pub est_input_tokens: u64,
    pub est_output_tokens: u64,
    /// Pins the call to a backend by rendezvous hashing.
    pub affinity_key: Option<&'a str>,
    /// A Responses call that only a backend serving Responses itself can take.
    pub needs_responses: bool,
    /// Only this backend may take the call (it holds the state the call continues).
    pub pinned: Option<usize>,
}

impl Want<'_> {
    /// What the call takes of a backend's quota.
    pub fn units(&self) -> Units {
        Units::call(self.est_input_tokens, self.est_output_tokens)
    }
}

/// One backend of the pool as the filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub id: usize,
    /// It serves the wanted model and endpoint.
    pub serves: bool,
    pub status: BackendStatus,
    /// It has a free slot for the call's priority under its concurrency limit.
    pub has_room: bool,
    pub weight: u32,
    pub price: PriceConfig,
    /// Whether the call fits its quota (`None`: nothing known of it).
    pub quota: Option<Assessment>,
}

/// The outcome of filtering: the candidates, and why there are none when there are none.
#[derive(Debug, Default)]
pub struct Pool {
    pub cands: Vec<Candidate>,
    /// Some backend of the route serves this model and endpoint.
    pub any_serves: bool,
    /// Some untried backend is available (healthy, not cooling down), whatever its load.
    pub any_available: bool,
    /// When none is available and every one of them is only cooling down (an upstream's
    /// Retry-After) or paced by its quota, the earliest end of those cooldowns and pacings.
    pub cooldown_end: Option<Instant>,
}

/// The estimated cost in USD of `input` + `output` tokens at `price` (per million tokens).
pub fn cost(price: PriceConfig, input: u64, output: u64) -> f64 {
    (price.input_per_1m * input as f64 + price.output_per_1m * output as f64) / 1e6
}

/// Candidates for `want` among `entries`, skipping `tried`. `health_check`: skip unavailable
/// backends; `capacity`: only backends with a free slot.
pub fn filter(
    entries: impl IntoIterator<Item = Entry>,
    want: &Want<'_>,
    tried: &[usize],
    health_check: bool,
    capacity: bool,
    now: Instant,
) -> Pool {
    let mut pool = Pool::default();
    let mut only_cooling = true;
    for e in entries {
        if !e.serves {
            continue;
        }
        pool.any_serves = true;
        if tried.contains(&e.id) {
            continue;
        }
        let st = e.status;
        if health_check && !st.available {
            match st.cooldown_until.filter(|c| *c > now && st.healthy) {
                Some(c) => pool.cooldown_end = Some(pool.cooldown_end.map_or(c, |x| x.min(c))),
                None => only_cooling = false,
            }
            continue;
        }
        if let Some(q) = e.quota.filter(|q| !q.fits) {
            // Its remaining quota will not cover the call: like a cooldown, until it will.
            let c = now + q.ready_in;
            pool.cooldown_end = Some(pool.cooldown_end.map_or(c, |x| x.min(c)));
            continue;
        }
        pool.any_available = true;
        if capacity && !e.has_room {
            continue;
        }
        let latency_ms = if want.stream {
            st.ttft_ms.or(st.latency_ms)
        } else {
            st.latency_ms
        };
        pool.cands.push(Candidate {
            id: e.id,
            weight: e.weight,
            in_flight: st.in_flight,
            latency_ms,
            cost: cost(e.price, want.est_input_tokens, want.est_output_tokens),
            headroom: e.quota.and_then(|q| q.headroom),
        });
    }
    if pool.any_available || !only_cooling {
        pool.cooldown_end = None;
    }
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(available: bool, healthy: bool, cooldown: Option<Instant>) -> BackendStatus {
        BackendStatus {
            probed: false,
            available,
            healthy,
            in_flight: 0,
            latency_ms: Some(5.0),
            ttft_ms: Some(50.0),
            cooldown_until: cooldown,
        }
    }

    fn entry(id: usize, st: BackendStatus) -> Entry {
        Entry {
            id,
            serves: true,
            status: st,
            has_room: true,
            weight: 1,
            price: PriceConfig {
                input_per_1m: 1.0,
                output_per_1m: 2.0,
            },
            quota: None,
        }
    }

    fn want(stream: bool) -> Want<'static> {
        Want {
            endpoint: Endpoint::Chat,
            model: "m",
            stream,
            priority: Priority::Normal,
            est_input_tokens: 1_000_000,
            est_output_tokens: 500_000,
            affinity_key: None,
            needs_responses: false,
            pinned: None,
        }
    }

    #[test]
    fn skips_what_does_not_serve_was_tried_or_is_unavailable() {
        let now = Instant::now();
        let mut not_serving = entry(0, status(true, true, None));
        not_serving.serves = false;
        let entries = [
            not_serving,
            entry(1, status(true, true, None)),
            entry(2, status(false, false, None)),
            entry(3, status(true, true, None)),
        ];
        let p = filter(entries, &want(false), &[3], true, false, now);
        assert!(p.any_serves && p.any_available);
        assert_eq!(p.cands.iter().map(|c| c.id).collect::<Vec<_>>(), [1]);
        assert_eq!(p.cands[0].cost, 2.0, "1M input at 1 + 0.5M output at 2");
        assert_eq!(p.cands[0].latency_ms, Some(5.0));
        // Without health checks an unavailable backend is still a candidate.
        let p = filter(entries, &want(true), &[], false, false, now);
        assert_eq!(p.cands.len(), 3);
        assert_eq!(p.cands[0].latency_ms, Some(50.0), "streams rank by ttft");
    }

    #[test]
    fn capacity_filters_full_backends_but_they_still_count_as_available() {
        let now = Instant::now();
        let mut full = entry(0, status(true, true, None));
        full.has_room = false;
        let p = filter([full], &want(false), &[], true, true, now);
        assert!(p.cands.is_empty() && p.any_available);
        let p = filter([full], &want(false), &[], true, false, now);
        assert_eq!(p.cands.len(), 1);
    }

    #[test]
    fn cooldown_end_only_when_every_backend_is_just_cooling_down() {
        let now = Instant::now();
        let (a, b) = (now + Duration::from_secs(3), now + Duration::from_secs(1));
        let cooling = [
            entry(0, status(false, true, Some(a))),
            entry(1, status(false, true, Some(b))),
        ];
        let p = filter(cooling, &want(false), &[], true, false, now);
        assert!(!p.any_available);
        assert_eq!(p.cooldown_end, Some(b));
        let mixed = [cooling[0], entry(1, status(false, false, None))];
        assert_eq!(
            filter(mixed, &want(false), &[], true, false, now).cooldown_end,
            None
        );
        let p = filter(
            [cooling[0], entry(1, status(true, true, None))],
            &want(false),
            &[],
            true,
            false,
            now,
        );
        assert_eq!(p.cooldown_end, None);
        assert!(!filter([], &want(false), &[], true, false, now).any_serves);
    }

    #[test]
    fn a_backend_out_of_quota_is_paced_like_a_cooldown() {
        let now = Instant::now();
        let paced = |ms| Assessment {
            fits: false,
            headroom: Some(0.0),
            ready_in: Duration::from_millis(ms),
            short: None,
        };
        let mut a = entry(0, status(true, true, None));
        a.quota = Some(paced(2_000));
        let mut b = entry(1, status(true, true, None));
        b.quota = Some(Assessment {
            headroom: Some(0.5),
            ..Assessment::FITS
        });
        // The other one has headroom: it is the candidate.
        let p = filter([a, b], &want(false), &[], true, true, now);
        assert_eq!(p.cands.iter().map(|c| c.id).collect::<Vec<_>>(), [1]);
        assert_eq!(p.cands[0].headroom, Some(0.5));
        assert_eq!(p.cooldown_end, None);
        // Every one is paced or cooling down: back at the earliest.
        let mut c = entry(1, status(true, true, None));
        c.quota = Some(paced(500));
        let p = filter([a, c], &want(false), &[], true, false, now);
        assert!(!p.any_available && p.cands.is_empty());
        assert_eq!(p.cooldown_end, Some(now + Duration::from_millis(500)));
        let cooling = entry(1, status(false, true, Some(now + Duration::from_secs(1))));
        let p = filter([a, cooling], &want(false), &[], true, false, now);
        assert_eq!(p.cooldown_end, Some(now + Duration::from_secs(1)));
    }
}
