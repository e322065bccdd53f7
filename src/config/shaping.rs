//! `shaping:` queues instead of instant 429s, priorities, deadlines and congestion control.

use super::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Priority classes, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
    Batch,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::Batch,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Batch => "batch",
        }
    }
    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapingConfig {
    /// Most requests waiting at once (all queues together); past it: shed, lowest priority first.
    /// The default lets a burst of thousands of streams wait while slow start grows the backends'
    /// limits, instead of shedding what a backend can take (a waiter holds only its connection and
    /// its request; the open-file limit caps connections long before this).
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Longest a request waits for a token or a backend slot before 429/503 with Retry-After.
    #[serde(default = "default_max_wait")]
    pub max_wait_ms: u64,
    /// Where a request's priority comes from.
    #[serde(default)]
    pub priority: PriorityConfig,
    /// Header with the client's deadline: milliseconds from now (e.g. `2500`). Past it: 504, never sent upstream.
    #[serde(default = "default_deadline_header")]
    pub deadline_header: String,
    /// Per-backend adaptive concurrency limits.
    #[serde(default)]
    pub congestion: CongestionConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    /// Header naming the class (`critical`, `high`, `normal`, `low`, `batch`).
    #[serde(default = "default_priority_header")]
    pub header: String,
    /// Tenant tier → class.
    #[serde(default)]
    pub tiers: BTreeMap<String, Priority>,
    /// Request type (`chat`, `completions`, `messages`, `embeddings`) → class.
    #[serde(default)]
    pub request_types: BTreeMap<String, Priority>,
    #[serde(default = "default_priority")]
    pub default: Priority,
    /// Whether the header may raise a request above its tier's class (default: only lower it).
    #[serde(default)]
    pub header_can_raise: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CongestionConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_initial_limit")]
    pub initial_limit: u32,
    #[serde(default = "default_min_limit")]
    pub min_limit: u32,
    #[serde(default = "default_max_limit")]
    pub max_limit: u32,
    /// Share of each backend's limit only critical traffic may use (0.0-0.5).
    #[serde(default = "default_reserve")]
    pub critical_reserve: f64,
    /// CoDel: shed when queue wait stayed above this target for a whole interval.
    #[serde(default = "default_codel_target")]
    pub codel_target_ms: u64,
    #[serde(default = "default_codel_interval")]
    pub codel_interval_ms: u64,
}

fn default_max_queue() -> usize {
    16_384
}
fn default_max_wait() -> u64 {
    10_000
}
fn default_deadline_header() -> String {
    "x-request-deadline".into()
}
fn default_priority_header() -> String {
    "x-priority".into()
}
fn default_priority() -> Priority {
    Priority::Normal
}
fn yes() -> bool {
    true
}
fn default_initial_limit() -> u32 {
    32
}
fn default_min_limit() -> u32 {
    2
}
/// High enough never to cap a provider that takes thousands of concurrent streams: the limit
/// is meant to react to congestion signals, not to a number.
fn default_max_limit() -> u32 {
    100_000
}
fn default_reserve() -> f64 {
    0.1
}
fn default_codel_target() -> u64 {
    500
}
fn default_codel_interval() -> u64 {
    2000
}

impl Default for PriorityConfig {
    fn default() -> Self {
        PriorityConfig {
            header: default_priority_header(),
            tiers: BTreeMap::new(),
            request_types: BTreeMap::new(),
            default: default_priority(),
            header_can_raise: false,
        }
    }
}

impl Default for CongestionConfig {
    fn default() -> Self {
        CongestionConfig {
            enabled: true,
            initial_limit: default_initial_limit(),
            min_limit: default_min_limit(),
            max_limit: default_max_limit(),
            critical_reserve: default_reserve(),
            codel_target_ms: default_codel_target(),
            codel_interval_ms: default_codel_interval(),
        }
    }
}

impl Default for ShapingConfig {
    fn default() -> Self {
        ShapingConfig {
            max_queue: default_max_queue(),
            max_wait_ms: default_max_wait(),
            priority: PriorityConfig::default(),
            deadline_header: default_deadline_header(),
            congestion: CongestionConfig::default(),
        }
    }
}

impl ShapingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_queue == 0 {
            return Err(ConfigError::invalid(
                "shaping.max_queue",
                None,
                "must be at least 1",
            ));
        }
        for k in self.priority.request_types.keys() {
            if !["chat", "completions", "messages", "embeddings", "responses"].contains(&k.as_str())
            {
                return Err(ConfigError::invalid(
                    format!("shaping.priority.request_types.{k}"),
                    None,
                    "request types are chat, completions, messages, embeddings",
                ));
            }
        }
        let c = &self.congestion;
        if c.min_limit == 0 || c.min_limit > c.initial_limit || c.initial_limit > c.max_limit {
            return Err(ConfigError::invalid(
                "shaping.congestion",
                None,
                "need 1 <= min_limit <= initial_limit <= max_limit",
            ));
        }
        if !(0.0..=0.5).contains(&c.critical_reserve) {
            return Err(ConfigError::invalid(
                "shaping.congestion.critical_reserve",
                None,
                "must be between 0.0 and 0.5",
            ));
        }
        if c.codel_target_ms == 0 || c.codel_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "shaping.congestion",
                None,
                "codel_target_ms and codel_interval_ms must be above 0",
            ));
        }
        Ok(())
    }
}
