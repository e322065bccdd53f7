//! Errors a client can see. Each maps to an HTTP status, an error type in the client's API shape,
//! and a low-cardinality metric label.

use crate::observe::Metrics;
use crate::protocol::{Protocol, RespBody, full_body};
use crate::ratelimit::Decision;
use crate::shape::AdmitError;
use http::Response;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::json;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("missing or unknown api key: send `Authorization: Bearer <key>` or `x-api-key`")]
    Unauthorized,
    #[error("unknown path `{0}`")]
    NotFound(String),
    #[error("method not allowed for `{0}`")]
    MethodNotAllowed(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("request body is not valid json: {0}")]
    BadJson(String),
    #[error("invalid request: field `{field}`: {reason}")]
    BadRequest { field: String, reason: String },
    #[error("{0}")]
    Translate(#[from] crate::translate::TranslateError),
    #[error("model `{0}` is not served by any backend of this route")]
    ModelNotFound(String),
    #[error("rate limit exceeded for tenant `{tenant}`: retry after {retry_after_ms} ms")]
    RateLimited {
        tenant: String,
        retry_after_ms: u64,
        decision: Box<Decision>,
    },
    /// A spend budget would be exceeded: the message names the budget and when it resets.
    #[error("{message}")]
    OverBudget {
        message: String,
        decision: Box<Decision>,
    },
    #[error("no healthy backend for route `{0}`")]
    NoHealthyBackend(String),
    #[error("every backend of route `{route}` is rate limited upstream: retry after {} ms", retry_after.as_millis())]
    UpstreamsRateLimited {
        route: String,
        retry_after: Duration,
    },
    #[error("upstream `{0}` timed out")]
    UpstreamTimeout(String),
    #[error("upstream `{backend}` is unreachable: {reason}")]
    UpstreamUnavailable { backend: String, reason: String },
    #[error("upstream `{backend}` answered something that is not a valid answer: {reason}")]
    UpstreamMalformed { backend: String, reason: String },
    #[error("admin endpoints need `Authorization: Bearer <admin token>`")]
    AdminForbidden,
    #[error("{0}")]
    BadDeadline(String),
    #[error("request not served: {0}")]
    Shed(crate::shape::Shed),
    #[error("upstream `{0}` rejected the gateway's credentials (check the backend's api_key_env)")]
    UpstreamCredentials(String),
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("too many request bodies are being received at once: retry shortly")]
    BodiesOverBudget,
}

impl From<AdmitError> for GatewayError {
    fn from(e: AdmitError) -> GatewayError {
        match e {
            AdmitError::BadDeadline { .. } => GatewayError::BadDeadline(e.to_string()),
            AdmitError::RateLimited { tenant, decision } => GatewayError::RateLimited {
                tenant,
                retry_after_ms: decision.retry_after.unwrap_or_default().as_millis() as u64,
                decision: Box::new(decision),
            },
            AdmitError::OverBudget { .. } => GatewayError::OverBudget {
                message: e.to_string(),
                decision: Box::new(match e {
                    AdmitError::OverBudget { decision, .. } => decision,
                    _ => Decision::default(),
                }),
            },
        }
    }
}

impl GatewayError {
    /// This error as a response in the client's dialect (counted in `sluice_errors_total`).
    pub fn response(&self, proto: Protocol) -> Response<RespBody> {
        Metrics::error(self.kind());
        let mut b = Response::builder()
            .status(self.status())
            .header(CONTENT_TYPE, "application/json");
        if let Some(w) = self.retry_after() {
            b = b
                .header(RETRY_AFTER, w.as_secs_f64().ceil().max(1.0).to_string())
                .header("retry-after-ms", w.as_millis().max(1).to_string());
        }
        b.body(full_body(self.body(proto).to_string()))
            .expect("valid response")
    }

    pub fn status(&self) -> u16 {
        match self {
            GatewayError::Unauthorized => 401,
            GatewayError::AdminForbidden => 403,
            GatewayError::NotFound(_) | GatewayError::ModelNotFound(_) => 404,
            GatewayError::MethodNotAllowed(_) => 405,
            GatewayError::PayloadTooLarge(_) => 413,
            GatewayError::BadJson(_)
            | GatewayError::BadRequest { .. }
            | GatewayError::Translate(_) => 400,
            GatewayError::RateLimited { .. }
            | GatewayError::OverBudget { .. }
            | GatewayError::UpstreamsRateLimited { .. } => 429,
            GatewayError::UpstreamUnavailable { .. } | GatewayError::NoHealthyBackend(_) => 503,
            GatewayError::BadDeadline(_) => 400,
            GatewayError::Shed(crate::shape::Shed::DeadlineExpired) => 504,
            GatewayError::Shed(_) => 503,
            GatewayError::UpstreamTimeout(_) => 504,
            GatewayError::BodyTimeout => 408,
            GatewayError::UpstreamCredentials(_) | GatewayError::UpstreamMalformed { .. } => 502,
            GatewayError::BodiesOverBudget => 503,
        }
    }

    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Unauthorized => "unauthorized",
            GatewayError::AdminForbidden => "admin_forbidden",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::PayloadTooLarge(_) => "payload_too_large",
            GatewayError::BadJson(_) => "bad_json",
            GatewayError::BadRequest { .. } => "bad_request",
            GatewayError::Translate(_) => "untranslatable",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::OverBudget { .. } => "over_budget",
            GatewayError::NoHealthyBackend(_) => "no_healthy_backend",
            GatewayError::UpstreamsRateLimited { .. } => "upstream_rate_limited",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::UpstreamUnavailable { .. } => "upstream_unavailable",
            GatewayError::UpstreamMalformed { .. } => "upstream_malformed",
            GatewayError::BadDeadline(_) => "bad_deadline",
            GatewayError::BodyTimeout => "body_timeout",
            GatewayError::UpstreamCredentials(_) => "upstream_credentials",
            GatewayError::BodiesOverBudget => "bodies_over_budget",
            GatewayError::Shed(s) => match s {
                crate::shape::Shed::QueueFull => "shed_queue_full",
                crate::shape::Shed::DeadlineExpired => "deadline_expired",
                crate::shape::Shed::MaxWait => "shed_max_wait",
                crate::shape::Shed::Congested => "shed_congested",
            },
        }
    }

    fn openai_type(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400 | 405 | 413 => "invalid_request_error",
            _ => "server_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            400 | 405 => "invalid_request_error",
            503 | 504 => "overloaded_error",
            _ => "api_error",
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            GatewayError::BadRequest { field, .. } => Some(field.clone()),
            GatewayError::Translate(e) => Some(e.field().to_string()),
            GatewayError::ModelNotFound(_) => Some("model".to_string()),
            _ => None,
        }
    }

    /// The error body in the client's API shape.
    pub fn body(&self, proto: Protocol) -> serde_json::Value {
        let message = self.to_string();
        match proto {
            Protocol::Openai => json!({"error": {
                "message": message,
                "type": self.openai_type(),
                "param": self.param(),
                "code": self.kind(),
            }}),
            Protocol::Anthropic => json!({"type": "error", "error": {
                "type": self.anthropic_type(),
                "message": message,
            }}),
        }
    }

    /// Seconds for a `Retry-After` header, where one applies.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::RateLimited { decision, .. }
            | GatewayError::OverBudget { decision, .. } => decision.retry_after,
            GatewayError::NoHealthyBackend(_) | GatewayError::BodiesOverBudget => {
                Some(Duration::from_secs(1))
            }
            GatewayError::UpstreamsRateLimited { retry_after, .. } => Some(*retry_after),
            GatewayError::Shed(s) if *s != crate::shape::Shed::DeadlineExpired => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }
}
