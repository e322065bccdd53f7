//! The selection algorithms' distribution and tie-breaking tests.
use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cands(n: usize) -> Vec<Candidate> {
    (0..n).map(Candidate::new).collect()
}

fn weighted(ws: &[u32]) -> Vec<Candidate> {
    ws.iter()
        .enumerate()
        .map(|(id, &w)| Candidate {
            weight: w,
            ..Candidate::new(id)
        })
        .collect()
}

fn no_rand() -> impl FnMut() -> f64 {
    || panic!("this algorithm must not draw randoms")
}

fn seeded(seed: u64) -> impl FnMut() -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    move || rng.random::<f64>()
}

/// Picks per id over `n` calls with a fixed candidate set.
fn counts(
    alg: Algorithm,
    cs: &[Candidate],
    n: usize,
    rand01: &mut dyn FnMut() -> f64,
) -> Vec<usize> {
    let mut state = PoolState::new();
    let max = cs.iter().map(|c| c.id).max().unwrap_or(0);
    let mut out = vec![0; max + 1];
    for _ in 0..n {
        out[select(alg, cs, &mut state, rand01).unwrap()] += 1;
    }
    out
}

#[test]
fn empty_pool_selects_nothing() {
    for alg in Algorithm::ALL {
        assert_eq!(
            select(alg, &[], &mut PoolState::new(), &mut seeded(1)),
            None
        );
    }
}

#[test]
fn single_candidate_is_always_chosen() {
    let one = [Candidate {
        latency_ms: Some(50.0),
        in_flight: 9,
        cost: 3.0,
        ..Candidate::new(7)
    }];
    for alg in Algorithm::ALL {
        let mut state = PoolState::new();
        for _ in 0..5 {
            assert_eq!(select(alg, &one, &mut state, &mut seeded(2)), Some(7));
        }
    }
}

#[test]
fn round_robin_cycles_in_id_order() {
    // Given out of order: the rotation still follows ids.
    let cs = vec![Candidate::new(2), Candidate::new(0), Candidate::new(1)];
    let mut state = PoolState::new();
    let picks: Vec<usize> = (0..7)
        .map(|_| select(Algorithm::RoundRobin, &cs, &mut state, &mut no_rand()).unwrap())
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
}

#[test]
fn round_robin_is_even_within_one() {
    for n in 1..=7 {
        for picks in [1000, 1001, 1003] {
            let c = counts(Algorithm::RoundRobin, &cands(n), picks, &mut no_rand());
            let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(hi - lo <= 1, "n={n} picks={picks}: {c:?}");
        }
    }
}

#[test]
fn round_robin_continues_fairly_when_the_set_changes() {
    let all = cands(5);
    let mut state = PoolState::new();
    let mut pick =
        |cs: &[Candidate]| select(Algorithm::RoundRobin, cs, &mut state, &mut no_rand()).unwrap();
    assert_eq!(pick(&all), 0);
    assert_eq!(pick(&all), 1);
    // Backend 2 is ejected: the cursor moves on to 3, not back to 0
    // and not skipping 3 (as a position-based cursor would).
    let without2: Vec<Candidate> = all.iter().filter(|c| c.id != 2).cloned().collect();
    assert_eq!(pick(&without2), 3);
    assert_eq!(pick(&without2), 4);
    assert_eq!(pick(&without2), 0);
    assert_eq!(pick(&without2), 1);
    // Backend 2 comes back right where it belongs.
    assert_eq!(pick(&all), 2);
    assert_eq!(pick(&all), 3);
    // The backend at the cursor disappears: the next one up is taken.
    let without4: Vec<Candidate> = all.iter().filter(|c| c.id != 4).cloned().collect();
    assert_eq!(pick(&without4), 0);
}

#[test]
fn weighted_is_smooth_nginx_sequence() {
    let cs = weighted(&[5, 1, 1]);
    let mut state = PoolState::new();
    let picks: Vec<usize> = (0..14)
        .map(|_| select(Algorithm::Weighted, &cs, &mut state, &mut no_rand()).unwrap())
        .collect();
    // nginx: a a b a c a a, repeated.
    assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn weighted_exact_ratio_over_every_cycle_and_smooth() {
    for ws in [
        vec![5, 1, 1],
        vec![3, 2, 1],
        vec![1, 1, 1, 1],
        vec![7, 3],
        vec![10, 1, 4, 2],
    ] {
        let cs = weighted(&ws);
        let total: u32 = ws.iter().sum();
        let mut state = PoolState::new();
        let picks: Vec<usize> = (0..total as usize * 20)
            .map(|_| select(Algorithm::Weighted, &cs, &mut state, &mut no_rand()).unwrap())
            .collect();
        // Every window of one full cycle holds exactly `weight` of each.
        for window in picks.windows(total as usize) {
            for (id, &w) in ws.iter().enumerate() {
                let got = window.iter().filter(|&&p| p == id).count();
                assert_eq!(got, w as usize, "weights {ws:?} window {window:?}");
            }
        }
        // Smooth: every prefix stays within 1 pick of its exact share.
        let mut seen = vec![0usize; ws.len()];
        for (k, &p) in picks.iter().enumerate() {
            seen[p] += 1;
            for (id, &w) in ws.iter().enumerate() {
                let ideal = (k + 1) as f64 * f64::from(w) / f64::from(total);
                assert!(
                    (seen[id] as f64 - ideal).abs() < 1.0 + 1e-9,
                    "weights {ws:?} after {} picks id {id}: {} vs {ideal}",
                    k + 1,
                    seen[id]
                );
            }
        }
    }
}

#[test]
fn weighted_survives_ejection_and_return() {
    let cs = weighted(&[2, 1, 1]);
    let mut state = PoolState::new();
    for _ in 0..3 {
        select(Algorithm::Weighted, &cs, &mut state, &mut no_rand());
    }
    let without0: Vec<Candidate> = cs.iter().filter(|c| c.id != 0).cloned().collect();
    let c = {
        let mut c = [0; 3];
        for _ in 0..10 {
            c[select(Algorithm::Weighted, &without0, &mut state, &mut no_rand()).unwrap()] += 1;
        }
        c
    };
    assert_eq!(c, [0, 5, 5]);
    // Back in: exact 2:1:1 per 4 picks from the next cycle on.
    let mut c = [0; 3];
    for _ in 0..400 {
        c[select(Algorithm::Weighted, &cs, &mut state, &mut no_rand()).unwrap()] += 1;
    }
    assert!((199..=201).contains(&c[0]), "{c:?}");
    assert!(
        (99..=101).contains(&c[1]) && (99..=101).contains(&c[2]),
        "{c:?}"
    );
}

#[test]
fn zero_weight_counts_as_one() {
    let c = counts(Algorithm::Weighted, &weighted(&[0, 1]), 100, &mut no_rand());
    assert_eq!(c, [50, 50]);
}

#[test]
fn least_connections_picks_least_loaded() {
    let mut cs = cands(4);
    for (c, f) in cs.iter_mut().zip([5, 2, 7, 3]) {
        c.in_flight = f;
    }
    assert_eq!(
        counts(Algorithm::LeastConnections, &cs, 50, &mut no_rand()),
        [0, 50, 0, 0]
    );
}

#[test]
fn least_connections_normalises_by_weight() {
    let mut cs = weighted(&[4, 1]);
    cs[0].in_flight = 6; // 1.5 per unit
    cs[1].in_flight = 2; // 2 per unit
    assert_eq!(
        select(
            Algorithm::LeastConnections,
            &cs,
            &mut PoolState::new(),
            &mut no_rand()
        ),
        Some(0)
    );
    cs[0].in_flight = 8; // 2 per unit: a tie, both get turns
    assert_eq!(
        counts(Algorithm::LeastConnections, &cs, 100, &mut no_rand()),
        [50, 50]
    );
}

#[test]
fn least_connections_spreads_ties() {
    // All idle: a tie every time, which must not all go to the first.
    let c = counts(Algorithm::LeastConnections, &cands(4), 1000, &mut no_rand());
    assert_eq!(c, [250; 4]);
    // Ties among a subset only.
    let mut cs = cands(4);
    cs[0].in_flight = 1;
    cs[2].in_flight = 1;
    assert_eq!(
        counts(Algorithm::LeastConnections, &cs, 100, &mut no_rand()),
        [0, 50, 0, 50]
    );
}

#[test]
fn least_connections_balances_a_live_load() {
    // Requests arrive and complete in a fixed pattern; nobody gets
    // starved and the load stays level.
    let mut cs = cands(3);
    let mut state = PoolState::new();
    let mut got = [0usize; 3];
    for step in 0..3000 {
        let id = select(Algorithm::LeastConnections, &cs, &mut state, &mut no_rand()).unwrap();
        cs[id].in_flight += 1;
        got[id] += 1;
        if step % 2 == 1 {
            // Backend 0 completes the slowest.
            for c in cs.iter_mut() {
                if c.in_flight > 0 && (c.id != 0 || step % 4 == 3) {
                    c.in_flight -= 1;
                }
            }
        }
        let max = cs.iter().map(|c| c.in_flight).max().unwrap();
        let min = cs.iter().map(|c| c.in_flight).min().unwrap();
        assert!(max - min <= 1, "{cs:?}");
    }
    assert!(got.iter().all(|&g| g > 500), "{got:?}");
    assert!(got[0] < got[1] && got[0] < got[2], "{got:?}");
}

fn with_latency(lat: &[Option<f64>]) -> Vec<Candidate> {
    lat.iter()
        .enumerate()
        .map(|(id, &l)| Candidate {
            latency_ms: l,
            ..Candidate::new(id)
        })
        .collect()
}

#[test]
fn least_latency_picks_fastest() {
    let cs = with_latency(&[Some(120.0), Some(40.0), Some(80.0)]);
    assert_eq!(
        counts(Algorithm::LeastLatency, &cs, 30, &mut no_rand()),
        [0, 30, 0]
    );
}

#[test]
fn least_latency_explores_unsampled_first() {
    let mut cs = with_latency(&[Some(10.0), None, Some(5.0), None]);
    let mut state = PoolState::new();
    let mut pick =
        |cs: &[Candidate]| select(Algorithm::LeastLatency, cs, &mut state, &mut no_rand()).unwrap();
    // Both unsampled get tried (in turn), before the fast known one.
    assert_eq!(pick(&cs), 1);
    assert_eq!(pick(&cs), 3);
    // Fewest in flight among the unsampled wins.
    cs[1].in_flight = 2;
    assert_eq!(pick(&cs), 3);
    assert_eq!(pick(&cs), 3);
    // Once sampled, latency decides.
    cs[1].latency_ms = Some(7.0);
    cs[3].latency_ms = Some(3.0);
    assert_eq!(pick(&cs), 3);
    cs[3].latency_ms = Some(30.0);
    assert_eq!(pick(&cs), 2);
}

#[test]
fn least_latency_ties_by_in_flight_then_round_robin() {
    let mut cs = with_latency(&[
        Some(20.0),
        Some(20.0),
        Some(20.0 * (1.0 + 1e-12)),
        Some(21.0),
    ]);
    cs[0].in_flight = 1;
    // 1 and 2 tie on latency (within 1e-9) and load: alternate.
    assert_eq!(
        counts(Algorithm::LeastLatency, &cs, 100, &mut no_rand()),
        [0, 50, 50, 0]
    );
    cs[2].in_flight = 3;
    assert_eq!(
        counts(Algorithm::LeastLatency, &cs, 10, &mut no_rand()),
        [0, 10, 0, 0]
    );
}

#[test]
fn near_is_relative_and_strict_about_infinities() {
    assert!(near(1.0, 1.0 + 1e-12));
    assert!(near(0.0, 0.0));
    assert!(!near(1.0, 1.0 + 1e-6));
    assert!(near(f64::INFINITY, f64::INFINITY));
    assert!(!near(f64::INFINITY, 1.0));
    assert!(!near(f64::NEG_INFINITY, f64::INFINITY));
}

#[test]
fn least_latency_treats_nan_as_unsampled() {
    let cs = with_latency(&[Some(1.0), Some(f64::NAN)]);
    assert_eq!(
        select(
            Algorithm::LeastLatency,
            &cs,
            &mut PoolState::new(),
            &mut no_rand()
        ),
        Some(1)
    );
}

fn with_cost(costs: &[f64]) -> Vec<Candidate> {
    costs
        .iter()
        .enumerate()
        .map(|(id, &cost)| Candidate {
            cost,
            latency_ms: Some(100.0),
            ..Candidate::new(id)
        })
        .collect()
}

#[test]
fn least_cost_picks_cheapest() {
    let cs = with_cost(&[0.03, 0.002, 0.0025, f64::NAN]);
    assert_eq!(
        counts(Algorithm::LeastCost, &cs, 20, &mut no_rand()),
        [0, 20, 0, 0]
    );
}

#[test]
fn least_cost_ties_by_latency_then_in_flight() {
    let mut cs = with_cost(&[0.01, 0.01 * (1.0 + 1e-12), 0.01, 0.02]);
    cs[0].latency_ms = Some(300.0);
    cs[3].latency_ms = Some(1.0); // fastest, but dearer
    // 1 and 2 tie on cost and latency: spread.
    assert_eq!(
        counts(Algorithm::LeastCost, &cs, 100, &mut no_rand()),
        [0, 50, 50, 0]
    );
    cs[1].in_flight = 1;
    assert_eq!(
        counts(Algorithm::LeastCost, &cs, 10, &mut no_rand()),
        [0, 0, 10, 0]
    );
    cs[2].latency_ms = Some(200.0);
    assert_eq!(
        counts(Algorithm::LeastCost, &cs, 10, &mut no_rand()),
        [0, 10, 0, 0]
    );
    // A real price difference beats any latency.
    cs[0].cost = 0.009;
    assert_eq!(
        counts(Algorithm::LeastCost, &cs, 10, &mut no_rand()),
        [10, 0, 0, 0]
    );
}

#[test]
fn adaptive_prefers_the_fast_but_still_uses_others() {
    let cs = with_latency(&[Some(10.0), Some(20.0), Some(40.0), Some(80.0)]);
    let c = counts(Algorithm::Adaptive, &cs, 12_000, &mut seeded(7));
    // P2C over a strict order: P(rank k of n) = 2 (n - 1 - k) / (n (n - 1)),
    // i.e. 1/2, 1/3, 1/6, 0.
    let expect = [6000.0, 4000.0, 2000.0, 0.0];
    for (got, want) in c.iter().zip(expect) {
        assert!((*got as f64 - want).abs() <= 300.0, "{c:?}");
    }
}

#[test]
fn adaptive_weighs_load_and_weight() {
    // Same latency; 0 has 3 in flight (score 4), 1 is idle (score 1),
    // 2 has 1 in flight but weight 4 (score 0.5).
    let mut cs = with_latency(&[Some(50.0), Some(50.0), Some(50.0)]);
    cs[0].in_flight = 3;
    cs[2].in_flight = 1;
    cs[2].weight = 4;
    let c = counts(Algorithm::Adaptive, &cs, 3000, &mut seeded(3));
    assert_eq!(c[0], 0, "{c:?}");
    assert!(c[2] > 1800 && c[1] > 800, "{c:?}");
}

#[test]
fn adaptive_shifts_to_slower_backends_under_load() {
    // A live simulation: requests finish after a time proportional to the
    // backend's latency. The fast backend takes most, the slow ones some.
    let lat = [10.0, 30.0, 60.0];
    let mut cs = with_latency(&lat.map(Some));
    let mut finishing: Vec<(u64, usize)> = Vec::new();
    let mut rand01 = seeded(11);
    let mut got = [0usize; 3];
    for t in 0..20_000u64 {
        finishing.retain(|&(end, id)| {
            if end <= t {
                cs[id].in_flight -= 1;
                false
            } else {
                true
            }
        });
        let id = select(Algorithm::Adaptive, &cs, &mut PoolState::new(), &mut rand01).unwrap();
        got[id] += 1;
        cs[id].in_flight += 1;
        finishing.push((t + lat[id] as u64 / 2, id));
    }
    assert!(got[0] > got[1] && got[1] > got[2], "{got:?}");
    assert!(got[2] > 500, "slowest must still get traffic: {got:?}");
}

#[test]
fn adaptive_unknown_latency_uses_the_mean() {
    // 1 is unsampled: it scores as the mean (30), so it beats 0 (50)
    // and loses to 2 (10).
    let cs = with_latency(&[Some(50.0), None, Some(10.0)]);
    let c = counts(Algorithm::Adaptive, &cs, 3000, &mut seeded(5));
    assert_eq!(c[0], 0, "{c:?}");
    assert!(c[2] > 1800 && c[1] > 800, "{c:?}");
    // Nobody sampled: 1 ms each, decided by load.
    let mut cs = cands(2);
    cs[0].in_flight = 1;
    assert_eq!(
        counts(Algorithm::Adaptive, &cs, 50, &mut seeded(5)),
        [0, 50]
    );
}

#[test]
fn adaptive_picks_two_distinct_and_tolerates_bad_randoms() {
    let cs = with_latency(&[Some(5.0), Some(1.0)]);
    // Both draws equal: still two distinct candidates, so the faster wins.
    for r in [0.0, 0.5, 0.999_999, 1.0, 7.0, -3.0, f64::NAN] {
        let mut fixed = move || r;
        assert_eq!(
            select(Algorithm::Adaptive, &cs, &mut PoolState::new(), &mut fixed),
            Some(1),
            "r={r}"
        );
    }
}

#[test]
fn only_adaptive_draws_randoms() {
    let cs = with_latency(&[Some(5.0), Some(1.0), None]);
    for alg in Algorithm::ALL {
        if alg != Algorithm::Adaptive {
            select(alg, &cs, &mut PoolState::new(), &mut no_rand());
        }
    }
}

#[test]
fn least_loaded_algorithms_account_for_quota_headroom() {
    // Same load; the one at 2% of its quota is not "least loaded".
    let cands = [
        Candidate {
            headroom: Some(0.02),
            ..Candidate::new(0)
        },
        Candidate {
            headroom: Some(0.9),
            ..Candidate::new(1)
        },
    ];
    let mut st = PoolState::new();
    for _ in 0..4 {
        assert_eq!(
            select(Algorithm::LeastConnections, &cands, &mut st, &mut no_rand()),
            Some(1)
        );
    }
    // Unless the other is far busier: 60 in flight at 90% against none at 2%.
    let busy = [
        cands[0].clone(),
        Candidate {
            in_flight: 60,
            ..cands[1].clone()
        },
    ];
    assert_eq!(
        select(Algorithm::LeastConnections, &busy, &mut st, &mut no_rand()),
        Some(0)
    );
    // Power of two choices compares the same way.
    let lat = |c: &Candidate| Candidate {
        latency_ms: Some(10.0),
        ..c.clone()
    };
    let both = [lat(&cands[0]), lat(&cands[1])];
    let mut draws = [0.0, 0.0].into_iter();
    let mut r = move || draws.next().unwrap_or(0.0);
    assert_eq!(select(Algorithm::Adaptive, &both, &mut st, &mut r), Some(1));
}
