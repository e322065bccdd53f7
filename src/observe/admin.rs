//! The operator endpoints: `/healthz`, `/readyz` (503 while draining or with no backend able to take
//! traffic), `/metrics`, and `/admin/cluster` and `/admin/tenants` behind the admin token (`POST
//! /admin/reload`, which waits for the reload, is answered by Receive's handler). What they report
//! of the other
//! stages comes in as closures wired by `app`, so this file imports none of them.

use crate::error::GatewayError;
use crate::protocol::{Protocol, RespBody, full_body};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

type Probe<T> = Box<dyn Fn() -> T + Send + Sync>;
/// A report that needs I/O (`/admin/tenants` reads the spend counters in Redis).
pub type Report = std::pin::Pin<Box<dyn std::future::Future<Output = Value> + Send>>;
pub type AsyncProbe = Box<dyn Fn() -> Report + Send + Sync>;

pub struct Admin {
    metrics: PrometheusHandle,
    /// The variable holding the admin token (`admin_token_env`).
    token_env: Option<String>,
    /// Shutting down: `/readyz` says 503 so load balancers move away (shared by the admins of
    /// successive configs).
    draining: Arc<AtomicBool>,
    /// Some backend can take traffic.
    any_backend: Probe<bool>,
    /// `/admin/cluster`'s body.
    cluster: Probe<Value>,
    /// Served on a listener of their own (`admin.listen`): the public one keeps only the probes.
    own_listener: bool,
    /// `/admin/tenants`'s body: each tenant's spend, budget and reset.
    tenants: Option<AsyncProbe>,
}

impl Admin {
    pub fn new(
        metrics: PrometheusHandle,
        token_env: Option<String>,
        any_backend: Probe<bool>,
        cluster: Probe<Value>,
    ) -> Admin {
        Admin {
            metrics,
            token_env,
            draining: Arc::default(),
            any_backend,
            cluster,
            own_listener: false,
            tenants: None,
        }
    }

    /// `/admin/tenants` answers with what `probe` reports.
    pub fn with_tenants(mut self, probe: AsyncProbe) -> Admin {
        self.tenants = Some(probe);
        self
    }

    /// `/admin/tenants` (admin token), or None for any other request. `public`: asked on the public
    /// listener (which does not serve it when the operator endpoints have their own).
    pub async fn answer_tenants(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        public: bool,
    ) -> Option<Response<RespBody>> {
        if method != Method::GET || path != "/admin/tenants" || (public && self.own_listener) {
            return None;
        }
        let probe = self.tenants.as_ref()?;
        if !self.is_admin(headers) {
            return Some(GatewayError::AdminForbidden.response(Protocol::Openai));
        }
        Some(json_response(StatusCode::OK, &probe().await))
    }

    /// The operator endpoints have a listener of their own (`admin.listen`).
    pub fn with_own_listener(mut self, own: bool) -> Admin {
        self.own_listener = own;
        self
    }

    /// Share the draining flag of the admin this one replaces (a config reload).
    pub fn with_draining(mut self, draining: Arc<AtomicBool>) -> Admin {
        self.draining = draining;
        self
    }

    /// The draining flag, for the admin of the next config.
    pub fn draining(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// Whether the public listener serves `path` (the operator endpoints may have their own).
    pub fn public(&self, path: &str) -> bool {
        !self.own_listener || matches!(path, "/healthz" | "/readyz")
    }

    /// Stop saying ready (on SIGTERM, before the listeners close).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ready when not draining and at least one backend can take traffic.
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && (self.any_backend)()
    }

    /// On the public listener: [`Admin::answer`], but only `/healthz` and `/readyz` (for load
    /// balancers) when the operator endpoints have a listener of their own.
    pub fn answer_public(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Response<RespBody>> {
        if !self.public(path) {
            return None;
        }
        self.answer(method, path, headers)
    }

    /// The answer to an operator endpoint, or None when `path` is not one.
    pub fn answer(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Response<RespBody>> {
        if method != Method::GET {
            return None;
        }
        Some(match path {
            "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => {
                let ready = self.ready();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_response(status, &json!({"ready": ready}))
            }
            "/metrics" => Response::builder()
                .header(CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(full_body(self.metrics.render()))
                .expect("valid response"),
            "/admin/cluster" if self.is_admin(headers) => {
                json_response(StatusCode::OK, &(self.cluster)())
            }
            "/admin/cluster" => GatewayError::AdminForbidden.response(Protocol::Openai),
            _ => return None,
        })
    }

    /// Whether `headers` carry the admin token (`admin_token_env` must name a set variable).
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        let Some(token) = self.token_env.as_ref().and_then(|e| std::env::var(e).ok()) else {
            return false;
        };
        if token.is_empty() {
            return false;
        }
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Length first, then every byte: no early exit on the first difference.
        given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }
}

pub fn json_response(status: StatusCode, v: &Value) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(full_body(v.to_string()))
        .expect("valid response")
}

/// A JSON body already serialized.
pub fn json_response_bytes(status: StatusCode, body: bytes::Bytes) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(full_body(body))
        .expect("valid response")
}
