//! `tenants[].budget`: how many US dollars a tenant may spend per UTC day, per UTC calendar month,
//! and (mainly for tests and short-lived keys) per fixed window of `window_ms` aligned to the Unix
//! epoch. Enforced in Shape with the tenant's other limits.

use super::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    #[serde(default)]
    pub usd_per_month: Option<f64>,
    #[serde(default)]
    pub usd_per_window: Option<WindowBudgetConfig>,
}

/// `usd` per window of `window_ms` (windows start at multiples of `window_ms` since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowBudgetConfig {
    pub usd: f64,
    pub window_ms: u64,
}

impl BudgetConfig {
    pub(super) fn validate(&self, i: usize, line: u64) -> Result<(), ConfigError> {
        let bad = |field: &str, reason: &str| {
            Err(ConfigError::invalid(
                format!("tenants[{i}].budget.{field}"),
                Some(line),
                reason,
            ))
        };
        let usd_ok = |v: f64| v.is_finite() && v > 0.0 && v < 1e9;
        if self.usd_per_day.is_some_and(|v| !usd_ok(v)) {
            return bad("usd_per_day", "must be above 0 and below 1e9 dollars");
        }
        if self.usd_per_month.is_some_and(|v| !usd_ok(v)) {
            return bad("usd_per_month", "must be above 0 and below 1e9 dollars");
        }
        if let Some(w) = self.usd_per_window {
            if !usd_ok(w.usd) {
                return bad(
                    "usd_per_window.usd",
                    "must be above 0 and below 1e9 dollars",
                );
            }
            if w.window_ms < 100 {
                return bad("usd_per_window.window_ms", "must be at least 100");
            }
        }
        if self.usd_per_day.is_none()
            && self.usd_per_month.is_none()
            && self.usd_per_window.is_none()
        {
            return bad(
                "usd_per_day",
                "a budget needs usd_per_day, usd_per_month or usd_per_window (omit `budget` for none)",
            );
        }
        Ok(())
    }
}
