//! The upstream client: one pooled hyper-util client per backend (keep-alive, HTTP/2 over TLS via
//! ALPN, rustls for https), with that backend's connect timeout.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

use super::h1;
pub use super::upstream_error::UpstreamError;
use crate::protocol::{BoxError, UPSTREAM_PATHS};

/// An upstream answer's body: from this worker's own HTTP/1.1 connection, or from hyper's client.
#[derive(Debug)]
pub enum UpstreamBody {
    H1(h1::Body),
    Hyper(Incoming),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// How long an idle upstream connection is kept, by hyper's pooled client and the HTTP/1.1 pool alike.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

thread_local! {
    /// Which client set this thread uses: 0 for background tasks, 1.. for the serving workers, so each
    /// worker's upstream connections live on its own runtime (no cross-thread wakeups per request).
    static CLIENT_SET: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Mark this thread as serving worker `i` (0-based): it uses client set `i + 1`.
pub fn set_worker(i: usize) {
    CLIENT_SET.with(|c| c.set(i + 1));
}

/// The client set of this thread.
pub fn client_set() -> usize {
    CLIENT_SET.with(|c| c.get())
}

#[derive(Clone, Debug)]
pub struct UpstreamClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// For `http://` backends: this worker's own HTTP/1.1 connections.
    h1: Option<Arc<h1::Pool>>,
    /// Request targets of the upstream API paths, parsed once: origin-form for the HTTP/1.1 pool,
    /// absolute for the pooled client.
    targets: Arc<[(&'static str, http::Uri)]>,
    /// What goes before a path not among the parsed ones.
    prefix: Arc<str>,
}

/// TLS roots for https upstreams: the system's, plus `SLUICE_EXTRA_CA` (a PEM file) when set, so a
/// private or self-signed upstream can be trusted explicitly.
pub fn tls_client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Ok(path) = std::env::var("SLUICE_EXTRA_CA") {
        match std::fs::read(&path) {
            Ok(pem) => {
                use rustls::pki_types::{CertificateDer, pem::PemObject};
                for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                    let _ = roots.add(cert);
                }
            }
            Err(e) => tracing::warn!(path = %path, error = %e, "cannot read SLUICE_EXTRA_CA"),
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

impl UpstreamClient {
    /// `base_url`: the backend's; plain `http://` ones get a per-worker HTTP/1.1 pool.
    pub fn new(
        connect_timeout: Duration,
        tls: Arc<rustls::ClientConfig>,
        base_url: &str,
    ) -> UpstreamClient {
        let h1 = base_url
            .parse::<http::Uri>()
            .ok()
            .filter(|u| u.scheme_str() == Some("http"))
            .and_then(|u| {
                let a = u.authority()?;
                Some(if a.port().is_some() {
                    a.to_string()
                } else {
                    format!("{}:80", a.host())
                })
            })
            .and_then(|authority| {
                h1::Pool::new(authority, connect_timeout, POOL_IDLE_TIMEOUT).map(Arc::new)
            });
        let base_url = base_url.trim_end_matches('/');
        // Origin-form targets (the base URL's path) for the HTTP/1.1 pool, absolute ones for hyper.
        let prefix: Arc<str> = match &h1 {
            Some(_) => base_url
                .parse::<http::Uri>()
                .map(|u| Arc::from(u.path().trim_end_matches('/')))
                .unwrap_or_else(|_| Arc::from("")),
            None => Arc::from(base_url),
        };
        let targets: Arc<[(&'static str, http::Uri)]> = UPSTREAM_PATHS
            .iter()
            .filter_map(|p| Some((*p, format!("{prefix}{p}").parse().ok()?)))
            .collect();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(1024)
            .build(https);
        UpstreamClient {
            inner,
            h1,
            targets,
            prefix,
        }
    }

    /// The request target for an upstream API `path` (origin-form when the HTTP/1.1 pool sends it).
    pub fn target(&self, path: &str) -> Result<http::Uri, http::uri::InvalidUri> {
        match self.targets.iter().find(|(p, _)| *p == path) {
            Some((_, uri)) => Ok(uri.clone()),
            None => format!("{}{path}", self.prefix).parse(),
        }
    }

    /// Send a request built with [`UpstreamClient::target`].
    pub async fn send(&self, req: Request<Bytes>) -> Result<Response<UpstreamBody>, UpstreamError> {
        match &self.h1 {
            Some(pool) => Ok(pool.send(req).await?.map(UpstreamBody::H1)),
            None => {
                let resp = self.inner.request(req.map(Full::new)).await?;
                Ok(resp.map(UpstreamBody::Hyper))
            }
        }
    }

    /// A probe: `GET {base}{path}` with `headers`, through the same client as the traffic (the
    /// in-task HTTP/1.1 pool for `http://` backends, hyper's for the others), its answer read to the
    /// end (at most [`PROBE_BODY_MAX`]) so the connection is reused. The status, or `None` when no
    /// complete answer came within `timeout`.
    pub async fn probe(
        &self,
        path: &str,
        headers: http::HeaderMap,
        timeout: Duration,
    ) -> Option<http::StatusCode> {
        let mut req = Request::get(self.target(path).ok()?)
            .body(Bytes::new())
            .ok()?;
        *req.headers_mut() = headers;
        let exchange = async {
            let resp = self.send(req).await.ok()?;
            let status = resp.status();
            crate::protocol::read_whole(resp.into_body(), PROBE_BODY_MAX)
                .await
                .ok()?;
            Some(status)
        };
        tokio::time::timeout(timeout, exchange).await.ok().flatten()
    }
}

/// The most of a probe's answer read (a model list is tens of KiB).
const PROBE_BODY_MAX: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// The next request head on `sock` (requests without a body).
    async fn next_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> String {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = buf.drain(..end + 4).collect();
                return String::from_utf8(head).unwrap().to_lowercase();
            }
            let mut chunk = [0u8; 1024];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn client_for(addr: std::net::SocketAddr) -> UpstreamClient {
        let base = format!("http://{addr}/base");
        UpstreamClient::new(Duration::from_secs(1), tls_client_config(), &base)
    }

    #[tokio::test]
    async fn probes_of_an_http_backend_go_through_the_in_task_pool_and_keep_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // One connection answers both probes: the second reuses the pooled connection.
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut heads = Vec::new();
            for status in ["200 OK", "503 Service Unavailable"] {
                heads.push(next_head(&mut sock, &mut buf).await);
                let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
                sock.write_all(answer.as_bytes()).await.unwrap();
            }
            heads
        });
        let client = client_for(addr);
        assert!(
            client.h1.is_some(),
            "http:// backends use the in-task client"
        );
        let mut key = HeaderMap::new();
        key.insert("authorization", "Bearer k".parse().unwrap());
        let timeout = Duration::from_secs(5);
        assert_eq!(
            client.probe("/health", key, timeout).await,
            Some(StatusCode::OK)
        );
        assert_eq!(
            client.probe("/v1/models", HeaderMap::new(), timeout).await,
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("get /base/health http/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(heads[0].contains("authorization: bearer k"), "{}", heads[0]);
        assert!(!heads[0].contains("content-length"), "{}", heads[0]);
        assert!(
            heads[1].starts_with("get /base/v1/models http/1.1\r\n"),
            "{}",
            heads[1]
        );
    }

    #[tokio::test]
    async fn a_probe_whose_answer_does_not_complete_in_time_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            next_head(&mut sock, &mut Vec::new()).await;
            // A head, then 2 of the 10 bytes promised, then silence.
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok";
            sock.write_all(answer.as_bytes()).await.unwrap();
            let _ = held.await;
        });
        let client = client_for(addr);
        let probe = client.probe("/health", HeaderMap::new(), Duration::from_millis(200));
        assert_eq!(probe.await, None);
        let _ = release.send(());
    }
}
