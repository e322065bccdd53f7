//! The accept loop: HTTP/1.1 and HTTP/2 (h2c by preface, h2 by ALPN over TLS), header size limits,
//! graceful drain on shutdown.

use super::{Live, Pipeline};
use crate::protocol::RespBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// An error naming `addr` when another process already listens there. The serving sockets share
/// their port with SO_REUSEPORT (one per worker), which would otherwise let a second Sluice start
/// on a port in use and silently split the traffic with the first; sharing is only on request
/// (`--takeover`).
pub fn refuse_shared_port(addr: std::net::SocketAddr) -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    // SO_REUSEADDR (as the serving sockets) lets a port in TIME_WAIT be taken; a listener is not.
    let _ = probe.set_reuse_address(true);
    match probe.bind(&addr.into()).and_then(|_| probe.listen(1)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "cannot listen on {addr}: the address is already in use by another process (to hand \
             over from a running Sluice without downtime, start the new one with --takeover)"
        )),
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    }
}

/// `n` listening sockets on `addr` sharing the port with SO_REUSEPORT, so the kernel spreads
/// connections over one accept loop per worker. Port 0: the first socket picks the port, the others join it.
pub fn reuseport_listeners(
    addr: std::net::SocketAddr,
    n: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    let mut bind_to = addr;
    for _ in 0..n.max(1) {
        let s = Socket::new(
            Domain::for_address(bind_to),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        s.set_reuse_address(true)?;
        #[cfg(unix)]
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.set_tcp_nodelay(true)?;
        s.bind(&bind_to.into())?;
        s.listen(4096)?;
        let l: std::net::TcpListener = s.into();
        bind_to = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Keeps a timer at most a second away in this worker's timer wheel. Tokio wakes its driver (an
/// eventfd write and a spurious poll) whenever a new timer is due before every timer it knew of when
/// it last parked; per-request timers (header read, first byte) were that often enough to cost a
/// syscall on about every third request. With a near tick armed they never are.
async fn keep_a_timer_near(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
    }
}

/// Serve one connection to its end: with hyper's HTTP/1 server when `$http1`, else with the
/// auto-detecting one; watched for graceful shutdown.
macro_rules! serve_one {
    ($io:expr, $http1:expr, $h1:expr, $auto:expr, $svc:expr, $watcher:expr, $remote:expr) => {{
        let ended: Result<(), Box<dyn std::error::Error + Send + Sync>> = if $http1 {
            $watcher
                .watch($h1.serve_connection($io, $svc))
                .await
                .map_err(Into::into)
        } else {
            $watcher
                .watch($auto.serve_connection_with_upgrades($io, $svc).into_owned())
                .await
        };
        if let Err(e) = ended {
            let remote = $remote;
            tracing::debug!(error = %e, %remote, "connection ended with error");
        }
    }};
}

/// Whether a plaintext connection speaks HTTP/1 rather than HTTP/2 with prior knowledge (whose
/// preface starts with `PRI`, a method HTTP/1 does not have), judged from its first bytes without
/// reading them. Such a connection goes straight to hyper's HTTP/1 server: the auto-detecting one
/// reads the first bytes itself and hands them back through a wrapper, after which hyper's first
/// read is short and its read buffer doubles to 16 KiB, held for the connection's life (under
/// every open stream). Undecided (fewer bytes so far, closed, an error): the auto-detecting server.
async fn speaks_http1(stream: &TcpStream) -> bool {
    let mut first = [0u8; 3];
    match stream.peek(&mut first).await {
        Ok(n) => n > 0 && !b"PRI".starts_with(&first[..n]),
        Err(_) => false,
    }
}

/// Serve until `shutdown`, then wait up to `drain` for open connections to finish.
/// Each request gets the pipeline current when it arrives (a config reload swaps it) and keeps it
/// to the end.
pub async fn serve(
    pipeline: Live,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    serve_with(pipeline, listener, tls, shutdown, drain, super::handle).await
}

/// The admin listener (`admin.listen`, plain HTTP): the operator endpoints only, until `shutdown`.
pub async fn serve_admin(pipeline: Live, listener: TcpListener, shutdown: CancellationToken) {
    let drain = Duration::from_secs(1);
    serve_with(
        pipeline,
        listener,
        None,
        shutdown,
        drain,
        super::handle_admin,
    )
    .await
}

async fn serve_with<H, F>(
    pipeline: Live,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    drain: Duration,
    handler: H,
) where
    H: Fn(Arc<Pipeline>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<RespBody>> + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    // `listen.max_header_bytes` needs a restart to change.
    let max_header = pipeline.load().max_header_bytes;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(max_header.max(8192))
        .keep_alive(true)
        // Head and a small body in one buffer and one write(2), rather than writev over a queue.
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_header as u32);
    let builder = Arc::new(builder);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(max_header.max(8192))
        .keep_alive(true)
        .writev(false);
    let h1 = Arc::new(h1);
    let graceful = GracefulShutdown::new();
    tokio::spawn(keep_a_timer_near(shutdown.clone()));
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if let Some(suppressed) = crate::observe::log_gate::allow("accept_failed") {
                        tracing::warn!(error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let p = pipeline.clone();
        // Boxed: hyper keeps the service future's slot for the connection's whole life, so inline
        // the request's largest state (several KiB) would stay allocated under every open stream;
        // boxed it is freed as soon as the response head is out.
        let svc = service_fn(move |req| {
            let handling = Box::pin(handler(p.load_full(), req));
            async move { Ok::<_, std::convert::Infallible>(handling.await) }
        });
        match &tls {
            None => {
                let (builder, h1, watcher) = (builder.clone(), h1.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let http1 = speaks_http1(&stream).await;
                    let io = TokioIo::new(stream);
                    serve_one!(io, http1, h1, builder, svc, watcher, remote);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let (builder, h1) = (builder.clone(), h1.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls_stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %remote, "tls handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    // HTTP/1.1 agreed by ALPN: hyper's HTTP/1 server directly (see `speaks_http1`).
                    let http1 = tls_stream.get_ref().1.alpn_protocol() == Some(b"http/1.1");
                    let io = TokioIo::new(tls_stream);
                    serve_one!(io, http1, h1, builder, svc, watcher, remote);
                });
            }
        }
    }
    tracing::info!("draining connections");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(drain) => tracing::warn!("drain timed out; closing remaining connections"),
    }
}
