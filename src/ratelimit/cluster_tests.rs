//! Unit tests of the cluster limiter without Redis: bucket keys, plans and script replies, URL
//! redaction, and the fallback it answers from while Redis is away.

use super::local::Quotas;
use super::plan::Plan;
use super::setup::redact;
use super::{ClusterLimiter, Decision, LimitRequest, RateLimiter, RedisLimitError, bucket_keys};
use crate::config::{LimitsConfig, RedisConfig, TenantConfig};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

fn tenant(id: &str, rpm: Option<u32>, burst: Option<u32>, tpm: Option<u64>) -> TenantConfig {
    let limits = LimitsConfig {
        requests_per_minute: rpm,
        burst,
        tokens_per_minute: tpm,
    };
    TenantConfig::with_limits(id, limits)
}

fn cfg(url: &str) -> RedisConfig {
    RedisConfig {
        timeout_ms: 5,
        breaker_failures: 3,
        breaker_open_ms: 50,
        ..RedisConfig::new(url)
    }
}

fn req(tenant: &str) -> LimitRequest<'_> {
    LimitRequest {
        tenant,
        requests: 1,
        tokens: 0,
        max_wait: Duration::ZERO,
    }
}

#[test]
fn keys_share_the_tenant_hash_tag() {
    assert_eq!(
        bucket_keys("sluice", "acme"),
        [
            "sluice:{acme}:req".to_string(),
            "sluice:{acme}:tok".to_string()
        ]
    );
    let [r, t] = bucket_keys("p{x}", "}a{b%");
    assert_eq!(r, "p%7Bx%7D:{%7Da%7Bb%25}:req");
    assert_eq!(t, "p%7Bx%7D:{%7Da%7Bb%25}:tok");
}

#[test]
fn plan_defaults_burst_like_the_local_limiter() {
    let q = Quotas::of(&tenant("a", Some(600), None, None));
    let p = Plan::new("s", "a", &q).unwrap();
    assert_eq!((p.rpm, p.burst, p.tpm), (600, 10, 0));
    assert!(Plan::new("s", "a", &Quotas::of(&tenant("a", None, None, None))).is_none());
}

#[test]
fn script_reply_becomes_a_decision() {
    let p = Plan::new(
        "s",
        "a",
        &Quotas::of(&tenant("a", Some(60), Some(5), Some(1000))),
    )
    .unwrap();
    let d = p.decision(&[1, 4, 800, 0, 1000, 12000, 0, 0], true);
    assert!(d.allowed);
    assert_eq!(d.limit, Some(60));
    assert_eq!(d.remaining, Some(4));
    assert_eq!(d.reset, Duration::from_secs(1));
    assert_eq!(d.tokens_limit, Some(1000));
    assert_eq!(d.tokens_remaining, Some(800));
    assert_eq!(d.retry_after, None);
    let d = p.decision(&[0, 0, 100, 900, 5000, 54000, 900, 0], false);
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Some(Duration::from_millis(900)));
    assert_eq!(d.tokens_limit, None);
}

#[test]
fn redacts_passwords() {
    assert_eq!(redact("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
    assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    assert_eq!(
        redact("rediss://sluice:p@ss:w@h:6380/1"),
        "rediss://sluice:***@h:6380/1"
    );
    assert_eq!(redact("redis://secret@h"), "redis://***@h");
    // An `@` after the host (in the path) is not user info.
    assert_eq!(redact("redis://h:1/0?x=a@b"), "redis://h:1/0?x=a@b");
}

#[test]
fn needs_a_runtime() {
    let (_tx, rx) = watch::channel(1);
    assert!(matches!(
        ClusterLimiter::new(&cfg("redis://127.0.0.1:1"), &[], rx),
        Err(RedisLimitError::NoRuntime)
    ));
}

#[tokio::test]
async fn without_redis_it_answers_locally_divided_by_live_nodes() {
    // Nothing listens on port 1: the limiter stays in fallback and never blocks a request.
    let (tx, rx) = watch::channel(2);
    let tenants = [
        tenant("a", Some(60), Some(10), None),
        tenant("free", None, None, None),
    ];
    let l = ClusterLimiter::new(&cfg("redis://127.0.0.1:1"), &tenants, rx).unwrap();
    assert_eq!(l.mode(), "fallback");
    assert_eq!(l.fallback_divisor(), 2);
    // A starting node hands out no burst: the fallback starts empty, refilled at 60/min ÷ 2.
    let d = l.check(req("a")).await;
    assert!(!d.allowed);
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2),
        "{wait:?}"
    );
    assert_eq!(l.check(req("free")).await, Decision::unlimited());
    assert_eq!(l.redis_calls(), 0);
    tx.send(5).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while l.fallback_divisor() != 5 {
        assert!(Instant::now() < deadline, "fallback not re-divided");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 60/min ÷ 5: one request every 5 s.
    let wait = l.check(req("a")).await.retry_after.unwrap();
    assert!(
        wait > Duration::from_millis(4500) && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
    assert_eq!(l.mode(), "fallback");
}

#[tokio::test]
async fn a_redis_cluster_gets_a_breaker_per_slot_and_reports_partial_fallback() {
    // Nothing listens on port 1: every slot group starts (and stays) in fallback.
    let (_tx, rx) = watch::channel(3);
    let tenants = [
        tenant("a", Some(60), None, None),
        tenant("b", Some(60), None, None),
        tenant("free", None, None, None),
    ];
    let c = RedisConfig {
        timeout_ms: 5,
        breaker_open_ms: 50,
        ..RedisConfig::cluster(vec!["redis://127.0.0.1:1".into()])
    };
    let l = ClusterLimiter::new(&c, &tenants, rx).unwrap();
    assert_eq!(l.mode(), "fallback");
    assert_eq!(
        l.fallback_tenants(),
        ["a", "b"],
        "tenants without limits never fall back"
    );
    assert_eq!(l.fallback_divisor(), 3);
    let inner = &l.inner;
    let group_of = |t: &str| inner.plans.load()[t].group;
    assert_ne!(
        group_of("a"),
        group_of("b"),
        "a and b hash to different slots"
    );
    inner.groups[group_of("a")].breaker.close();
    assert_eq!(l.mode(), "partial");
    assert_eq!(l.fallback_tenants(), ["b"]);
    inner.groups[group_of("b")].breaker.close();
    assert_eq!(l.mode(), "global");
    assert!(l.fallback_tenants().is_empty());
    // A reload keeps the groups: a new tenant joins its slot's group, or the nearest one.
    let (a, b) = (group_of("a"), group_of("b"));
    let mut more = tenants.to_vec();
    more.push(tenant("c", Some(60), None, None));
    l.retune(&more);
    assert_eq!((group_of("a"), group_of("b")), (a, b));
    let c = group_of("c");
    assert!(c < inner.groups.len());
    for _ in 0..10 {
        inner.groups[c].breaker.failure_counted();
    }
    assert_eq!(l.mode(), "partial");
    assert!(l.fallback_tenants().contains(&"c".to_string()));
}

#[tokio::test]
async fn retune_replaces_changed_plans_and_the_fallback_quotas() {
    let (_tx, rx) = watch::channel(2);
    let tenants = [
        tenant("a", Some(60), Some(10), None),
        tenant("b", Some(60), Some(10), None),
    ];
    let l = ClusterLimiter::new(&cfg("redis://127.0.0.1:1"), &tenants, rx).unwrap();
    let keys_b = l.keys_of("b");
    // a: 600/min (÷ 2 in fallback: one every 200 ms); b unchanged; c new; nothing else.
    l.retune(&[
        tenant("a", Some(600), Some(10), None),
        tenant("b", Some(60), Some(10), None),
        tenant("c", Some(60), None, None),
    ]);
    assert_eq!(l.keys_of("b"), keys_b);
    assert!(l.keys_of("c").is_some());
    let wait = l.check(req("a")).await.retry_after.unwrap();
    assert!(wait <= Duration::from_millis(200), "{wait:?}");
    // The fallback's buckets were empty and stay so: no burst from the reload.
    assert!(!l.check(req("a")).await.allowed);
    l.retune(&[tenant("b", Some(60), Some(10), None)]);
    assert_eq!(l.keys_of("a"), None);
    assert_eq!(l.check(req("a")).await, Decision::unlimited());
}
