//! Session affinity across backend loss, TLS termination (HTTP/1.1 and HTTP/2), and an HTTPS upstream.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use support::*;

async fn backend_for(gw: &Proc, session: &str) -> String {
    let r = chat(gw, "sk-acme", hello("m"), &[("x-session-id", session)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-sluice-backend").unwrap().to_string()
}

#[tokio::test]
async fn a_session_stays_on_its_backend_and_only_a_lost_backends_sessions_move() {
    let mut mocks: Vec<Proc> = (0..3)
        .map(|i| mock("openai", &format!("m{i}"), &[]))
        .collect();
    let mut cfg = String::from("backends:\n");
    for (i, m) in mocks.iter().enumerate() {
        cfg.push_str(&backend(
            &format!("b{i}"),
            m,
            "openai",
            ", eject_after: 1, eject_for_ms: 60000",
        ));
    }
    cfg.push_str(TENANTS);
    cfg.push_str("routing:\n  strategy: round-robin\n  affinity: { header: x-session-id }\n  max_attempts: 3\n");
    let gw = gateway(&cfg);
    let sessions: Vec<String> = (0..40).map(|i| format!("conversation-{i}")).collect();
    let mut first = HashMap::new();
    for s in &sessions {
        first.insert(s.clone(), backend_for(&gw, s).await);
    }
    for s in &sessions {
        assert_eq!(backend_for(&gw, s).await, first[s], "session {s} moved");
    }
    let used: std::collections::HashSet<_> = first.values().collect();
    assert_eq!(
        used.len(),
        3,
        "sessions spread over all backends: {first:?}"
    );
    // b1 dies: its sessions move, every other session stays put.
    mocks[1].kill();
    for s in &sessions {
        let now = backend_for(&gw, s).await;
        if first[s] == "b1" {
            assert_ne!(now, "b1");
        } else {
            assert_eq!(
                now, first[s],
                "session {s} moved although its backend is alive"
            );
        }
    }
}

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[tokio::test]
async fn tls_termination_over_http1_and_http2_and_an_https_upstream() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tmp_dir();
    let (cert, key) = self_signed(&dir);
    let m = mock("openai", "behind-tls", &[]);
    let tls_cfg = format!(
        "listen: {{ tls: {{ cert: \"{}\", key: \"{}\" }} }}\nbackends:\n{}{TENANTS}routing: {{}}\n",
        cert.display(),
        key.display(),
        backend("sim", &m, "openai", "")
    );
    let front = gateway(&tls_cfg);
    let https_url = format!("https://{}/v1/chat/completions", front.addr);

    // A client trusting only our self-signed certificate.
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    for http2 in [false, true] {
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_only();
        let conn = if http2 {
            b.enable_http2().build()
        } else {
            b.enable_http1().build()
        };
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(http2)
                .build::<_, Full<Bytes>>(conn);
        let req = http::Request::post(&https_url)
            .header("authorization", "Bearer sk-acme")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(hello("m").to_string())))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let want = if http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(resp.version(), want);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("chat.completion"));
    }

    // A second gateway whose backend is the first one over HTTPS, trusting its certificate.
    let back_cfg = format!(
        "backends:\n  - {{ name: tls-upstream, url: \"https://{}\", protocol: openai, api_key_env: FRONT_KEY }}\n{TENANTS}routing: {{}}\n",
        front.addr
    );
    let edge = gateway_env(
        &back_cfg,
        &[
            ("SLUICE_EXTRA_CA", cert.to_str().unwrap()),
            ("FRONT_KEY", "sk-acme"),
        ],
    );
    let r = chat(&edge, "sk-acme", hello("m"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-backend"), Some("tls-upstream"));
    assert!(
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("behind-tls")
    );
}
