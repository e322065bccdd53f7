//! Outside the pipeline, on the backend's side of it: a built-in simulated AI provider (OpenAI- or
//! Anthropic-compatible) speaking real HTTP and SSE. Imports only `protocol`.
//!
//! Used by the embedded default config, integration tests (`sluice mock-upstream`), the docker
//! demo and benchmarks. Behaviour (latency, pacing, errors, rate limits, health) is configurable
//! at start ([`MockConfig`]) and at run time (`POST /_mock/control`).

mod anthropic;
mod body;
mod control;
mod embeddings;
mod fault;
mod legacy;
mod openai;
mod request;
mod responses;
mod router;
mod sse;
mod state;
#[cfg(test)]
mod tests;
mod text;

pub use fault::StreamFault;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::protocol::Protocol;

/// How long in-progress responses may run on after shutdown before connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Start-up settings of a mock upstream (also the `sluice mock-upstream` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct MockConfig {
    /// Wire protocol to simulate.
    #[arg(long, value_enum, default_value = "openai")]
    pub protocol: Protocol,
    /// Name shown in responses (header `x-mock-name`, and in the answer text).
    #[arg(long, default_value = "mock")]
    pub name: String,
    /// Delay before response headers, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra delay before the first token, in milliseconds (non-streaming answers wait it too).
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Pacing of stream chunks; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub tokens_per_sec: f64,
    /// Fraction (0..1) of API requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Request bucket refill rate per second; over it requests get 429 + `Retry-After`. Every
    /// answer carries the provider's rate-limit headers (`x-ratelimit-*-requests` for OpenAI,
    /// `anthropic-ratelimit-requests-*` for Anthropic).
    #[arg(long)]
    pub rate_limit_rps: Option<f64>,
    /// Request bucket size (default max(1, rps)): `--rate-limit-rps 1 --rate-limit-burst 60` is
    /// 60 requests a minute, refilled one a second.
    #[arg(long)]
    pub rate_limit_burst: Option<f64>,
    /// Token bucket refill rate per second (a request takes its body size / 4 plus its
    /// `max_tokens`); reported as `x-ratelimit-*-tokens` or `anthropic-ratelimit-{tokens,input-tokens,output-tokens}-*`.
    #[arg(long)]
    pub rate_limit_tps: Option<f64>,
    /// Token bucket size (default max(1, tps)).
    #[arg(long)]
    pub rate_limit_token_burst: Option<f64>,
    /// Send no rate-limit headers (a provider that only answers 429 + `Retry-After`).
    #[arg(long)]
    pub no_rate_limit_headers: bool,
    /// If set, API requests must carry this key (`Authorization: Bearer` or `x-api-key`).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Words generated per answer (capped by the request's max_tokens).
    #[arg(long, default_value_t = 16)]
    pub output_tokens: u32,
    /// Pad the text of every non-streamed answer so its body is about this many bytes; 0 = off
    /// (also settable at run time: `body_bytes`). For tests of large upstream bodies.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: u64,
    /// Break every stream this way (also settable at run time: `stream_fault` in `/_mock/control`).
    #[arg(long, value_enum, default_value = "none")]
    pub stream_fault: StreamFault,
}

impl MockConfig {
    /// A config with every knob at its default.
    pub fn new(protocol: Protocol, name: &str) -> Self {
        MockConfig {
            protocol,
            name: name.to_owned(),
            latency_ms: 0,
            ttft_ms: 0,
            tokens_per_sec: 0.0,
            error_rate: 0.0,
            rate_limit_rps: None,
            rate_limit_burst: None,
            rate_limit_tps: None,
            rate_limit_token_burst: None,
            no_rate_limit_headers: false,
            api_key: None,
            output_tokens: 16,
            body_bytes: 0,
            stream_fault: StreamFault::None,
        }
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig::new(Protocol::Openai, "mock")
    }
}

/// Serve on an already bound listener until `shutdown` is cancelled.
///
/// Speaks HTTP/1.1 (keep-alive) and h2c. On shutdown, stops accepting, lets in-progress
/// responses finish for a short grace period, then drops remaining connections.
pub async fn serve(
    listener: TcpListener,
    cfg: MockConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(state::State::new(cfg));
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let st = state.clone();
                    let svc = service_fn(move |req| router::handle(st.clone(), req));
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .into_owned();
                    let conn = graceful.watch(conn);
                    conns.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::trace!(error = %e, "mock connection ended with error");
                        }
                    });
                }
                Err(e) => {
                    // Usually transient (EMFILE, ECONNABORTED): back off briefly and go on.
                    tracing::debug!(error = %e, "mock accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    conns.shutdown().await;
    Ok(())
}

/// Bind `addr` (port 0 allowed), spawn [`serve`] on it, return the bound address.
pub async fn spawn(
    addr: SocketAddr,
    cfg: MockConfig,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let name = cfg.name.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, cfg, shutdown).await {
            tracing::error!(mock = %name, error = %e, "mock upstream stopped");
        }
    });
    Ok(bound)
}
