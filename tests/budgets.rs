//! Spend budgets with real processes: three gateway nodes sharing a real `redis-server`, two priced
//! simulated upstreams (one OpenAI, one Anthropic), and a tenant whose budget a few dozen requests
//! exhaust, through both APIs, streamed and not. The actual cost is computed here from the `usage`
//! each response carried and the price of the backend that answered (`x-sluice-backend`).

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::cluster::{ADMIN, KEY_A, KEY_ENV, admin, admin_get, wait_live};
use support::redis::RedisServer;
use support::*;

/// USD per million tokens (input, output) of each backend; the estimate uses the highest of each.
const OPENAI_PRICE: (f64, f64) = (20.0, 40.0);
const ANTHROPIC_PRICE: (f64, f64) = (10.0, 60.0);
/// The tenant's budget: $0.02 per 12 s window (micro-dollars).
const BUDGET: u64 = 20_000;
const WINDOW_MS: u64 = 12_000;
/// Requests in flight at once across the cluster.
const CONC: usize = 6;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Micro-dollars, rounded up per request as the gateway counts.
fn cost(price: (f64, f64), input: u64, output: u64) -> u64 {
    let pico = |p: f64| (p * 1e6).round() as u128;
    ((pico(price.0) * input as u128 + pico(price.1) * output as u128).div_ceil(1_000_000)) as u64
}

/// The largest input and output token counts in any `usage` object in `v` (OpenAI or Anthropic names).
fn usage_in(v: &Value, acc: &mut (u64, u64)) {
    match v {
        Value::Object(m) => {
            if let Some(u) = m.get("usage").filter(|u| u.is_object()) {
                let n = |k: &str| u[k].as_u64().unwrap_or(0);
                acc.0 = acc.0.max(n("prompt_tokens").max(n("input_tokens")));
                acc.1 = acc.1.max(n("completion_tokens").max(n("output_tokens")));
            }
            m.values().for_each(|x| usage_in(x, acc));
        }
        Value::Array(a) => a.iter().for_each(|x| usage_in(x, acc)),
        _ => {}
    }
}

/// One finished request: its status, actual cost (200s), the response.
struct Done {
    kind: usize,
    status: u16,
    cost: u64,
    /// Input and output tokens of its usage.
    used: (u64, u64),
    resp: Resp,
}

const KINDS: [&str; 4] = ["chat", "chat stream", "messages", "messages stream"];

/// Request `kind` (see [`KINDS`]) to the gateway at `base` for the tenant with `key`.
async fn one(base: String, key: &str, kind: usize) -> Done {
    let stream = kind % 2 == 1;
    let text = "please say something short about budgets";
    let (path, body, auth) = if kind < 2 {
        let mut b = json!({"model": "m", "max_tokens": 20,
            "messages": [{"role": "user", "content": text}]});
        if stream {
            b["stream"] = json!(true);
            b["stream_options"] = json!({"include_usage": true});
        }
        (
            "/v1/chat/completions",
            b,
            ("authorization", format!("Bearer {key}")),
        )
    } else {
        let b = json!({"model": "m", "max_tokens": 20, "stream": stream,
            "messages": [{"role": "user", "content": text}]});
        ("/v1/messages", b, ("x-api-key", key.to_string()))
    };
    let url = format!("{base}{path}");
    let headers = [
        (auth.0, auth.1.as_str()),
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];
    let resp = request("POST", &url, &headers, body.to_string()).await;
    let mut used = (0, 0);
    if resp.status == 200 {
        if stream {
            for line in resp.text().lines() {
                if let Some(Ok(v)) = line
                    .strip_prefix("data: ")
                    .map(serde_json::from_str::<Value>)
                {
                    usage_in(&v, &mut used);
                }
            }
        } else {
            usage_in(&resp.json(), &mut used);
        }
    }
    let price = match resp.header("x-sluice-backend") {
        Some("oa") => OPENAI_PRICE,
        Some("an") => ANTHROPIC_PRICE,
        other if resp.status == 200 => panic!("answered by {other:?}"),
        _ => (0.0, 0.0),
    };
    if resp.status == 200 {
        assert!(
            used.0 > 0 && used.1 > 0,
            "{} without usage: {}",
            KINDS[kind],
            resp.text()
        );
    }
    Done {
        kind,
        status: resp.status,
        cost: cost(price, used.0, used.1),
        used,
        resp,
    }
}

/// `n` requests round-robin over the nodes and the four kinds, `CONC` at a time.
async fn spread(urls: &[String], key: &str, n: usize, offset: usize) -> Vec<Done> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let mut set = tokio::task::JoinSet::new();
        for j in i..(i + CONC).min(n) {
            let url = urls[(j + offset) % urls.len()].clone();
            let key = key.to_string();
            set.spawn(async move { one(url, &key, (j + offset) % 4).await });
        }
        while let Some(d) = set.join_next().await {
            out.push(d.unwrap());
        }
        i += CONC;
    }
    out
}

fn admitted_cost(done: &[Done]) -> u64 {
    done.iter()
        .filter(|d| d.status == 200)
        .map(|d| d.cost)
        .sum()
}

fn max_cost(done: &[Done]) -> u64 {
    done.iter().map(|d| d.cost).max().unwrap_or(0)
}

fn assert_only_200_and_429(done: &[Done]) {
    for d in done {
        assert!(
            d.status == 200 || d.status == 429,
            "{}: {} {}",
            KINDS[d.kind],
            d.status,
            d.resp.text()
        );
    }
}

/// The 429 names the budget and its reset, in the caller's API shape, with the budget headers.
fn assert_names_the_budget(d: &Done) {
    let v = d.resp.json();
    let msg = if d.kind < 2 {
        assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
        assert_eq!(v["error"]["code"], "over_budget", "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    } else {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    };
    assert!(
        msg.contains("budget exceeded for tenant `t`")
            && msg.contains("usd_per_window is 0.02 USD")
            && msg.contains("resets at"),
        "{msg}"
    );
    let h = |n: &str| {
        d.resp
            .header(n)
            .unwrap_or_else(|| panic!("no {n}"))
            .to_string()
    };
    let retry: u64 = h("retry-after").parse().unwrap();
    assert!(
        (1..=WINDOW_MS / 1000).contains(&retry),
        "retry-after {retry}"
    );
    assert_eq!(h("x-ratelimit-limit-budget-usd"), "0.02");
    assert_eq!(h("x-ratelimit-budget-period"), "window");
    let remaining: f64 = h("x-ratelimit-remaining-budget-usd").parse().unwrap();
    assert!(remaining < 0.02, "remaining {remaining}");
    let reset: f64 = h("x-ratelimit-reset-budget")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(reset <= WINDOW_MS as f64 / 1000.0, "reset {reset}");
}

/// Wait until the next window starts (plus a little), so a phase runs inside one window.
async fn next_window() -> u64 {
    let left = WINDOW_MS - now_ms() % WINDOW_MS;
    tokio::time::sleep(Duration::from_millis(left + 50)).await;
    now_ms() / WINDOW_MS
}

fn node_config(i: usize, gossip: &[u16], oa: &Proc, an: &Proc, redis: &str) -> String {
    let seeds: Vec<String> = gossip.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let price = |p: (f64, f64)| {
        format!(
            ", price: {{ input_per_1m: {}, output_per_1m: {} }}",
            p.0, p.1
        )
    };
    format!(
        "node: {{ id: node-{i} }}\nadmin_token_env: SLUICE_ADMIN_TOKEN\nbackends:\n{}{}tenants:\n  - {{ id: t, keys: [sk-t], budget: {{ usd_per_window: {{ usd: 0.02, window_ms: {WINDOW_MS} }}, usd_per_day: 100 }} }}\nrouting:\n  strategy: round-robin\nshaping: {{ max_wait_ms: 0 }}\ncluster:\n  cluster_id: budgets\n  gossip_listen: 127.0.0.1:{}\n  seeds: [{}]\n  gossip_interval_ms: 100\n  dead_after_ms: 1500\n  secret_env: {KEY_ENV}\n  redis: {{ url: \"{redis}\", timeout_ms: 500 }}\n",
        backend("oa", oa, "openai", &price(OPENAI_PRICE)),
        backend("an", an, "anthropic", &price(ANTHROPIC_PRICE)),
        gossip[i],
        seeds.join(", ")
    )
}

async fn tenants_report(node: &Proc) -> Value {
    admin_get(node, "/admin/tenants").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_holds_across_three_nodes_resets_with_its_period_and_survives_redis_loss() {
    let mut redis = RedisServer::start();
    let oa = mock("openai", "oa", &[]);
    let an = mock("anthropic", "an", &[]);
    let gossip = [free_port(), free_port(), free_port()];
    let nodes: Vec<Proc> = (0..3)
        .map(|i| {
            gateway_env(
                &node_config(i, &gossip, &oa, &an, &redis.url()),
                &[("SLUICE_ADMIN_TOKEN", ADMIN), (KEY_ENV, KEY_A)],
            )
        })
        .collect();
    wait_live(&nodes.iter().collect::<Vec<_>>(), 3).await;
    for node in &nodes {
        eventually(Duration::from_secs(10), "global mode", || async {
            admin(node).await["limiter_mode"] == "global"
        })
        .await;
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();

    // 1. Global: 60 requests against a budget about 25 of them exhaust.
    let w = next_window().await;
    let t0 = Instant::now();
    let done = spread(&urls, "sk-t", 60, 0).await;
    assert_eq!(now_ms() / WINDOW_MS, w, "the phase outlasted its window");
    assert_only_200_and_429(&done);
    let spent = admitted_cost(&done);
    let ok = done.iter().filter(|d| d.status == 200).count();
    let bound = BUDGET + CONC as u64 * max_cost(&done);
    println!(
        "global: {ok} of 60 admitted in {:.2}s, actual cost {spent} µ$ of a {BUDGET} µ$ budget (bound {bound})",
        t0.elapsed().as_secs_f64()
    );
    assert!(spent <= bound, "spent {spent} > bound {bound}");
    assert!(
        spent >= BUDGET / 2,
        "spent only {spent}: the budget refused too early"
    );
    for (k, name) in KINDS.iter().enumerate() {
        assert!(
            done.iter().any(|d| d.kind == k && d.status == 200),
            "no {name} admitted"
        );
    }
    let refused: Vec<&Done> = done.iter().filter(|d| d.status == 429).collect();
    assert!(refused.len() >= 20, "only {} refused", refused.len());
    for d in &refused {
        assert_names_the_budget(d);
    }
    for k in [0, 2] {
        if let Some(d) = refused.iter().find(|d| d.kind == k) {
            println!("429 ({}): {}", KINDS[k], d.resp.text());
        }
    }

    // Visible spend: the admin endpoint and the gauges.
    let report = tenants_report(&nodes[1]).await;
    assert_eq!(report["source"], "global", "{report}");
    let t = &report["tenants"][0];
    assert_eq!(t["id"], "t");
    let window = t["budget"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["period"] == "window")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(window["budget_usd"], 0.02);
    assert!(window["resets_at"].as_str().unwrap().ends_with('Z'));
    // Every reservation settled to the actual cost: the counter is what the usage says (it would be
    // more if a refund's call had timed out, as those are dropped; never less).
    let last = std::sync::Mutex::new(0.0);
    let settled = try_poll(Duration::from_secs(3), || async {
        let r = tenants_report(&nodes[1]).await;
        let periods = r["tenants"][0]["budget"].as_array()?.clone();
        let p = periods.iter().find(|p| p["period"] == "window")?;
        let micros = p["spent_usd"].as_f64()? * 1e6;
        *last.lock().unwrap() = micros;
        ((micros - spent as f64).abs() < 0.5).then_some(())
    })
    .await;
    let last = *last.lock().unwrap();
    if settled.is_none() {
        for d in done.iter().filter(|d| d.status == 200) {
            let b = d.resp.header("x-sluice-backend").unwrap_or("-");
            println!("{} via {b}: {:?} = {} µ$", KINDS[d.kind], d.used, d.cost);
        }
        for n in &nodes {
            let text = metrics_text(n).await;
            for l in text.lines().filter(|l| {
                l.starts_with("sluice_tokens_total") || l.starts_with("sluice_cost_microusd_total")
            }) {
                println!("{l}");
            }
        }
    }
    assert!(
        settled.is_some(),
        "admin says {last} µ$ spent, usage says {spent} µ$"
    );
    let day = t["budget"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["period"] == "day")
        .unwrap();
    assert_eq!(day["budget_usd"], 100.0);
    let g = gauge(
        &nodes[1],
        "sluice_spend_usd",
        &[("tenant", "t"), ("period", "window")],
    )
    .await;
    assert!(g.is_some_and(|g| g > 0.0), "sluice_spend_usd {g:?}");
    let r = gauge(
        &nodes[1],
        "sluice_budget_remaining_usd",
        &[("tenant", "t"), ("period", "window")],
    )
    .await;
    assert!(
        r.is_some_and(|r| r < 0.02),
        "sluice_budget_remaining_usd {r:?}"
    );

    // 2. The next window starts empty: admitted again within the reset the 429 announced.
    let t1 = Instant::now();
    let first = poll(
        Duration::from_millis(WINDOW_MS + 3_000),
        "admitted after the reset",
        || {
            let url = urls[0].clone();
            async move { Some(one(url, "sk-t", 0).await).filter(|d| d.status == 200) }
        },
    )
    .await;
    let w = now_ms() / WINDOW_MS;
    println!(
        "admitted again {:.2}s later, in the next window",
        t1.elapsed().as_secs_f64()
    );

    // 3. In that window, Redis dies: each node holds its share of what was left (÷ 3 live nodes).
    let mut before = spread(&urls, "sk-t", 8, 0).await;
    before.push(first);
    assert_only_200_and_429(&before);
    assert!(
        before.iter().all(|d| d.status == 200),
        "a third of the budget fits"
    );
    redis.kill();
    let after = spread(&urls, "sk-t", 60, 1).await;
    assert_eq!(now_ms() / WINDOW_MS, w, "the phase outlasted its window");
    assert_only_200_and_429(&after);
    for node in &nodes {
        assert_eq!(admin(node).await["limiter_mode"], "fallback");
    }
    let spent = admitted_cost(&before) + admitted_cost(&after);
    let bound = BUDGET + 2 * CONC as u64 * max_cost(&after);
    let ok = after.iter().filter(|d| d.status == 200).count();
    println!(
        "fallback: {} before the kill, {ok} of 60 after; actual cost in the window {spent} µ$ of {BUDGET} (bound {bound})",
        before.len()
    );
    assert!(spent <= bound, "spent {spent} > bound {bound}");
    assert!(spent >= BUDGET / 2, "spent only {spent}");
    let refused: Vec<&Done> = after.iter().filter(|d| d.status == 429).collect();
    assert!(
        refused.len() >= 20,
        "only {} refused in fallback",
        refused.len()
    );
    for d in &refused {
        assert_names_the_budget(d);
    }
    let report = tenants_report(&nodes[0]).await;
    assert_eq!(report["source"], "fallback", "{report}");

    // 4. Redis comes back empty (restarted without persistence): each node charges what it admitted
    //    on top of the spend it knew of, so the window keeps its spend.
    let _redis = RedisServer::start_on(redis.port);
    for node in &nodes {
        eventually(Duration::from_secs(10), "global mode again", || async {
            admin(node).await["limiter_mode"] == "global"
        })
        .await;
    }
    if now_ms() / WINDOW_MS != w {
        println!("the window ended before Redis returned: the restored spend is not checked");
        return;
    }
    let report = tenants_report(&nodes[2]).await;
    assert_eq!(report["source"], "global", "{report}");
    let periods = report["tenants"][0]["budget"].as_array().unwrap().clone();
    let window = periods.iter().find(|p| p["period"] == "window").unwrap();
    let restored = (window["spent_usd"].as_f64().unwrap() * 1e6).round() as u64;
    println!(
        "redis back empty: the window's counter restored to {restored} µ$ (usage says {spent})"
    );
    assert!(
        restored >= spent * 8 / 10 && restored <= bound,
        "restored {restored}, spent {spent}, bound {bound}"
    );
}

/// A node alone, its clock put 10 s before UTC midnight: a tiny daily budget runs out, the 429 says it
/// resets at midnight, and after midnight the tenant is admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_budget_resets_at_utc_midnight() {
    let m = mock("openai", "oa", &[]);
    const DAY: u64 = 86_400_000;
    let now = now_ms();
    // The node's clock: 23:59:50 UTC of today.
    let offset = (DAY - now % DAY) as i64 - 10_000;
    let cfg = format!(
        "backends:\n{}tenants:\n  - {{ id: t, keys: [sk-t], budget: {{ usd_per_day: 0.005 }} }}\nrouting:\n  strategy: round-robin\n",
        backend(
            "oa",
            &m,
            "openai",
            ", price: { input_per_1m: 20, output_per_1m: 40 }"
        )
    );
    let gw = gateway_env(
        &cfg,
        &[("SLUICE_TEST_CLOCK_OFFSET_MS", &offset.to_string())],
    );
    let url = gw.url();
    let mut refused = None;
    for _ in 0..20 {
        let d = one(url.clone(), "sk-t", 0).await;
        if d.status == 429 {
            refused = Some(d);
            break;
        }
        assert_eq!(d.status, 200, "{}", d.resp.text());
    }
    let d = refused.expect("a $0.005 budget refuses within 20 requests");
    let msg = d.resp.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let midnight = now + (DAY - now % DAY);
    let date = {
        // The node's next midnight is the real one, 10 s after it started.
        let (y, mo, da) = sluice::calendar::civil_from_days((midnight / DAY) as i64);
        format!("{y:04}-{mo:02}-{da:02}T00:00:00Z")
    };
    println!("{msg}");
    assert!(msg.contains("usd_per_day is 0.005 USD"), "{msg}");
    assert!(
        msg.contains(&format!("resets at {date}")),
        "{msg} (expected {date})"
    );
    assert_eq!(d.resp.header("x-ratelimit-budget-period"), Some("day"));
    let retry: u64 = d.resp.header("retry-after").unwrap().parse().unwrap();
    assert!(retry <= 10, "retry-after {retry}");
    poll(Duration::from_secs(14), "admitted after midnight", || {
        let url = url.clone();
        async move { (one(url, "sk-t", 0).await.status == 200).then_some(()) }
    })
    .await;
    let r = request(
        "GET",
        &format!("{url}/admin/tenants"),
        &[("authorization", "Bearer x")],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "no admin token configured: {}", r.text());
}

/// `lua/budget.lua` alone against a real Redis: a take is all periods or none, a settle adds its
/// difference, a refund neither goes below zero nor creates a counter, a floor restores what a Redis
/// that restarted empty lost, and every counter is an integer with an expiry.
#[test]
fn the_budget_script_takes_from_every_period_or_none() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let script = ::redis::Script::new(sluice::ratelimit::budget::BUDGET_LUA);
    let (day, month) = ("p:{t}:budget:day:20261127", "p:{t}:budget:month:202611");
    let mut call = |op: &str, amount: i64, limits: (u64, u64), floor: &str| -> Vec<i64> {
        script
            .key(day)
            .key(month)
            .arg(op)
            .arg(amount)
            .arg(limits.0)
            .arg(60_000)
            .arg(floor)
            .arg(limits.1)
            .arg(120_000)
            .arg(floor)
            .invoke(&mut con)
            .unwrap()
    };
    let lim = (1_000, 5_000);
    // (op, amount, limits, floor, reply, what it shows): a refused take takes nothing, exactly the
    // limit fits, the month can be the tighter, a cost of 0 reads, a refund stops at 0, a floor
    // raises a counter and a lower floor does nothing.
    let m750 = (1_000, 750);
    let steps = [
        ("take", 600, lim, "", [1, 600, 600], "both"),
        ("take", 600, lim, "", [0, 600, 600], "refused"),
        ("take", 400, lim, "", [1, 1_000, 1_000], "fits"),
        ("add", -300, lim, "", [1, 700, 700], "refund"),
        ("take", 100, m750, "", [0, 700, 700], "month"),
        ("take", 0, lim, "", [1, 700, 700], "read"),
        ("add", -5_000, lim, "", [1, 0, 0], "at 0"),
        ("add", 0, lim, "900", [1, 900, 900], "floor"),
        ("add", 50, lim, "900", [1, 950, 950], "lower"),
    ];
    for (op, amount, limits, floor, reply, what) in steps {
        assert_eq!(call(op, amount, limits, floor), reply, "{what}");
    }
    let mut other = redis.connection();
    let v: String = ::redis::cmd("GET").arg(day).query(&mut other).unwrap();
    assert_eq!(v, "950", "integer micro-dollars");
    let ttl: i64 = ::redis::cmd("PTTL").arg(month).query(&mut other).unwrap();
    assert!(ttl > 60_000 && ttl <= 120_000, "pttl {ttl}");
    let _: () = ::redis::cmd("DEL")
        .arg(day)
        .arg(month)
        .query(&mut other)
        .unwrap();
    assert_eq!(call("add", -10, lim, ""), [1, 0, 0]);
    let exists: i64 = ::redis::cmd("EXISTS")
        .arg(day)
        .arg(month)
        .query(&mut other)
        .unwrap();
    assert_eq!(exists, 0, "a refund creates no counter");
    // The script names its keys only through KEYS (Cluster-safe).
    let src = sluice::ratelimit::budget::BUDGET_LUA;
    assert!(src.contains("KEYS[i]") && src.contains("{<tenant>}") && !src.contains("sluice:"));
}
