use super::*;

const T0: u64 = 1_764_000_000_000;

fn obs(limit: Option<u64>, remaining: u64, reset_ms: u64) -> Observation {
    let mut o = Observation {
        at_ms: T0,
        ..Observation::default()
    };
    o.windows[QuotaKind::Requests as usize] = Some(Window {
        limit,
        remaining,
        reset_ms,
    });
    o
}

fn one(o: Observation) -> Basis {
    Basis { obs: o, share: 1 }
}

const REQ: Units = Units {
    requests: 1,
    input: 0,
    output: 0,
};

#[test]
fn fits_while_remaining_covers_the_call() {
    let b = one(obs(Some(60), 5, 60_000));
    let a = assess(&b, Units::default(), REQ, T0);
    assert!(a.fits);
    assert_eq!(a.headroom, Some(5.0 / 60.0));
    // Five sent since: the sixth does not fit.
    let spent = Units {
        requests: 5,
        ..Units::default()
    };
    let a = assess(&b, spent, REQ, T0);
    assert!(!a.fits);
    assert_eq!(a.short, Some((QuotaKind::Requests, 0.0)));
    // 55 to refill over 60 s: one more unit in 60_000 / 55 ms.
    assert_eq!(a.ready_in, Duration::from_millis(1091));
}

#[test]
fn refills_linearly_and_stops_constraining_at_the_reset() {
    let b = one(obs(Some(60), 0, 60_000));
    assert!(!assess(&b, Units::default(), REQ, T0).fits);
    assert!(!assess(&b, Units::default(), REQ, T0 + 999).fits);
    assert!(assess(&b, Units::default(), REQ, T0 + 1001).fits);
    // Without a limit nothing refills before the reset.
    let b = one(obs(None, 0, 5_000));
    let a = assess(&b, Units::default(), REQ, T0 + 1000);
    assert!(!a.fits);
    assert_eq!(a.ready_in, Duration::from_millis(4000));
    assert!(assess(&b, Units::default(), REQ, T0 + 5000).fits);
    assert!(b.obs.expired(T0 + 5000) && !b.obs.expired(T0 + 4999));
}

#[test]
fn a_cluster_share_divides_the_quota() {
    let b = Basis {
        obs: obs(Some(60), 9, 51_000),
        share: 3,
    };
    let spent = |n| Units {
        requests: n,
        ..Units::default()
    };
    assert!(assess(&b, spent(2), REQ, T0).fits);
    let a = assess(&b, spent(3), REQ, T0);
    assert!(!a.fits);
    // 12 needed in all at 1/s refill: 3 s.
    let ms = a.ready_in.as_millis();
    assert!((2999..=3001).contains(&ms), "{ms}");
}

#[test]
fn tokens_count_input_and_output() {
    let mut o = obs(Some(60), 50, 60_000);
    o.windows[QuotaKind::Tokens as usize] = Some(Window {
        limit: Some(10_000),
        remaining: 1_000,
        reset_ms: 6_000,
    });
    o.windows[QuotaKind::OutputTokens as usize] = Some(Window {
        limit: None,
        remaining: 100,
        reset_ms: 6_000,
    });
    let b = one(o);
    assert!(assess(&b, Units::default(), Units::call(500, 100), T0).fits);
    let a = assess(&b, Units::default(), Units::call(500, 600), T0);
    assert!(!a.fits);
    assert_eq!(a.short.map(|s| s.0), Some(QuotaKind::OutputTokens));
    assert_eq!(a.headroom, Some(0.1), "the lowest known fraction");
}

#[test]
fn no_windows_always_fit() {
    let b = one(Observation::default());
    assert_eq!(
        assess(&b, Units::default(), Units::call(1, 1), T0),
        Assessment::FITS
    );
}

#[test]
fn gossip_value_round_trips() {
    let mut o = obs(Some(60), 12, 48_000);
    o.windows[QuotaKind::Tokens as usize] = Some(Window {
        limit: None,
        remaining: 7,
        reset_ms: 250,
    });
    let s = o.encode();
    assert_eq!(s, "t=1764000000000;requests=60/12/48000;tokens=-/7/250");
    assert_eq!(Observation::decode(&s), Some(o));
    assert_eq!(
        Observation::decode("t=5;future=x;requests=1/0/9"),
        Some(Observation {
            at_ms: 5,
            windows: [
                Some(Window {
                    limit: Some(1),
                    remaining: 0,
                    reset_ms: 9
                }),
                None,
                None,
                None
            ]
        })
    );
    for bad in [
        "",
        "requests=1/2/3",
        "t=x",
        "t=1;requests=1/2",
        "t=1;tokens=a/1/1",
    ] {
        assert_eq!(Observation::decode(bad), None, "{bad}");
    }
}

#[test]
fn ledger_counts_what_was_sent_since() {
    let mut l = Ledger::default();
    l.record(10, Units::call(5, 1));
    l.record(20, Units::call(7, 1));
    l.record(20, Units::call(1, 1));
    assert_eq!(l.since(9).requests, 3);
    assert_eq!(
        l.since(10),
        Units {
            requests: 2,
            input: 8,
            output: 2
        }
    );
    assert_eq!(l.since(20), Units::default());
    l.forget_until(15);
    assert_eq!(l.since(0).requests, 2, "forgotten sends are not counted");
    assert_eq!(l.since(10).requests, 2);
}
