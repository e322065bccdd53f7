//! `backends:` the upstream providers Deliver talks to, with price, limits, health checks and timeouts.

use super::{ConfigError, Spanned};
use crate::protocol::Protocol;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    /// `http://host:port[/base]`, `https://…`, or `mock://NAME` for a built-in simulated upstream.
    pub url: Spanned<String>,
    pub protocol: Protocol,
    /// Name of the environment variable holding the backend's API key (injected; the client's never is).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub price: PriceConfig,
    /// Most requests in flight to this backend at once; more wait in Shape or go elsewhere.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Client model name → this backend's model name. Empty: the client's model is passed through.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Models to list in `/v1/models` for a backend without a `models` map (it serves whatever is
    /// asked, so its names cannot be known otherwise). Listing only: it still serves any model.
    #[serde(default)]
    pub list_models: Vec<String>,
    /// Client headers passed on to this backend as they came (beside `openai-beta`,
    /// `openai-organization`, `openai-project` and `anthropic-beta`, always passed on). Never
    /// credentials nor the headers of the connection.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Consecutive connect errors or 5xx before the backend is ejected for `eject_for_ms`.
    #[serde(default = "five")]
    pub eject_after: u32,
    #[serde(default = "ten_s")]
    pub eject_for_ms: u64,
    /// Longest ejection: `eject_for_ms` doubles with each ejection in a row up to this. Default 8 ×
    /// `eject_for_ms`.
    #[serde(default)]
    pub eject_max_ms: Option<u64>,
    /// While ejected, probe the backend this often (its `health_check.path`, else `GET /v1/models`);
    /// a good answer ends the ejection. 0: no probes, the ejection runs its course.
    #[serde(default = "one_s")]
    pub eject_probe_ms: u64,
    /// Pace requests to this backend so a burst arrives spread out (GCRA spacing).
    #[serde(default)]
    pub smoothing: Option<SmoothingConfig>,
    /// The OpenAI APIs an `openai` backend serves: `chat` (Chat Completions, and legacy
    /// completions and embeddings), `responses` (the Responses API, passed through). Default
    /// `[chat]`: Responses requests are translated to Chat Completions. Not for `anthropic`.
    #[serde(default)]
    pub apis: Option<Vec<Api>>,
}

/// Headers `forward_headers` may not name: credentials (Sluice injects the backend's own) and
/// what belongs to each connection or body.
const NEVER_FORWARDED: [&str; 12] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

/// An OpenAI API a backend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Chat,
    Responses,
}

/// At most `rate_per_sec` request starts per second, `burst` of them back to back.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmoothingConfig {
    pub rate_per_sec: f64,
    #[serde(default = "one")]
    pub burst: u32,
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    #[serde(default)]
    pub input_per_1m: f64,
    #[serde(default)]
    pub output_per_1m: f64,
}

/// Active probing: `GET path` every interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default = "health_path")]
    pub path: String,
    #[serde(default = "two_s")]
    pub interval_ms: u64,
    #[serde(default = "one_s")]
    pub timeout_ms: u64,
    #[serde(default = "two")]
    pub unhealthy_threshold: u32,
    #[serde(default = "two")]
    pub healthy_threshold: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default = "two_s")]
    pub connect_ms: u64,
    /// Until the response headers arrive.
    #[serde(default = "sixty_s")]
    pub first_byte_ms: u64,
    /// Longest silence between two chunks of a streamed body.
    #[serde(default = "thirty_s")]
    pub idle_ms: u64,
    /// Whole request, stream included.
    #[serde(default = "ten_min")]
    pub total_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect_ms: 2_000,
            first_byte_ms: 60_000,
            idle_ms: 30_000,
            total_ms: 600_000,
        }
    }
}

impl TimeoutsConfig {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn five() -> u32 {
    5
}
fn one_s() -> u64 {
    1_000
}
fn two_s() -> u64 {
    2_000
}
fn ten_s() -> u64 {
    10_000
}
fn thirty_s() -> u64 {
    30_000
}
fn sixty_s() -> u64 {
    60_000
}
fn ten_min() -> u64 {
    600_000
}
fn health_path() -> String {
    "/health".to_string()
}

impl BackendConfig {
    /// The longest ejection (`eject_max_ms`, default 8 × `eject_for_ms`).
    pub fn eject_max(&self) -> Duration {
        Duration::from_millis(
            self.eject_max_ms
                .unwrap_or_else(|| self.eject_for_ms.saturating_mul(8)),
        )
    }

    /// The probe-back interval while ejected; `None` when turned off.
    pub fn eject_probe(&self) -> Option<Duration> {
        (self.eject_probe_ms > 0).then(|| Duration::from_millis(self.eject_probe_ms))
    }

    /// The model this backend should be asked for, given the client's model name.
    pub fn model_for<'a>(&'a self, client_model: &'a str) -> &'a str {
        self.models
            .get(client_model)
            .map(String::as_str)
            .unwrap_or(client_model)
    }

    /// Whether this backend serves the OpenAI Responses API itself (`apis` lists `responses`).
    pub fn serves_responses(&self) -> bool {
        self.protocol == Protocol::Openai
            && self
                .apis
                .as_deref()
                .is_some_and(|a| a.contains(&Api::Responses))
    }

    /// Whether this backend serves Chat Completions (the default; always for Anthropic, through
    /// translation).
    pub fn serves_chat(&self) -> bool {
        self.apis.as_deref().is_none_or(|a| a.contains(&Api::Chat))
    }

    /// Whether this backend can take a call of `endpoint`: Responses calls go to any backend
    /// (translated when it does not serve Responses), unless the call `needs_responses` (it uses
    /// what only the Responses API can express); every other call needs Chat Completions (or an
    /// Anthropic backend, through translation).
    pub fn serves_endpoint(
        &self,
        endpoint: crate::protocol::Endpoint,
        needs_responses: bool,
    ) -> bool {
        use crate::protocol::Endpoint;
        match endpoint {
            Endpoint::Responses => !needs_responses || self.serves_responses(),
            Endpoint::Embeddings => endpoint.servable_by(self.protocol) && self.serves_chat(),
            _ => self.serves_chat(),
        }
    }

    /// Whether this backend serves the client's model (no `models` map: it serves any).
    pub fn serves(&self, client_model: &str) -> bool {
        self.models.is_empty() || self.models.contains_key(client_model)
    }

    pub(super) fn validate(
        &self,
        i: usize,
        line: u64,
        mocks: &HashSet<&str>,
        env: &super::Env<'_>,
    ) -> Result<(), ConfigError> {
        let at = |f: &str| format!("backends[{i}].{f}");
        if self.name.is_empty() {
            return Err(ConfigError::invalid(
                at("name"),
                Some(line),
                "must not be empty",
            ));
        }
        let url = &self.url.value;
        let url_line = Some(self.url.referenced.line());
        if let Some(mock) = url.strip_prefix("mock://") {
            if !mocks.contains(mock) {
                return Err(ConfigError::invalid(
                    at("url"),
                    url_line,
                    format!("no mock_upstreams entry named `{mock}`"),
                ));
            }
        } else {
            let uri: http::Uri = url.parse().map_err(|e| {
                ConfigError::invalid(at("url"), url_line, format!("`{url}` is not a url: {e}"))
            })?;
            match uri.scheme_str() {
                Some("http" | "https") => {}
                _ => {
                    return Err(ConfigError::invalid(
                        at("url"),
                        url_line,
                        "scheme must be http, https or mock",
                    ));
                }
            }
            if uri.host().is_none() {
                return Err(ConfigError::invalid(at("url"), url_line, "has no host"));
            }
        }
        if self.weight == 0 {
            return Err(ConfigError::invalid(
                at("weight"),
                Some(line),
                "must be at least 1",
            ));
        }
        if self.price.input_per_1m < 0.0 || self.price.output_per_1m < 0.0 {
            return Err(ConfigError::invalid(
                at("price"),
                Some(line),
                "prices must not be negative",
            ));
        }
        if self.max_concurrent == Some(0) {
            return Err(ConfigError::invalid(
                at("max_concurrent"),
                Some(line),
                "must be at least 1",
            ));
        }
        if let Some(hc) = &self.health_check {
            if !hc.path.starts_with('/') {
                return Err(ConfigError::invalid(
                    at("health_check.path"),
                    Some(line),
                    "must start with /",
                ));
            }
            if hc.interval_ms < 50
                || hc.timeout_ms == 0
                || hc.unhealthy_threshold == 0
                || hc.healthy_threshold == 0
            {
                return Err(ConfigError::invalid(
                    at("health_check"),
                    Some(line),
                    "interval_ms >= 50, timeout_ms, unhealthy_threshold and healthy_threshold >= 1",
                ));
            }
        }
        let t = &self.timeouts;
        if t.connect_ms == 0 || t.first_byte_ms == 0 || t.idle_ms == 0 || t.total_ms == 0 {
            return Err(ConfigError::invalid(
                at("timeouts"),
                Some(line),
                "timeouts must be above 0",
            ));
        }
        if let Some(s) = &self.smoothing
            && (s.rate_per_sec <= 0.0 || !s.rate_per_sec.is_finite() || s.burst == 0)
        {
            return Err(ConfigError::invalid(
                at("smoothing"),
                Some(line),
                "rate_per_sec above 0 and burst >= 1",
            ));
        }
        if self.eject_after == 0 {
            return Err(ConfigError::invalid(
                at("eject_after"),
                Some(line),
                "must be at least 1",
            ));
        }
        if let Some(max) = self.eject_max_ms
            && max < self.eject_for_ms
        {
            return Err(ConfigError::invalid(
                at("eject_max_ms"),
                Some(line),
                format!("must be at least eject_for_ms ({})", self.eject_for_ms),
            ));
        }
        if self.eject_probe_ms != 0 && self.eject_probe_ms < 50 {
            return Err(ConfigError::invalid(
                at("eject_probe_ms"),
                Some(line),
                "must be 0 (no probes) or at least 50",
            ));
        }
        if let Some(i) = self.list_models.iter().position(|m| m.is_empty()) {
            return Err(ConfigError::invalid(
                at(&format!("list_models[{i}]")),
                Some(line),
                "must not be empty",
            ));
        }
        for (i, h) in self.forward_headers.iter().enumerate() {
            let name = h.to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::invalid(
                    at(&format!("forward_headers[{i}]")),
                    Some(line),
                    format!("`{h}` is not a header name"),
                ));
            }
            if NEVER_FORWARDED.contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    at(&format!("forward_headers[{i}]")),
                    Some(line),
                    format!("`{h}` is never forwarded (credentials, or the connection's own)"),
                ));
            }
        }
        if let Some(apis) = &self.apis {
            if self.protocol == Protocol::Anthropic {
                return Err(ConfigError::invalid(
                    at("apis"),
                    Some(line),
                    "only openai backends declare apis (anthropic backends serve messages)",
                ));
            }
            if apis.is_empty() {
                return Err(ConfigError::invalid(
                    at("apis"),
                    Some(line),
                    "must list chat, responses or both",
                ));
            }
        }
        let is_set = env;
        if let Some(env_name) = &self.api_key_env {
            if env_name.is_empty() {
                return Err(ConfigError::invalid(
                    at("api_key_env"),
                    Some(line),
                    "must not be empty",
                ));
            }
            // Fail at start, not with the upstream's 401 passed to clients as if their key were wrong.
            if !is_set(env_name) {
                return Err(ConfigError::invalid(
                    at("api_key_env"),
                    Some(line),
                    format!("environment variable `{env_name}` is not set (or empty)"),
                ));
            }
        }
        Ok(())
    }
}
