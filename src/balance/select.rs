//! Choosing one candidate with an [`Algorithm`].

use super::Algorithm;
use std::cmp::Ordering;
use std::collections::HashMap;

/// Relative tolerance under which two latencies or costs count as a tie.
const TIE_EPSILON: f64 = 1e-9;
/// Latency floor for [`Algorithm::Adaptive`] scores, so a 0 ms estimate
/// does not erase the load term.
const MIN_LATENCY_MS: f64 = 1e-3;
/// Latency assumed by [`Algorithm::Adaptive`] when no candidate has a sample.
const DEFAULT_LATENCY_MS: f64 = 1.0;
/// Quota headroom floor for the load scores: a backend at 1% of its quota or less counts as 100×
/// as loaded as one with its whole quota.
const MIN_HEADROOM: f64 = 0.01;

/// One eligible backend as the selector sees it (health filtering is done by
/// the caller with [`eligible`](super::eligible)).
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Index of the backend in the gateway's table; selectors return this.
    pub id: usize,
    /// Relative capacity, >= 1 (0 is treated as 1).
    pub weight: u32,
    /// Requests currently outstanding on this backend.
    pub in_flight: u32,
    /// Peak-EWMA latency (time to first token for streams); `None` = no
    /// sample yet. NaN is treated as `None`.
    pub latency_ms: Option<f64>,
    /// Estimated cost of this request on this backend (price × estimated
    /// tokens). NaN is treated as infinitely expensive.
    pub cost: f64,
    /// Estimated fraction of its quota left (0..1), from the provider's rate-limit headers;
    /// `None` = unknown, counts as whole. The load-based algorithms divide their load by it.
    pub headroom: Option<f64>,
}

impl Candidate {
    /// A candidate with weight 1, nothing in flight, no latency sample, cost 0.
    pub fn new(id: usize) -> Self {
        Candidate {
            id,
            weight: 1,
            in_flight: 0,
            latency_ms: None,
            cost: 0.0,
            headroom: None,
        }
    }

    /// The headroom as a divisor of load: in `[MIN_HEADROOM, 1]`, 1 when unknown.
    fn quota_factor(&self) -> f64 {
        self.headroom
            .filter(|h| !h.is_nan())
            .map_or(1.0, |h| h.clamp(MIN_HEADROOM, 1.0))
    }

    fn weight(&self) -> u64 {
        u64::from(self.weight.max(1))
    }

    fn latency(&self) -> Option<f64> {
        self.latency_ms.filter(|l| !l.is_nan())
    }

    fn cost(&self) -> f64 {
        if self.cost.is_nan() {
            f64::INFINITY
        } else {
            self.cost
        }
    }
}

/// Per-pool mutable selector state: the round-robin cursor (also used to
/// spread ties) and the smooth-weighted-round-robin current weights, keyed by
/// backend id so that ejections and returns do not disturb the others.
#[derive(Debug, Default)]
pub struct PoolState {
    /// Id of the last backend handed out by a round-robin step.
    last: Option<usize>,
    /// Smooth WRR "current weight" of each backend id.
    current: HashMap<usize, i64>,
}

impl PoolState {
    /// Fresh state, same as `PoolState::default()`.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Choose one candidate and return its `id`; `None` only when `cands` is
/// empty.
///
/// `rand01` yields uniform randoms in `[0, 1)`; only
/// [`Algorithm::Adaptive`] draws from it (two draws per call).
pub fn select(
    alg: Algorithm,
    cands: &[Candidate],
    state: &mut PoolState,
    rand01: &mut dyn FnMut() -> f64,
) -> Option<usize> {
    if cands.is_empty() {
        return None;
    }
    match alg {
        Algorithm::RoundRobin => round_robin(state, cands.iter().map(|c| c.id)),
        Algorithm::Weighted => smooth_weighted(cands, state),
        Algorithm::LeastConnections => least_connections(cands, state),
        Algorithm::LeastLatency => least_latency(cands.iter().collect(), state),
        Algorithm::LeastCost => least_cost(cands, state),
        Algorithm::Adaptive => adaptive(cands, rand01),
    }
}

/// The smallest id after the cursor, wrapping to the smallest id overall.
/// Working on ids rather than positions keeps the rotation fair when the set
/// changes between calls.
fn round_robin(state: &mut PoolState, ids: impl Iterator<Item = usize>) -> Option<usize> {
    let mut lowest: Option<usize> = None;
    let mut after: Option<usize> = None;
    for id in ids {
        lowest = Some(lowest.map_or(id, |l| l.min(id)));
        if state.last.is_none_or(|last| id > last) {
            after = Some(after.map_or(id, |a| a.min(id)));
        }
    }
    let pick = after.or(lowest)?;
    state.last = Some(pick);
    Some(pick)
}

/// nginx's smooth weighted round robin: every candidate gains its weight,
/// the highest current weight wins and pays back the total.
fn smooth_weighted(cands: &[Candidate], state: &mut PoolState) -> Option<usize> {
    state
        .current
        .retain(|id, _| cands.iter().any(|c| c.id == *id));
    let mut total: i64 = 0;
    let mut best: Option<(i64, usize)> = None;
    for c in cands {
        let w = c.weight() as i64;
        total += w;
        let cur = state.current.entry(c.id).or_insert(0);
        *cur += w;
        if best.is_none_or(|(bw, bid)| *cur > bw || (*cur == bw && c.id < bid)) {
            best = Some((*cur, c.id));
        }
    }
    let (_, id) = best?;
    if let Some(cur) = state.current.get_mut(&id) {
        *cur -= total;
    }
    Some(id)
}

/// `a.in_flight / a.weight` against `b.in_flight / b.weight`, exactly.
fn load_cmp(a: &Candidate, b: &Candidate) -> Ordering {
    (u64::from(a.in_flight) * b.weight()).cmp(&(u64::from(b.in_flight) * a.weight()))
}

/// Fewest in flight per weight; with quota known, `(in_flight + 1) / (weight × headroom)` so a
/// backend near the end of its quota is not "least loaded".
fn least_connections(cands: &[Candidate], state: &mut PoolState) -> Option<usize> {
    if cands.iter().any(|c| c.headroom.is_some()) {
        let score =
            |c: &Candidate| (f64::from(c.in_flight) + 1.0) / (c.weight() as f64 * c.quota_factor());
        let min = cands.iter().map(score).min_by(f64::total_cmp)?;
        let tied = cands.iter().filter(|c| near(score(c), min)).map(|c| c.id);
        return round_robin(state, tied);
    }
    let min = cands.iter().min_by(|a, b| load_cmp(a, b))?;
    let tied = cands
        .iter()
        .filter(|c| load_cmp(c, min) == Ordering::Equal)
        .map(|c| c.id);
    round_robin(state, tied)
}

/// Equal within [`TIE_EPSILON`] relative (infinities equal themselves).
fn near(a: f64, b: f64) -> bool {
    a == b
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= TIE_EPSILON * a.abs().max(b.abs()))
}

/// Unsampled candidates first, else the lowest latency; ties by fewest in
/// flight, then round robin.
fn least_latency(cands: Vec<&Candidate>, state: &mut PoolState) -> Option<usize> {
    let unknown: Vec<&Candidate> = cands
        .iter()
        .copied()
        .filter(|c| c.latency().is_none())
        .collect();
    let pool = if unknown.is_empty() {
        let min = cands
            .iter()
            .filter_map(|c| c.latency())
            .min_by(f64::total_cmp)?;
        cands
            .into_iter()
            .filter(|c| c.latency().is_some_and(|l| near(l, min)))
            .collect()
    } else {
        unknown
    };
    let fewest = pool.iter().map(|c| c.in_flight).min()?;
    round_robin(
        state,
        pool.iter().filter(|c| c.in_flight == fewest).map(|c| c.id),
    )
}

/// Lowest cost; ties by [`least_latency`] among the tied.
fn least_cost(cands: &[Candidate], state: &mut PoolState) -> Option<usize> {
    let min = cands.iter().map(Candidate::cost).min_by(f64::total_cmp)?;
    let tied = cands.iter().filter(|c| near(c.cost(), min)).collect();
    least_latency(tied, state)
}

/// Index in `0..n` from a draw in `[0, 1)`; out-of-range draws are clamped.
fn index(r: f64, n: usize) -> usize {
    // `as` saturates: NaN and negatives give 0.
    ((r * n as f64) as usize).min(n - 1)
}

/// Power of two choices: two distinct random candidates, the lower of
/// `latency × (in_flight + 1) / (weight × quota headroom)` wins.
fn adaptive(cands: &[Candidate], rand01: &mut dyn FnMut() -> f64) -> Option<usize> {
    let n = cands.len();
    if n <= 1 {
        return cands.first().map(|c| c.id);
    }
    let i = index(rand01(), n);
    let mut j = index(rand01(), n - 1);
    if j >= i {
        j += 1;
    }
    let known: Vec<f64> = cands
        .iter()
        .filter_map(Candidate::latency)
        .filter(|l| l.is_finite())
        .collect();
    let default = if known.is_empty() {
        DEFAULT_LATENCY_MS
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let score = |c: &Candidate| {
        c.latency().unwrap_or(default).max(MIN_LATENCY_MS) * (f64::from(c.in_flight) + 1.0)
            / (c.weight() as f64 * c.quota_factor())
    };
    let (a, b) = (&cands[i], &cands[j]);
    Some(if score(b) < score(a) { b.id } else { a.id })
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;
