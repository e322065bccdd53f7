//! The `sluice` command: run the gateway (default), validate a config, or run a simulated upstream.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use sluice::app::App;
use sluice::config::Config;
use sluice::mock::{self, MockConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A faster allocator than glibc's for the many small, short-lived allocations of request handling
/// (feature `system-alloc`: glibc's, for heap profilers such as `heaptrack`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A clustered AI API gateway: receive, shape, route, balance, deliver."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (without --config: the embedded default with built-in simulated upstreams).
    Run(RunArgs),
    /// Check a config file; exit 0 when valid, 1 with the field and line otherwise.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a simulated OpenAI- or Anthropic-compatible provider.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        #[command(flatten)]
        cfg: MockConfig,
    },
}

#[derive(clap::Args, Default)]
struct RunArgs {
    #[arg(long, short, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Override `listen.address`.
    #[arg(long)]
    listen: Option<String>,
    /// Log JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Serving threads (default: one per core).
    #[arg(long, env = "SLUICE_WORKERS")]
    workers: Option<usize>,
    /// Reload the config when its file changes (checked every second), besides SIGHUP and
    /// `POST /admin/reload`.
    #[arg(long, env = "SLUICE_WATCH")]
    watch: bool,
    /// Share the listening port with the Sluice already serving it, for a zero-downtime hand-over
    /// (README: "Replacing a running node"). Without it a port in use is an error.
    #[arg(long, env = "SLUICE_TAKEOVER")]
    takeover: bool,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The Redis client's own warnings repeat on every failed call (the limiter logs each
        // mode change once).
        "info,redis=error".into()
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd.unwrap_or(Cmd::Run(RunArgs::default())) {
        Cmd::Validate { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::FAILURE
            }
        },
        Cmd::MockUpstream { listen, cfg } => {
            init_tracing(false);
            runtime().block_on(async move {
                let shutdown = CancellationToken::new();
                let listener = match tokio::net::TcpListener::bind(listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("cannot listen on {listen}: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let addr = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                println!(
                    "mock upstream `{}` ({}) listening on http://{addr}",
                    cfg.name,
                    cfg.protocol.as_str()
                );
                let s = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    s.cancel();
                });
                match mock::serve(listener, cfg, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("mock upstream failed: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Cmd::Run(args) => run(args),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Background work (probes, gossip, the Redis supervisor, built-in simulated upstreams): one thread.
fn background_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn run(args: RunArgs) -> ExitCode {
    // The file's text too: its hash is the config version (see `reload`).
    let loaded = args.config.as_ref().map(|p| {
        std::fs::read_to_string(p)
            .map_err(|e| sluice::config::ConfigError::Read {
                path: p.display().to_string(),
                reason: e.to_string(),
            })
            .and_then(|text| Config::parse(&text).map(|c| (c, text)))
    });
    let (mut cfg, source, version) = match (&args.config, loaded) {
        (Some(p), Some(Ok((c, text)))) => (
            c,
            p.display().to_string(),
            Some(sluice::reload::version_of(&text)),
        ),
        (Some(p), Some(Err(e))) => {
            eprintln!("{}: {e}", p.display());
            return ExitCode::FAILURE;
        }
        _ => (
            Config::embedded_default(),
            "embedded default".to_string(),
            None,
        ),
    };
    if let Some(l) = &args.listen {
        cfg.listen.address = l.clone();
    }
    init_tracing(args.log_json || cfg.node.log_json);
    // Every open stream holds two sockets (client and upstream): take the whole hard limit on open
    // files, as nginx's `worker_rlimit_nofile` lets operators do, after raising the hard limit itself
    // where that is permitted (root, CAP_SYS_RESOURCE).
    #[cfg(unix)]
    {
        raise_nofile_hard_limit();
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => tracing::info!(open_files = n, "open-file limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    background_runtime().block_on(async move {
        let addr = match cfg.listen.socket_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let tls = match &cfg.listen.tls {
            Some(t) => match sluice::receive::load_tls_reloadable(t) {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("tls: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
        if !args.takeover
            && let Err(e) = sluice::receive::refuse_shared_port(addr)
        {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
        let listeners = match sluice::receive::reuseport_listeners(addr, workers) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let admin_listener = match admin_listener(&cfg, args.takeover) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let local = listeners[0].local_addr().unwrap_or(addr);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let key = cfg.tenants.first().and_then(|t| t.value.resolved_keys().into_iter().next());
        let shutdown = CancellationToken::new();
        let v = version.clone().unwrap_or_else(|| sluice::reload::version_of(sluice::config::DEFAULT_YAML));
        let app = match App::build_versioned(cfg, shutdown.clone(), workers, v).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let (tls, certs) = tls.unzip();
        if let Some(c) = certs {
            app.set_tls(c);
        }
        if let Some(path) = args.config.clone() {
            app.set_source(sluice::app::Source { path: path.clone(), listen: args.listen.clone() });
            #[cfg(unix)]
            tokio::spawn(sluice::reload::triggers::on_sighup(app.reloader.clone(), shutdown.clone()));
            if args.watch {
                tokio::spawn(sluice::reload::triggers::watch_file(path, app.reloader.clone(), Duration::from_secs(1), shutdown.clone()));
            }
        }
        tracing::info!(config = %source, node = %app.cfg.node.id, version = %app.reloader.version(), "sluice started");
        if let Some(l) = admin_listener {
            let admin_addr = l.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
            tracing::info!(address = %admin_addr, "admin listener: /metrics, /admin/*, /healthz, /readyz");
            println!("sluice admin listening on http://{admin_addr}");
            tokio::spawn(sluice::receive::serve_admin(app.live.clone(), l, shutdown.clone()));
        }
        println!("sluice listening on {scheme}://{local} ({source})");
        let auth = key.map(|k| format!(" -H 'Authorization: Bearer {k}'")).unwrap_or_default();
        let insecure = if tls.is_some() { " -k" } else { "" };
        println!(
            "try: curl{insecure} {scheme}://{local}/v1/chat/completions{auth} -H 'Content-Type: application/json' -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
        );
        let s = shutdown.clone();
        let drain = app.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            let grace = Duration::from_millis(drain.cfg.listen.drain_grace_ms);
            tracing::info!(grace_ms = grace.as_millis() as u64, "shutdown signal received: not ready any more");
            drain.live.load().admin.drain();
            tokio::time::sleep(grace).await;
            s.cancel();
        });
        // One thread per core, each a single-threaded runtime with its own listener (SO_REUSEPORT) and
        // its own upstream connections: a request never crosses threads.
        let threads: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let (pipeline, tls, shutdown) = (app.live.clone(), tls.clone(), shutdown.clone());
                std::thread::Builder::new()
                    .name(format!("sluice-worker-{i}"))
                    .spawn(move || {
                        sluice::deliver::set_worker(i);
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("worker runtime");
                        rt.block_on(async move {
                            tokio::spawn(sluice::observe::lag::probe(i, shutdown.clone()));
                            match tokio::net::TcpListener::from_std(listener) {
                                Ok(l) => sluice::receive::serve(pipeline, l, tls, shutdown, Duration::from_secs(30)).await,
                                Err(e) => tracing::error!(error = %e, worker = i, "cannot register the listener"),
                            }
                        });
                    })
                    .expect("spawn worker thread")
            })
            .collect();
        let joined = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())));
        let _ = joined.await;
        app.leave().await;
        app.live.load_full().observe.flush(Duration::from_secs(5)).await;
        ExitCode::SUCCESS
    })
}

/// The admin listener (`admin.listen`), if configured: like the public one, never on a port another
/// process serves unless `--takeover`.
fn admin_listener(cfg: &Config, takeover: bool) -> Result<Option<tokio::net::TcpListener>, String> {
    let Some(addr) = cfg.admin.socket_addr().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if !takeover {
        sluice::receive::refuse_shared_port(addr)?;
    }
    let bound = sluice::receive::reuseport_listeners(addr, 1)
        .and_then(|mut l| tokio::net::TcpListener::from_std(l.remove(0)))
        .map_err(|e| format!("admin.listen: cannot listen on {addr}: {e}"))?;
    Ok(Some(bound))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Most open files asked for: a million sockets is half a million streams, far past one node.
#[cfg(unix)]
const NOFILE_WANTED: u64 = 1 << 20;

/// Raise the hard open-file limit towards [`NOFILE_WANTED`] (at most the kernel's `fs.nr_open`) when
/// the process may; otherwise leave it as it is (the soft limit still goes up to it).
#[cfg(unix)]
fn raise_nofile_hard_limit() {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return;
    };
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(NOFILE_WANTED);
    let want = NOFILE_WANTED.min(ceiling);
    if hard < want {
        // Not permitted without CAP_SYS_RESOURCE: then the hard limit stays.
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, soft, want);
    }
}
