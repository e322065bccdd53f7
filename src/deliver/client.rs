//! The upstream client: one pooled hyper-util client per backend (keep-alive, HTTP/2 over TLS via
//! ALPN, rustls for https), with that backend's connect timeout.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

pub type UpstreamError = hyper_util::client::legacy::Error;

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
                for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
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
    pub fn new(connect_timeout: Duration, tls: Arc<rustls::ClientConfig>) -> UpstreamClient {
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
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        UpstreamClient { inner }
    }

    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.inner.request(req).await
    }

    /// An active health probe: any 2xx within the timeout is healthy.
    pub async fn probe(&self, url: &str, timeout: Duration) -> bool {
        let Ok(req) = Request::get(url).body(Full::new(Bytes::new())) else {
            return false;
        };
        match tokio::time::timeout(timeout, self.inner.request(req)).await {
            Ok(Ok(resp)) => {
                let ok = resp.status().is_success();
                let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
                ok
            }
            _ => false,
        }
    }
}
