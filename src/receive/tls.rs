//! TLS termination with rustls: certificate chain and key from PEM files; ALPN offers h2 and http/1.1.
//! The certificate is served through [`TlsCerts`], so a config reload re-reads the files and new
//! handshakes get the new certificate (rotation without restart); open connections keep theirs.

use crate::config::TlsConfig;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{path}`: {reason}")]
    Read { path: String, reason: String },
    #[error("no certificate in `{0}`")]
    NoCert(String),
    #[error("no private key in `{0}`")]
    NoKey(String),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The listener's certificate, swappable: each handshake takes the one current then.
#[derive(Debug)]
pub struct TlsCerts {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for TlsCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl TlsCerts {
    /// Re-read the certificate and key files; on error the one served stays.
    pub fn reload(&self, cfg: &TlsConfig) -> Result<(), TlsError> {
        self.current.store(Arc::new(certified_key(cfg)?));
        Ok(())
    }
}

/// The acceptor for the listener, and the handle a reload swaps its certificate through.
pub fn load_tls_reloadable(cfg: &TlsConfig) -> Result<(TlsAcceptor, Arc<TlsCerts>), TlsError> {
    let certs = Arc::new(TlsCerts {
        current: ArcSwap::from_pointee(certified_key(cfg)?),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(sc)), certs))
}

pub fn load_tls(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    load_tls_reloadable(cfg).map(|(acceptor, _)| acceptor)
}

fn certified_key(cfg: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| TlsError::Read {
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    let cert_pem = read(&cfg.cert)?;
    let key_pem = read(&cfg.key)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .flatten()
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCert(cfg.cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsError::NoKey(cfg.key.display().to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(certs, key, &provider)?;
    Ok(ck)
}
