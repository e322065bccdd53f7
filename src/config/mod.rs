//! Config: beside the pipeline, the YAML file every stage reads. Serde types (one file per section),
//! `load`, then `validate`. Imports only `protocol`: no runtime module.
//!
//! Parse errors (unknown fields, wrong types) come from the YAML reader with their line; semantic errors
//! (`validate`) name the field path and, where the field is wrapped in [`Spanned`], its line.

mod admin;
mod algorithm;
mod backend;
mod bounds;
mod budget;
mod cluster;
mod error;
mod listen;
mod observe;
mod routing;
mod shaping;
mod tenant;

pub use admin::AdminConfig;
pub use algorithm::Algorithm;
pub use backend::{BackendConfig, HealthCheckConfig, PriceConfig, SmoothingConfig, TimeoutsConfig};
pub use bounds::BoundsConfig;
pub use budget::{BudgetConfig, WindowBudgetConfig};
pub use cluster::{ClusterConfig, RedisConfig, RedisMode};
pub use error::ConfigError;
pub use listen::{ListenConfig, TlsConfig};
pub use observe::{ObserveConfig, OtlpConfig, OtlpProtocol, check_endpoint, check_protocol};
pub use routing::{AffinityConfig, MatchConfig, OneOrMany, RouteConfig, RoutingConfig, RuleConfig};
pub use serde_saphyr::Spanned;
pub use shaping::{CongestionConfig, Priority, PriorityConfig, ShapingConfig};
pub use tenant::{LimitsConfig, TenantConfig};

use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

/// Whether an environment variable is set and not empty.
pub type Env<'a> = dyn Fn(&str) -> bool + 'a;

fn process_env(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty())
}

/// The embedded default: one node, local limits, two built-in simulated upstreams on ephemeral ports.
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub listen: ListenConfig,
    pub backends: Vec<Spanned<BackendConfig>>,
    #[serde(default)]
    pub tenants: Vec<Spanned<TenantConfig>>,
    pub routing: RoutingConfig,
    #[serde(default)]
    pub shaping: ShapingConfig,
    /// What Sluice holds for any one peer, whatever it sends.
    #[serde(default)]
    pub bounds: BoundsConfig,
    /// Gossip membership and global limits; absent: one node, local limits.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Admin endpoints (`/admin/...`) need `Authorization: Bearer` with the value of this env var
    /// (unset variable: admin endpoints are off).
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// The operator endpoints' own listener (`admin.listen`); absent: on the public listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Built-in simulated upstreams to start inside this process (the embedded default uses them).
    #[serde(default)]
    pub mock_upstreams: Vec<MockUpstreamConfig>,
    /// The access log and OpenTelemetry traces.
    #[serde(default)]
    pub observe: ObserveConfig,
}

/// This node's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default = "default_node_id")]
    pub id: String,
    /// Structured logs as JSON lines instead of text.
    #[serde(default)]
    pub log_json: bool,
}

fn default_node_id() -> String {
    "sluice-1".to_string()
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: default_node_id(),
            log_json: false,
        }
    }
}

/// A simulated upstream started in-process; a backend whose url is `mock://NAME` points at it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockUpstreamConfig {
    pub name: String,
    pub protocol: crate::protocol::Protocol,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub ttft_ms: u64,
    #[serde(default)]
    pub tokens_per_sec: f64,
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parse and validate YAML text (secrets named by `*_env` fields must be set).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, &process_env)
    }

    /// As [`Config::parse`], with `env` telling whether a variable is set (and not empty).
    pub fn parse_with_env(text: &str, env: &Env<'_>) -> Result<Config, ConfigError> {
        let mut cfg: Config =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some(c) = &mut cfg.cluster {
            c.fill_defaults();
        }
        cfg.validate_with_env(env)?;
        Ok(cfg)
    }

    /// The embedded default config.
    pub fn embedded_default() -> Config {
        Self::parse(DEFAULT_YAML).expect("embedded default config is valid")
    }

    /// Check everything serde cannot: references, ranges, duplicates, secrets that are not set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with_env(&process_env)
    }

    pub fn validate_with_env(&self, env: &Env<'_>) -> Result<(), ConfigError> {
        self.listen.validate()?;
        if let Some(a) = self.admin.socket_addr()?
            && self
                .listen
                .socket_addr()
                .is_ok_and(|l| l == a && a.port() != 0)
        {
            return Err(ConfigError::invalid(
                "admin.listen",
                None,
                "must differ from listen.address",
            ));
        }
        self.bounds.validate()?;
        if self.backends.is_empty() {
            return Err(ConfigError::invalid(
                "backends",
                None,
                "at least one backend is required",
            ));
        }
        let mocks: HashSet<&str> = self
            .mock_upstreams
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let mut names = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            b.value.validate(i, b.referenced.line(), &mocks, env)?;
            if !names.insert(b.value.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("backends[{i}].name"),
                    Some(b.referenced.line()),
                    format!("duplicate backend name `{}`", b.value.name),
                ));
            }
        }
        let mut keys = HashSet::new();
        let mut ids = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            t.value.validate(i, t.referenced.line(), env)?;
            if !ids.insert(t.value.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("tenants[{i}].id"),
                    Some(t.referenced.line()),
                    format!("duplicate tenant id `{}`", t.value.id),
                ));
            }
            for k in t.value.resolved_keys() {
                if !keys.insert(k) {
                    return Err(ConfigError::invalid(
                        format!("tenants[{i}].keys"),
                        Some(t.referenced.line()),
                        "an api key is listed for two tenants",
                    ));
                }
            }
        }
        self.routing.validate(&names)?;
        self.shaping.validate()?;
        if let Some(c) = &self.cluster {
            c.validate(env)?;
        }
        self.observe.validate()?;
        Ok(())
    }

    /// The backend with this name.
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends
            .iter()
            .map(|b| &b.value)
            .find(|b| b.name == name)
    }
}

#[cfg(test)]
mod tests;
