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

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn with_budget(budget: &str) -> Result<Config, String> {
        let text = format!(
            "backends:\n  - {{ name: a, url: \"http://127.0.0.1:9\", protocol: openai }}\ntenants:\n  - id: t\n    keys: [sk-t]\n    budget: {budget}\nrouting: {{}}\n"
        );
        Config::parse(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn budgets_parse_and_bad_ones_name_the_field_and_line() {
        let c = with_budget("{ usd_per_day: 5, usd_per_month: 100.5 }").unwrap();
        let b = c.tenants[0].value.budget.unwrap();
        assert_eq!((b.usd_per_day, b.usd_per_month), (Some(5.0), Some(100.5)));
        let c = with_budget("{ usd_per_window: { usd: 0.5, window_ms: 60000 } }").unwrap();
        assert_eq!(
            c.tenants[0]
                .value
                .budget
                .unwrap()
                .usd_per_window
                .unwrap()
                .window_ms,
            60_000
        );
        for (budget, field) in [
            ("{ usd_per_day: 0 }", "tenants[0].budget.usd_per_day"),
            ("{ usd_per_month: -1 }", "tenants[0].budget.usd_per_month"),
            (
                "{ usd_per_window: { usd: 1, window_ms: 10 } }",
                "usd_per_window.window_ms",
            ),
            ("{}", "tenants[0].budget.usd_per_day"),
        ] {
            let e = with_budget(budget).unwrap_err();
            assert!(e.contains(field) && e.contains("line 4"), "{budget}: {e}");
        }
        let e = with_budget("{ usd_per_dya: 5 }").unwrap_err();
        assert!(e.contains("usd_per_dya"), "{e}");
    }
}
