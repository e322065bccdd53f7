//! `routing:` the seed's rules block: match on headers, path, tenant tier and model → a backend pool.

use super::Algorithm;
use super::{ConfigError, Spanned};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Algorithm for routes that name none.
    #[serde(default = "adaptive")]
    pub strategy: Algorithm,
    /// Tried in order; the first match wins.
    #[serde(default)]
    pub rules: Vec<Spanned<RuleConfig>>,
    /// Where requests matching no rule go; without it, every backend with `strategy`.
    #[serde(default)]
    pub default: Option<RouteConfig>,
    /// Keep a conversation on one backend (rendezvous hashing over the healthy pool).
    #[serde(default)]
    pub affinity: Option<AffinityConfig>,
    /// Attempts per request in total, failover included (connect error, 5xx or 429 before anything reached the client).
    #[serde(default = "two")]
    pub max_attempts: u32,
    /// `max_tokens` sent to Anthropic-protocol backends when the client gave none.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matches: MatchConfig,
    pub route: RouteConfig,
}

/// Every given condition must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Header name (any case) → exact value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Path prefix: `/v1/chat` matches `/v1/chat/completions`.
    #[serde(default)]
    pub path: Option<String>,
    /// The tenant's tier (one or a list).
    #[serde(default)]
    pub user_tier: Option<OneOrMany>,
    /// The model the client asked for (one or a list).
    #[serde(default)]
    pub model: Option<OneOrMany>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// One backend name or a list: the pool.
    pub backend: Spanned<OneOrMany>,
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// Share (1-100) of matching requests this rule takes; the rest fall through to later rules.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Skip unhealthy backends (default). `false` sends to every listed backend regardless.
    #[serde(default = "yes")]
    pub health_check: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinityConfig {
    /// Take the session key from this request header (e.g. `x-session-id`).
    #[serde(default)]
    pub header: Option<String>,
    /// Or from this top-level field of the JSON body (e.g. `user`).
    #[serde(default)]
    pub body_field: Option<String>,
}

/// A YAML scalar or list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
    pub fn contains(&self, s: &str) -> bool {
        self.as_slice().iter().any(|x| x == s)
    }
}

fn adaptive() -> Algorithm {
    Algorithm::Adaptive
}
fn two() -> u32 {
    2
}
fn yes() -> bool {
    true
}
fn default_max_tokens() -> u32 {
    4096
}

impl RouteConfig {
    fn validate(&self, field: &str, backends: &HashSet<&str>) -> Result<(), ConfigError> {
        let line = Some(self.backend.referenced.line());
        let names = self.backend.value.as_slice();
        if names.is_empty() {
            return Err(ConfigError::invalid(
                format!("{field}.backend"),
                line,
                "names no backend",
            ));
        }
        for n in names {
            if !backends.contains(n.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{field}.backend"),
                    line,
                    format!("unknown backend `{n}`"),
                ));
            }
        }
        if let Some(w) = self.weight
            && !(1..=100).contains(&w)
        {
            return Err(ConfigError::invalid(
                format!("{field}.weight"),
                line,
                "must be between 1 and 100",
            ));
        }
        Ok(())
    }
}

impl RoutingConfig {
    pub(super) fn validate(&self, backends: &HashSet<&str>) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let field = format!("routing.rules[{i}]");
            let rule = &r.value;
            if rule.name.is_empty() || !names.insert(rule.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{field}.name"),
                    Some(r.referenced.line()),
                    "rule names must be present and unique",
                ));
            }
            if let Some(p) = &rule.matches.path
                && !p.starts_with('/')
            {
                return Err(ConfigError::invalid(
                    format!("{field}.match.path"),
                    Some(r.referenced.line()),
                    "must start with /",
                ));
            }
            rule.route.validate(&format!("{field}.route"), backends)?;
        }
        if let Some(d) = &self.default {
            d.validate("routing.default", backends)?;
        }
        if let Some(a) = &self.affinity
            && a.header.is_some() == a.body_field.is_some()
        {
            return Err(ConfigError::invalid(
                "routing.affinity",
                None,
                "set exactly one of `header` or `body_field`",
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > 5 {
            return Err(ConfigError::invalid(
                "routing.max_attempts",
                None,
                "must be between 1 and 5",
            ));
        }
        if self.default_max_tokens == 0 {
            return Err(ConfigError::invalid(
                "routing.default_max_tokens",
                None,
                "must be above 0",
            ));
        }
        Ok(())
    }
}
