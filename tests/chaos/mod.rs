//! The chaos suite's harness (issue #15, item 5): a real `redis-server`, three `sluice run` nodes
//! gossiping on loopback and one simulated upstream; open-loop load at a multiple (3×) of one
//! tenant's request limit, round-robin over the nodes; one fault at planned offsets (Redis killed
//! and restarted, a node killed and restarted, a node paused and resumed, Redis paused past the
//! limiter's timeout again and again); and a [`Report`]: the largest sliding 1 s, 10 s and 60 s
//! windows of admitted requests against what the bucket allows (burst + rate × window), Redis calls
//! per admitted request, 5xx and the p99 latency of admitted requests.
//!
//! Shared by `tests/limit_chaos.rs` (short runs, debug build) and `tests/bench/limit_chaos.rs` (long
//! runs, release build); each declares `support` (`tests/support`) at its root next to this module.
#![allow(dead_code)]

mod load;
mod report;

pub use load::{Answer, Outcome};
// The benchmark does not test the window arithmetic.
#[allow(unused_imports)]
pub use report::{Report, largest_sum, largest_window, percentile, table};

use crate::support::redis::RedisServer;
use crate::support::{Proc, backend, free_port, gateway_on, metric, metrics_text, mock, poll};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// The tenant every request is sent for.
const KEY: &str = "sk-chaos";
/// Quiet nodes: the run measures the limiter, not the log writer.
/// Quiet logs, and the gossip key the nodes seal with (`cluster.secret_env`).
const QUIET: &[(&str, &str)] = &[
    ("RUST_LOG", "warn"),
    (
        crate::support::cluster::KEY_ENV,
        crate::support::cluster::KEY_A,
    ),
];
/// The node that is killed or paused.
const VICTIM: usize = 2;

/// The limited tenant: `requests_per_minute`, `burst`, and `shaping.max_wait_ms` (0: refuse at once;
/// above 0: requests wait for the bucket that long); or, with [`Unit::Tokens`], a token limit in
/// place of the request limit.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub rpm: u32,
    pub burst: u32,
    pub max_wait_ms: u64,
    pub unit: Unit,
}

/// What the tenant's bucket counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// `requests_per_minute: rpm, burst: burst`.
    Requests,
    /// `tokens_per_minute: rpm × TOKENS_PER_REQUEST` and no request limit: every request asks
    /// `max_tokens: MAX_TOKENS`, reserved at admission and reconciled with the answer's `usage`.
    /// The bucket holds a minute of tokens: it is drained before the load starts (one request
    /// reserving all of it), so the load meets an empty bucket and its windows are bounded by the
    /// rate alone; `burst` is not used.
    Tokens,
}

/// The token price of a request the load sends in [`Unit::Tokens`], as the bucket counts it (about:
/// its `max_tokens` and a short prompt); the token limit is `rpm` of them a minute.
pub const TOKENS_PER_REQUEST: u32 = 48;
/// `max_tokens` of each request in [`Unit::Tokens`] (the upstream writes that many words).
pub const MAX_TOKENS: u32 = 44;

impl Limits {
    /// What the bucket allows in any window of `secs`, in its unit: burst + rate × window for
    /// requests; rate × window for tokens (the bucket starts drained).
    pub fn allowed(&self, secs: f64) -> f64 {
        match self.unit {
            Unit::Requests => self.burst as f64 + self.rpm as f64 / 60.0 * secs,
            Unit::Tokens => self.tpm() as f64 / 60.0 * secs,
        }
    }

    /// The token limit of [`Unit::Tokens`].
    pub fn tpm(&self) -> u64 {
        u64::from(self.rpm) * u64::from(TOKENS_PER_REQUEST)
    }

    /// The tenant's `limits:` in the nodes' config.
    fn yaml(&self) -> String {
        match self.unit {
            Unit::Requests => format!(
                "{{ requests_per_minute: {}, burst: {} }}",
                self.rpm, self.burst
            ),
            Unit::Tokens => format!("{{ tokens_per_minute: {} }}", self.tpm()),
        }
    }

    /// `max_tokens` of each request of the load (none for requests).
    pub fn max_tokens(&self) -> Option<u32> {
        (self.unit == Unit::Tokens).then_some(MAX_TOKENS)
    }
}

/// What goes wrong during a run, between a quarter and half of its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: the steady state (with `max_wait_ms` above 0: queueing).
    Steady,
    /// Redis SIGKILLed, restarted (empty) on the same port.
    RedisKill,
    /// One node SIGKILLed, restarted with the same config and ports. Its share of the load keeps
    /// coming and fails (`err`) while it is down: the live nodes are offered 2× meanwhile.
    NodeKill,
    /// One node SIGSTOPped for [`Plan::pause_ms`], then SIGCONTinued.
    NodePause,
    /// Redis SIGSTOPped for [`Plan::flap_ms`] (longer than the limiter's timeout), SIGCONTinued,
    /// a second later again, and so on.
    BreakerFlap,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::Steady,
        Fault::RedisKill,
        Fault::NodeKill,
        Fault::NodePause,
        Fault::BreakerFlap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Steady => "steady",
            Fault::RedisKill => "redis-kill",
            Fault::NodeKill => "node-kill",
            Fault::NodePause => "node-pause",
            Fault::BreakerFlap => "breaker-flap",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s.trim())
    }
}

/// How a run goes: its length, the offered load and the fault's parameters.
#[derive(Clone, Debug)]
pub struct Plan {
    /// How long requests are sent (answers to queued requests may come up to `max_wait_ms` later).
    pub seconds: f64,
    /// Offered load as a multiple of the limit's rate.
    pub offered: f64,
    /// The limiter's per-call Redis budget (`cluster.redis.timeout_ms`).
    pub redis_timeout_ms: u64,
    /// How long [`Fault::NodePause`] stops the node.
    pub pause_ms: u64,
    /// How long each Redis pause of [`Fault::BreakerFlap`] lasts.
    pub flap_ms: u64,
}

impl Plan {
    /// When the fault starts and when it is undone (Redis or the node restarted; the last flap).
    pub fn fault_window(&self) -> (f64, f64) {
        (self.seconds / 4.0, self.seconds / 2.0)
    }
}

/// Redis, the upstream and three nodes; what is known of the nodes' Redis call counters.
pub struct Cluster {
    pub redis: RedisServer,
    pub upstream: Proc,
    pub nodes: Vec<Proc>,
    configs: Vec<String>,
    listen: Vec<String>,
    /// Each live node's [`COUNTERS`] when the load started (0 for a node restarted since).
    base: Vec<Counters>,
    /// [`COUNTERS`] counted during the run by node processes that were killed since.
    retired: Counters,
}

/// The nodes' counters a run reports: Redis calls and failed Redis calls.
const COUNTERS: [&str; 2] = [
    "sluice_limiter_redis_calls_total",
    "sluice_limiter_redis_errors_total",
];
pub type Counters = [f64; 2];

impl Cluster {
    pub fn start(limits: &Limits, plan: &Plan) -> Cluster {
        let redis = RedisServer::start();
        // Token runs: as many words as a request's `max_tokens` asks (the drain asks a minute's).
        let words: &[&str] = match limits.unit {
            Unit::Requests => &[],
            Unit::Tokens => &["--output-tokens", "1000000"],
        };
        let upstream = mock("openai", "up", words);
        let gossip: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let seeds: Vec<String> = gossip.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let configs: Vec<String> = gossip
            .iter()
            .enumerate()
            .map(|(i, port)| {
                format!(
                    "node: {{ id: n{i} }}\nbackends:\n{}tenants:\n  - {{ id: chaos, keys: [{KEY}], limits: {} }}\nrouting: {{}}\nshaping: {{ max_wait_ms: {} }}\ncluster:\n  secret_env: SLUICE_GOSSIP_KEY\n  gossip_listen: 127.0.0.1:{port}\n  seeds: [{}]\n  gossip_interval_ms: 100\n  dead_after_ms: 1500\n  redis: {{ url: \"{}\", timeout_ms: {} }}\n",
                    backend("up", &upstream, "openai", ""),
                    limits.yaml(),
                    limits.max_wait_ms,
                    seeds.join(", "),
                    redis.url(),
                    plan.redis_timeout_ms,
                )
            })
            .collect();
        let listen: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let nodes = configs
            .iter()
            .zip(&listen)
            .map(|(c, l)| gateway_on(c, l, QUIET))
            .collect();
        Cluster {
            redis,
            upstream,
            nodes,
            configs,
            listen,
            base: vec![[0.0; 2]; 3],
            retired: [0.0; 2],
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.listen.iter().map(|l| format!("http://{l}")).collect()
    }

    /// Wait until every node sees three members and limits through Redis; then empty Redis (a
    /// full bucket to start from; for tokens, drained by one request reserving all of it) and note
    /// the nodes' Redis call counters.
    pub async fn ready(&mut self, limits: &Limits) {
        for node in &self.nodes {
            poll(
                Duration::from_secs(30),
                "a node seeing three members and limiting through Redis",
                || async {
                    let text = metrics_text(node).await;
                    let members = metric(&text, "sluice_cluster_members", &[]);
                    let global = metric(&text, "sluice_limiter_mode", &[("mode", "global")]);
                    (members == Some(3.0) && global == Some(1.0)).then_some(())
                },
            )
            .await;
        }
        let _: () = redis::cmd("FLUSHALL")
            .query(&mut self.redis.connection())
            .expect("FLUSHALL");
        if limits.unit == Unit::Tokens {
            let drain = load::ask(&self.urls()[0], KEY, Some(limits.tpm() as u32)).await;
            assert_eq!(drain.status, 200, "the drain request: {}", drain.text());
        }
        for (i, node) in self.nodes.iter().enumerate() {
            self.base[i] = counters(node).await;
        }
    }

    /// [`COUNTERS`] of the nodes since [`Cluster::ready`], killed processes included.
    pub async fn counters(&self) -> Counters {
        let mut sum = self.retired;
        for (node, base) in self.nodes.iter().zip(&self.base) {
            add_growth(&mut sum, counters(node).await, base);
        }
        sum
    }

    /// SIGKILL node `i`, keeping what its counters said just before.
    fn kill_node(&mut self, i: usize, rt: &Handle) {
        let now = rt.block_on(counters(&self.nodes[i]));
        add_growth(&mut self.retired, now, &self.base[i]);
        self.base[i] = [0.0; 2];
        self.nodes[i].kill();
    }

    /// Start node `i` again with its config and addresses.
    fn restart_node(&mut self, i: usize) {
        self.nodes[i] = gateway_on(&self.configs[i], &self.listen[i], QUIET);
    }

    fn signal_node(&self, i: usize, sig: libc::c_int) {
        let pid = self.nodes[i].child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }
}

/// `sum += now - base`, counter by counter.
fn add_growth(sum: &mut Counters, now: Counters, base: &Counters) {
    for ((s, n), b) in sum.iter_mut().zip(now).zip(base) {
        *s += n - b;
    }
}

async fn counters(node: &Proc) -> Counters {
    let text = metrics_text(node).await;
    COUNTERS.map(|name| metric(&text, name, &[]).unwrap_or(0.0))
}

/// Start a cluster for `limits`, offer `plan.offered` × the limit for `plan.seconds` while `fault`
/// happens, and report.
pub fn run(fault: Fault, limits: Limits, plan: &Plan) -> Report {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cluster = Cluster::start(&limits, plan);
    rt.block_on(cluster.ready(&limits));
    let urls = cluster.urls();
    let rate = limits.rpm as f64 / 60.0 * plan.offered;
    // Long enough for any queued request to be answered.
    let timeout = Duration::from_millis(limits.max_wait_ms) + Duration::from_secs(10);
    let t0 = Instant::now() + Duration::from_millis(50);
    let handle = rt.handle().clone();
    let (outcomes, events) = std::thread::scope(|s| {
        let c = &mut cluster;
        let actions = s.spawn(move || act(c, fault, plan, t0, &handle));
        let load = load::open_loop(
            &urls,
            KEY,
            limits.max_tokens(),
            t0,
            plan.seconds,
            rate,
            timeout,
        );
        let outcomes = rt.block_on(load);
        (outcomes, actions.join().expect("the fault thread"))
    });
    let counters = rt.block_on(cluster.counters());
    Report::new(fault, limits, plan.seconds, &outcomes, counters, events)
}

/// Sleep until `secs` after `t0`: the planned offsets of the experiment.
fn at(t0: Instant, secs: f64) {
    let t = t0 + Duration::from_secs_f64(secs);
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Carry out `fault` on its schedule; what was done when (seconds after `t0`).
fn act(c: &mut Cluster, fault: Fault, plan: &Plan, t0: Instant, rt: &Handle) -> Vec<(f64, String)> {
    let (from, to) = plan.fault_window();
    let mut events = Vec::new();
    let mut note = |what: String| events.push((t0.elapsed().as_secs_f64(), what));
    match fault {
        Fault::Steady => {}
        Fault::RedisKill => {
            at(t0, from);
            c.redis.kill();
            note("redis killed".into());
            at(t0, to);
            c.redis = RedisServer::start_on(c.redis.port);
            note("redis restarted".into());
        }
        Fault::NodeKill => {
            at(t0, from);
            c.kill_node(VICTIM, rt);
            note(format!("node {VICTIM} killed"));
            at(t0, to);
            c.restart_node(VICTIM);
            note(format!("node {VICTIM} restarted"));
        }
        Fault::NodePause => {
            at(t0, from);
            c.signal_node(VICTIM, libc::SIGSTOP);
            note(format!("node {VICTIM} paused"));
            at(t0, from + plan.pause_ms as f64 / 1000.0);
            c.signal_node(VICTIM, libc::SIGCONT);
            note(format!("node {VICTIM} resumed"));
        }
        Fault::BreakerFlap => {
            let flap = plan.flap_ms as f64 / 1000.0;
            let mut t = from;
            while t + flap <= to {
                at(t0, t);
                c.redis.signal("-STOP");
                note("redis paused".into());
                at(t0, t + flap);
                c.redis.signal("-CONT");
                note("redis resumed".into());
                t += flap + 1.0;
            }
        }
    }
    events
}
