//! TLS termination with rustls: certificate chain and key from PEM files; ALPN offers h2 and http/1.1.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

pub fn load_tls(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(sc)))
}
