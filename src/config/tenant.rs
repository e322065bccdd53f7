//! `tenants:` API keys → tenant id and tier, and the tenant's limits (enforced in Shape).

use super::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    #[serde(default = "default_tier")]
    pub tier: String,
    /// Literal API keys (fine for demos and tests).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Environment variables holding API keys.
    #[serde(default)]
    pub key_envs: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Spend budget in US dollars (per UTC day, calendar month, or window); none by default.
    #[serde(default)]
    pub budget: Option<super::BudgetConfig>,
    /// Share of queue service relative to other tenants of the same priority class (weighted fair queuing).
    #[serde(default = "one")]
    pub weight: u32,
}

impl TenantConfig {
    /// A tenant with these limits and every other field at its default (no keys, standard tier,
    /// weight 1): what code that builds limiters directly needs.
    pub fn with_limits(id: &str, limits: LimitsConfig) -> TenantConfig {
        TenantConfig {
            id: id.into(),
            tier: default_tier(),
            keys: vec![],
            key_envs: vec![],
            limits,
            budget: None,
            weight: one(),
        }
    }
}

/// Token buckets: `burst` requests at once, then `requests_per_minute` sustained; same for LLM tokens.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

fn one() -> u32 {
    1
}

fn default_tier() -> String {
    "standard".to_string()
}

impl TenantConfig {
    /// Keys from the file and from the named environment variables (unset variables are skipped).
    pub fn resolved_keys(&self) -> Vec<String> {
        let mut out = self.keys.clone();
        out.extend(
            self.key_envs
                .iter()
                .filter_map(|e| std::env::var(e).ok())
                .filter(|k| !k.is_empty()),
        );
        out
    }

    pub(super) fn validate(
        &self,
        i: usize,
        line: u64,
        env: &super::Env<'_>,
    ) -> Result<(), ConfigError> {
        if self.id.is_empty() {
            return Err(ConfigError::invalid(
                format!("tenants[{i}].id"),
                Some(line),
                "must not be empty",
            ));
        }
        if self.keys.iter().any(|k| k.len() < 4) {
            return Err(ConfigError::invalid(
                format!("tenants[{i}].keys"),
                Some(line),
                "api keys must be at least 4 characters",
            ));
        }
        if let Some(name) = self.key_envs.iter().find(|e| !env(e)) {
            return Err(ConfigError::invalid(
                format!("tenants[{i}].key_envs"),
                Some(line),
                format!("environment variable `{name}` is not set (or empty)"),
            ));
        }
        if self.weight == 0 {
            return Err(ConfigError::invalid(
                format!("tenants[{i}].weight"),
                Some(line),
                "must be at least 1",
            ));
        }
        if let Some(b) = &self.budget {
            b.validate(i, line)?;
        }
        let l = &self.limits;
        if l.requests_per_minute == Some(0) || l.burst == Some(0) || l.tokens_per_minute == Some(0)
        {
            return Err(ConfigError::invalid(
                format!("tenants[{i}].limits"),
                Some(line),
                "limits must be above 0 (omit a limit to disable it)",
            ));
        }
        Ok(())
    }
}
