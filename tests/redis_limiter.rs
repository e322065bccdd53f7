//! The cluster limiter against a real `redis-server` started by each test (loopback, free port, no
//! persistence, killed on drop). Several `ClusterLimiter`s on one Redis play the gateway nodes.
//! Every wait polls with a deadline.

mod support;
use support::redis::RedisServer;
use support::{eventually, free_port};

use sluice::config::{LimitsConfig, RedisConfig, TenantConfig};
use sluice::ratelimit::{
    ClusterLimiter, LimitRequest, LocalLimiter, RECONCILE_LUA, RateLimiter, TOKEN_BUCKET_LUA,
    bucket_keys,
};
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

fn cfg(url: &str, timeout_ms: u64) -> RedisConfig {
    RedisConfig {
        timeout_ms,
        breaker_failures: 3,
        breaker_open_ms: 100,
        ..RedisConfig::new(url)
    }
}

fn req(tenant: &str, tokens: u64) -> LimitRequest<'_> {
    LimitRequest {
        tenant,
        requests: 1,
        tokens,
        max_wait: Duration::ZERO,
    }
}

async fn wait_mode(l: &ClusterLimiter, mode: &str) {
    let what = format!("limiter mode {mode}");
    eventually(Duration::from_secs(15), &what, || async {
        l.mode() == mode
    })
    .await;
}

/// Three nodes (live count 3) on one Redis, each in global mode; the live count's sender goes with them.
async fn three_global_nodes(
    cfg: &RedisConfig,
    tenants: &[TenantConfig],
) -> ([ClusterLimiter; 3], watch::Sender<usize>) {
    let (tx, rx) = watch::channel(3usize);
    let nodes = [0, 1, 2].map(|_| ClusterLimiter::new(cfg, tenants, rx.clone()).unwrap());
    for n in &nodes {
        wait_mode(n, "global").await;
    }
    (nodes, tx)
}

/// Checks `n` times (round robin over `nodes`), each within `max_each`; returns how many passed.
async fn admitted(nodes: &[&ClusterLimiter], tenant: &str, n: usize, max_each: Duration) -> usize {
    let mut ok = 0;
    for i in 0..n {
        let t = Instant::now();
        let d = nodes[i % nodes.len()].check(req(tenant, 0)).await;
        let took = t.elapsed();
        assert!(took <= max_each, "check {i} took {took:?}");
        ok += d.allowed as usize;
    }
    ok
}

/// Requests admitted by refill over `elapsed` at `rpm` (for upper bounds).
fn refill(rpm: u32, elapsed: Duration) -> usize {
    (elapsed.as_secs_f64() * rpm as f64 / 60.0).ceil() as usize
}

#[tokio::test]
async fn three_nodes_share_one_global_limit() {
    const N: u32 = 300;
    let redis = RedisServer::start();
    // A generous budget: this test is about exactness, every call must reach Redis.
    let cfg = cfg(&redis.url(), 500);
    let tenants = [tenant("acme", Some(N), Some(N), None)];
    let (nodes, _tx) = three_global_nodes(&cfg, &tenants).await;
    let refs: Vec<&ClusterLimiter> = nodes.iter().collect();
    let t0 = Instant::now();
    let got = admitted(&refs, "acme", 3 * N as usize, Duration::from_secs(1)).await;
    let bound = N as usize + (N as usize).div_ceil(100) + refill(N, t0.elapsed());
    assert!(
        got >= N as usize && got <= bound,
        "three nodes admitted {got}, limit {N} (bound {bound})"
    );
    for n in &nodes {
        assert_eq!(n.redis_errors(), 0);
        assert_eq!(n.mode(), "global");
    }

    // Three local limiters (no shared store) would admit the limit three times.
    let locals: Vec<LocalLimiter> = (0..3).map(|_| LocalLimiter::new(&tenants)).collect();
    let local: usize = (0..3 * N as usize)
        .filter(|i| locals[i % 3].decide(req("acme", 0)).allowed)
        .count();
    assert!(
        local >= 3 * N as usize - 1,
        "local limiters admitted {local}"
    );
}

#[tokio::test]
async fn tokens_reserve_and_reconcile_are_global() {
    let redis = RedisServer::start();
    let cfg = cfg(&redis.url(), 500);
    // 600 tokens per minute: 10 per second refill.
    let tenants = [tenant("acme", None, None, Some(600))];
    let ([a, b, c], _tx) = three_global_nodes(&cfg, &tenants).await;

    let d = a.check(req("acme", 500)).await;
    assert!(d.allowed);
    assert_eq!(d.tokens_limit, Some(600));
    let rem = d.tokens_remaining.unwrap();
    assert!((100..=102).contains(&rem), "{rem}");

    // Another node sees the reservation: 300 do not fit, retry ≈ 200 tokens at 10/s.
    let d = b.check(req("acme", 300)).await;
    assert!(!d.allowed);
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );

    // Only 100 were used: 400 go back to the global bucket.
    a.reconcile("acme", 500, 100).await;
    let d = c.check(req("acme", 300)).await;
    assert!(d.allowed, "{d:?}");
    let rem = d.tokens_remaining.unwrap();
    assert!((200..=205).contains(&rem), "{rem}");

    // Overage: the bucket goes into debt, bounded at -capacity.
    a.reconcile("acme", 100, 5_000).await;
    let [_, tok_key] = bucket_keys("sluice", "acme");
    let level: f64 = redis::cmd("HGET")
        .arg(&tok_key)
        .arg("l")
        .query::<String>(&mut redis.connection())
        .unwrap()
        .parse()
        .unwrap();
    assert!((-600.0..=-590.0).contains(&level), "level {level}");
    let d = c.check(req("acme", 10)).await;
    assert!(!d.allowed);
    assert!(d.retry_after.unwrap() >= Duration::from_secs(60), "{d:?}");
    for n in [&a, &b, &c] {
        assert_eq!(n.redis_errors(), 0);
    }
}

#[tokio::test]
async fn a_refusal_takes_nothing_from_either_bucket() {
    let redis = RedisServer::start();
    let tenants = [tenant("t", Some(60), Some(2), Some(100))];
    let (_tx, rx) = watch::channel(1usize);
    let l = ClusterLimiter::new(&cfg(&redis.url(), 500), &tenants, rx).unwrap();
    wait_mode(&l, "global").await;
    assert!(l.check(req("t", 100)).await.allowed);
    // Token refusal: no request slot used.
    let d = l.check(req("t", 50)).await;
    assert!(!d.allowed);
    assert_eq!(d.tokens_remaining, Some(0));
    assert!(l.check(req("t", 0)).await.allowed);
    assert!(!l.check(req("t", 0)).await.allowed);
    assert_eq!(l.redis_errors(), 0);
}

#[tokio::test]
async fn costs_above_capacity_are_clamped() {
    let redis = RedisServer::start();
    let tenants = [tenant("t", None, None, Some(100))];
    let (_tx, rx) = watch::channel(1usize);
    let l = ClusterLimiter::new(&cfg(&redis.url(), 500), &tenants, rx).unwrap();
    wait_mode(&l, "global").await;
    // A full bucket passes an ask larger than its capacity, and is then empty.
    let d = l.check(req("t", 1_000_000)).await;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.tokens_remaining, Some(0));
    let d = l.check(req("t", 1_000_000)).await;
    assert!(!d.allowed);
    // Waiting for a full bucket (100 tokens at 100/min), not for a million tokens.
    assert!(d.retry_after.unwrap() <= Duration::from_secs(60), "{d:?}");
    // Reconciling a clamped reservation refunds at most the capacity.
    l.reconcile("t", 1_000_000, 0).await;
    let d = l.check(req("t", 100)).await;
    assert!(d.allowed, "{d:?}");
    assert_eq!(l.redis_errors(), 0);
}

#[tokio::test]
async fn over_limit_cache_answers_without_redis() {
    let redis = RedisServer::start();
    let tenants = [
        tenant("t", Some(60), Some(3), None),
        tenant("free", None, None, None),
        tenant("tok-only", None, None, Some(1000)),
    ];
    let (_tx, rx) = watch::channel(1usize);
    let l = ClusterLimiter::new(&cfg(&redis.url(), 500), &tenants, rx).unwrap();
    wait_mode(&l, "global").await;

    // Same semantics as the local limiter: a burst of 3, then one per second.
    for i in 0..3 {
        let d = l.check(req("t", 0)).await;
        assert!(d.allowed, "{i}");
        assert_eq!(d.limit, Some(60));
        assert_eq!(d.remaining, Some(2 - i));
    }
    let d = l.check(req("t", 0)).await;
    assert!(!d.allowed);
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert_eq!(l.redis_calls(), 4);

    // Refused from the cache until the retry-after passes: no Redis call.
    let mut last = wait;
    for _ in 0..20 {
        let d = l.check(req("t", 0)).await;
        assert!(!d.allowed);
        let w = d.retry_after.unwrap();
        assert!(w <= last);
        last = w;
    }
    assert_eq!(l.redis_calls(), 4);

    // Tenants without limits (or asking no tokens of a token-only limit) never reach Redis.
    assert!(l.check(req("free", 100)).await.allowed);
    assert!(l.check(req("tok-only", 0)).await.allowed);
    assert_eq!(l.redis_calls(), 4);

    // Once it passes, Redis decides again.
    eventually(Duration::from_secs(5), "admitted again", || async {
        l.check(req("t", 0)).await.allowed
    })
    .await;
    let calls = l.redis_calls();
    assert!((5..=6).contains(&calls), "{calls}");
}

#[tokio::test]
async fn keys_share_one_hash_slot_and_expire() {
    let redis = RedisServer::start();
    let tenants = [
        tenant("acme", Some(60), Some(5), Some(6000)),
        tenant("}odd{", Some(60), None, Some(6000)),
    ];
    let (_tx, rx) = watch::channel(1usize);
    let l = ClusterLimiter::new(&cfg(&redis.url(), 500), &tenants, rx).unwrap();
    wait_mode(&l, "global").await;
    assert!(l.check(req("acme", 10)).await.allowed);
    assert!(l.check(req("}odd{", 10)).await.allowed);

    let mut con = redis.connection();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    keys.sort();
    let mut want: Vec<String> = bucket_keys("sluice", "acme")
        .into_iter()
        .chain(bucket_keys("sluice", "}odd{"))
        .collect();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(l.keys_of("acme").unwrap(), bucket_keys("sluice", "acme"));
    for t in ["acme", "}odd{"] {
        let [r, k] = bucket_keys("sluice", t);
        assert!(r.ends_with(":req") && k.ends_with(":tok"));
        assert_eq!(hash_tag(&r), hash_tag(&k));
        assert_eq!(key_slot(&r), key_slot(&k), "{r} {k}");
    }
    assert_eq!(hash_tag("sluice:{acme}:req"), "acme");

    // TTL ≈ time until full: 1 request at 1/s → ≤ 1 s; 10 tokens at 100/s → ≤ 100 ms.
    let [r, k] = bucket_keys("sluice", "acme");
    let pttl_r: i64 = redis::cmd("PTTL").arg(&r).query(&mut con).unwrap();
    let pttl_k: i64 = redis::cmd("PTTL").arg(&k).query(&mut con).unwrap();
    assert!(pttl_r > 0 && pttl_r <= 1_001, "{pttl_r}");
    assert!(pttl_k > 0 && pttl_k <= 101, "{pttl_k}");

    // The scripts name their keys only through KEYS (Cluster-safe), and document the contract.
    for src in [TOKEN_BUCKET_LUA, RECONCILE_LUA] {
        assert!(src.contains("KEYS[1]") && src.contains("{<tenant>}"));
        assert!(!src.contains("sluice:"));
    }

    // A flushed script cache (failover, restart) is reloaded on NOSCRIPT, not an error.
    let _: String = redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).unwrap();
    assert!(l.check(req("acme", 10)).await.allowed);
    assert_eq!(l.redis_errors(), 0);
    assert_eq!(l.mode(), "global");
}

#[tokio::test]
async fn redis_killed_falls_back_fast_redivides_and_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let tenants = [tenant("acme", Some(600), Some(60), None)];
    let (tx, rx) = watch::channel(2usize);
    let cfg = cfg(&redis.url(), 20);
    let l = ClusterLimiter::new(&cfg, &tenants, rx).unwrap();
    wait_mode(&l, "global").await;
    assert!(l.check(req("acme", 0)).await.allowed);
    let calls = l.redis_calls();
    assert_eq!(calls, 1);

    redis.kill();
    // Every check answers at once, first from failed calls (breaker still closed), then from the
    // open breaker; the quota is the global one ÷ 2 live nodes (300 per minute), starting from this
    // node's half of the 59 the global bucket held at the last answer: no burst from the switch.
    let t0 = Instant::now();
    let got = admitted(&[&l], "acme", 100, Duration::from_millis(100)).await;
    assert_eq!(l.mode(), "fallback");
    assert!(
        got >= 29 && got <= 30 + refill(300, t0.elapsed()),
        "admitted {got} in fallback"
    );
    assert_eq!(
        l.redis_calls() - calls,
        cfg.breaker_failures as u64,
        "no Redis call once the breaker is open"
    );
    assert_eq!(l.redis_errors(), cfg.breaker_failures as u64);

    // A third node joins: the fallback is re-divided (600/3), keeping the share each bucket holds:
    // nearly empty, so nothing appears from the re-division.
    tx.send(3).unwrap();
    let t0 = Instant::now();
    eventually(Duration::from_secs(5), "re-divided by 3", || async {
        l.fallback_divisor() == 3
    })
    .await;
    let got = admitted(&[&l], "acme", 100, Duration::from_millis(100)).await;
    assert!(
        got <= 1 + refill(300, t0.elapsed()),
        "admitted {got} after re-division"
    );

    // Redis back on the same port: the probe closes the breaker.
    let _redis = RedisServer::start_on(port);
    wait_mode(&l, "global").await;
    let calls = l.redis_calls();
    assert!(l.check(req("acme", 0)).await.allowed);
    assert_eq!(l.redis_calls(), calls + 1);
}

#[tokio::test]
async fn frozen_redis_times_out_within_the_budget() {
    let redis = RedisServer::start();
    let tenants = [tenant("acme", Some(600), Some(60), None)];
    let (_tx, rx) = watch::channel(1usize);
    let l = ClusterLimiter::new(&cfg(&redis.url(), 20), &tenants, rx).unwrap();
    wait_mode(&l, "global").await;

    // The global bucket answers once (59 of 60 left), then SIGSTOP: the socket stays open but
    // nothing answers; only the timeout saves the request.
    assert!(l.check(req("acme", 0)).await.allowed);
    redis.signal("-STOP");
    let got = admitted(&[&l], "acme", 10, Duration::from_millis(100)).await;
    assert_eq!(got, 10, "answered by the fallback");
    assert_eq!(l.mode(), "fallback");
    assert_eq!(l.redis_errors(), 3);

    redis.signal("-CONT");
    wait_mode(&l, "global").await;
    let calls = l.redis_calls();
    assert!(l.check(req("acme", 0)).await.allowed);
    assert_eq!(l.redis_calls(), calls + 1);
}

#[tokio::test]
async fn starts_in_fallback_without_redis_and_connects_in_the_background() {
    let port = free_port();
    let tenants = [tenant("acme", Some(60), Some(4), None)];
    let (_tx, rx) = watch::channel(2usize);
    let t0 = Instant::now();
    let l =
        ClusterLimiter::new(&cfg(&format!("redis://127.0.0.1:{port}"), 20), &tenants, rx).unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "constructor blocked"
    );
    assert_eq!(l.mode(), "fallback");
    let got = admitted(&[&l], "acme", 10, Duration::from_millis(100)).await;
    assert_eq!(got, 0, "a starting node hands out no burst");
    assert_eq!(l.redis_calls(), 0);

    let _redis = RedisServer::start_on(port);
    wait_mode(&l, "global").await;
    // Global bucket: the full burst of 4, whatever the fallback did.
    let got = admitted(&[&l], "acme", 10, Duration::from_secs(1)).await;
    assert_eq!(got, 4);
}

/// The Redis Cluster hash tag of a key: the text between the first `{` and the next `}`, if not
/// empty; otherwise the whole key.
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// Redis Cluster's key slot: CRC16/XMODEM of the hash tag, mod 16384.
fn key_slot(key: &str) -> u16 {
    sluice::hash::redis_slot(key.as_bytes())
}

#[test]
fn key_slot_matches_redis_cluster() {
    // Values from the Redis Cluster specification / CLUSTER KEYSLOT.
    assert_eq!(key_slot("123456789"), 0x31C3);
    assert_eq!(key_slot("foo"), 12182);
    assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
}

/// A large request limit is leased: a node takes up to 64 requests per Redis call, yet the cluster
/// stays within about 1% of the limit.
#[tokio::test]
async fn large_limits_are_leased_and_stay_within_one_percent() {
    const N: u32 = 20_000;
    let redis = RedisServer::start();
    let cfg = cfg(&redis.url(), 500);
    let tenants = [tenant("big", Some(N), Some(N), None)];
    let (nodes, _tx) = three_global_nodes(&cfg, &tenants).await;
    let refs: Vec<&ClusterLimiter> = nodes.iter().collect();
    let t0 = Instant::now();
    let offered = 2 * N as usize;
    let got = admitted(&refs, "big", offered, Duration::from_secs(1)).await;
    let bound = N as usize + (N as usize).div_ceil(100) + refill(N, t0.elapsed());
    let calls: u64 = nodes.iter().map(|n| n.redis_calls()).sum();
    println!(
        "leased: admitted {got} of {offered} (limit {N}, bound {bound}) with {calls} redis calls"
    );
    assert!(
        got >= N as usize - (N as usize).div_ceil(100) && got <= bound,
        "admitted {got}, bound {bound}"
    );
    // Admissions cost a fraction of a call each; refusals near and past the limit are cached.
    assert!(
        (calls as usize) < got / 10,
        "{calls} redis calls for {got} admissions"
    );
}

fn waiting(tenant: &str, max_wait: Duration) -> LimitRequest<'_> {
    LimitRequest {
        max_wait,
        ..req(tenant, 0)
    }
}

#[tokio::test]
async fn waiting_requests_book_their_slots_in_one_call_each() {
    let redis = RedisServer::start();
    // 10 per second, burst 2.
    let tenants = [tenant("acme", Some(600), Some(2), None)];
    let (_tx, rx) = watch::channel(1usize);
    let l = ClusterLimiter::new(&cfg(&redis.url(), 500), &tenants, rx).unwrap();
    wait_mode(&l, "global").await;
    let budget = Duration::from_millis(1000);
    let mut waits = Vec::new();
    for _ in 0..12 {
        let d = l.check(waiting("acme", budget)).await;
        assert!(d.allowed, "{d:?}");
        waits.push(d.wait);
    }
    // Two from the burst, then one booked slot every 100 ms (a little less: time passes).
    assert_eq!(waits[..2], [Duration::ZERO, Duration::ZERO]);
    for (i, w) in waits[2..].iter().enumerate() {
        let want = 100.0 * (i + 1) as f64;
        let got = w.as_secs_f64() * 1000.0;
        assert!(got <= want + 1.0 && got >= want - 60.0, "slot {i}: {w:?}");
    }
    assert_eq!(
        l.redis_calls(),
        12,
        "one call per admitted request, none polling"
    );
    // The next slot is beyond the budget: refused, with when to come back.
    let d = l.check(waiting("acme", budget)).await;
    assert!(!d.allowed);
    assert!(d.retry_after.unwrap() > budget);
    assert!(l.redis_calls() <= 13);
}

#[tokio::test]
async fn a_released_booking_gives_its_slot_back() {
    let redis = RedisServer::start();
    let tenants = [tenant("acme", Some(60), Some(1), None)];
    let (_tx, rx) = watch::channel(1usize);
    let l = ClusterLimiter::new(&cfg(&redis.url(), 500), &tenants, rx).unwrap();
    wait_mode(&l, "global").await;
    let budget = Duration::from_secs(5);
    assert_eq!(l.check(waiting("acme", budget)).await.wait, Duration::ZERO);
    let first = l.check(waiting("acme", budget)).await.wait;
    assert!(first > Duration::from_millis(900), "{first:?}");
    l.release("acme", 1, 0).await;
    // The slot given back goes to the next caller: about one second again, not two.
    let again = l.check(waiting("acme", budget)).await.wait;
    assert!(
        again <= first && again > Duration::from_millis(800),
        "{again:?}"
    );
}

#[tokio::test]
async fn what_the_fallback_admitted_is_charged_when_redis_returns() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let tenants = [tenant("acme", Some(60), Some(20), None)];
    let (_tx, rx) = watch::channel(1usize);
    let l = ClusterLimiter::new(&cfg(&redis.url(), 20), &tenants, rx).unwrap();
    wait_mode(&l, "global").await;
    assert!(l.check(req("acme", 0)).await.allowed);
    redis.kill();
    // Alone (divisor 1): the fallback holds the 19 the global bucket had left.
    let got = admitted(&[&l], "acme", 40, Duration::from_millis(100)).await;
    assert!((19..=21).contains(&got), "admitted {got} in fallback");
    // A fresh Redis holds a full bucket of 20; the 19+ admitted meanwhile are charged to it.
    let _redis = RedisServer::start_on(port);
    wait_mode(&l, "global").await;
    let got = admitted(&[&l], "acme", 20, Duration::from_secs(1)).await;
    assert!(
        got <= 2,
        "admitted {got} after the return: the outage added capacity"
    );
}

/// Three nodes on `cfg` take `3 × limit` checks of a tenant limited to `limit` (burst `limit`): the
/// global bucket admits about `limit`, not three times it.
async fn global_limit_holds(cfg: &RedisConfig, tenant_id: &str, limit: u32) {
    let tenants = [tenant(tenant_id, Some(limit), Some(limit), None)];
    let (nodes, _tx) = three_global_nodes(cfg, &tenants).await;
    let refs: Vec<&ClusterLimiter> = nodes.iter().collect();
    let t0 = Instant::now();
    let got = admitted(&refs, tenant_id, 3 * limit as usize, Duration::from_secs(1)).await;
    let bound = limit as usize + refill(limit, t0.elapsed());
    assert!(
        got >= limit as usize && got <= bound,
        "three nodes admitted {got}, limit {limit} (bound {bound})"
    );
    for n in &nodes {
        assert_eq!(n.redis_errors(), 0);
    }
}

#[tokio::test]
async fn an_acl_user_or_the_requirepass_in_the_url_hold_the_global_limit() {
    use support::redis::{ACL_PASS, ACL_USER, ADMIN_PASS};
    let redis = RedisServer::start_with_auth();
    // The ACL user may touch only `sluice:*` keys, without dangerous commands: all the limiter needs.
    global_limit_holds(&cfg(&redis.url_as(ACL_USER, ACL_PASS), 500), "acl", 30).await;
    global_limit_holds(&cfg(&redis.url_as("", ADMIN_PASS), 500), "pass", 30).await;
    let mut c = redis.connection();
    for t in ["acl", "pass"] {
        let [req_key, _] = bucket_keys("sluice", t);
        let exists: bool = redis::cmd("EXISTS").arg(&req_key).query(&mut c).unwrap();
        assert!(
            exists,
            "{req_key} written through the authenticated connection"
        );
    }
}

#[tokio::test]
async fn wrong_or_missing_credentials_never_reach_global_mode() {
    use support::redis::{ACL_USER, ADMIN_PASS};
    let redis = RedisServer::start_with_auth();
    let tenants = [tenant("acme", Some(60), Some(4), None)];
    let plain = format!("redis://127.0.0.1:{}", redis.port);
    for url in [
        redis.url_as(ACL_USER, "wrong"),
        redis.url_as("", "wrong"),
        plain,
    ] {
        let (_tx, rx) = watch::channel(1usize);
        let l = ClusterLimiter::new(&cfg(&url, 50), &tenants, rx).unwrap();
        // A request waits for the first connection attempt to end: it is answered by the fallback.
        let d = l.check(req("acme", 0)).await;
        assert!(
            !d.allowed,
            "{url}: the start-up fallback hands out no burst"
        );
        assert_eq!(l.mode(), "fallback", "{url}");
        assert_eq!(l.redis_calls(), 0, "{url}");
    }
    // With the right password the same server is reachable.
    let (_tx, rx) = watch::channel(1usize);
    let l = ClusterLimiter::new(&cfg(&redis.url_as("", ADMIN_PASS), 50), &tenants, rx).unwrap();
    wait_mode(&l, "global").await;
}

#[tokio::test]
async fn tls_with_a_ca_file_and_a_client_certificate_holds_the_global_limit() {
    use support::redis::{TlsFiles, has_tls};
    if !has_tls() {
        println!("skipped: this redis-server was built without TLS (--tls-port)");
        return;
    }
    let tls = TlsFiles::generate();
    let redis = RedisServer::start_tls(&tls);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let with_cert = RedisConfig {
        ca_file: Some(tls.ca.clone()),
        client_cert_file: Some(tls.client_cert.clone()),
        client_key_file: Some(tls.client_key.clone()),
        ..cfg(&url, 500)
    };
    global_limit_holds(&with_cert, "tls", 30).await;

    // The server asks for a client certificate: without one, or trusting only the system roots,
    // the limiter stays in fallback.
    let tenants = [tenant("acme", Some(60), Some(4), None)];
    let no_cert = RedisConfig {
        ca_file: Some(tls.ca.clone()),
        ..cfg(&url, 50)
    };
    for c in [no_cert, cfg(&url, 50)] {
        let (_tx, rx) = watch::channel(1usize);
        let l = ClusterLimiter::new(&c, &tenants, rx).unwrap();
        assert!(!l.check(req("acme", 0)).await.allowed);
        assert_eq!(l.mode(), "fallback", "{c:?}");
    }
}
