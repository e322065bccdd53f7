//! A reload's result: what the admin call answers, the log line and the metric label.

use crate::config::ConfigError;
use crate::observe::Metrics;
use http::StatusCode;
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Swapped in (or the same file again).
    Ok { version: String, previous: String },
    /// The file does not load or validate: the running config keeps serving.
    Invalid {
        error: String,
        field: Option<String>,
        line: Option<u64>,
    },
    /// Valid, but changes what only a restart can.
    RestartRequired { fields: Vec<String> },
}

impl Outcome {
    /// No node to reload yet (or any more).
    pub fn unavailable() -> Outcome {
        Outcome::Invalid {
            error: "the node is not running".into(),
            field: None,
            line: None,
        }
    }

    /// From a config error: its field and line when it names them (the YAML reader's messages
    /// carry `line N`).
    pub fn invalid(e: &ConfigError) -> Outcome {
        let (field, line) = match e {
            ConfigError::Invalid { field, line, .. } => (Some(field.clone()), *line),
            ConfigError::Parse(msg) => (None, line_in(msg)),
            ConfigError::Read { .. } => (None, None),
        };
        Outcome::Invalid {
            error: e.to_string(),
            field,
            line,
        }
    }

    /// `ok`, `invalid` or `restart_required`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::Invalid { .. } => "invalid",
            Outcome::RestartRequired { .. } => "restart_required",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::Ok { .. } => StatusCode::OK,
            Outcome::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Outcome::RestartRequired { .. } => StatusCode::CONFLICT,
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Outcome::Ok { version, previous } => {
                json!({"result": "ok", "version": version, "previous_version": previous})
            }
            Outcome::Invalid { error, field, line } => {
                json!({"result": "invalid", "error": error, "field": field, "line": line})
            }
            Outcome::RestartRequired { fields } => json!({
                "result": "restart_required",
                "fields": fields,
                "error": format!("{} cannot change while running: restart sluice to apply", fields.join(", ")),
            }),
        }
    }

    /// One log line and the counter.
    pub fn record(&self, trigger: &'static str) {
        Metrics::config_reload(self.label());
        match self {
            Outcome::Ok { version, previous } => {
                tracing::info!(trigger, version = %version, previous = %previous, "config reloaded")
            }
            Outcome::Invalid { error, field, line } => tracing::warn!(
                trigger,
                field = field.as_deref().unwrap_or("-"),
                line = line.unwrap_or(0),
                error = %error,
                "config reload refused: invalid file; the running config keeps serving"
            ),
            Outcome::RestartRequired { fields } => tracing::warn!(
                trigger,
                fields = %fields.join(", "),
                "config reload refused: these fields need a restart; the running config keeps serving"
            ),
        }
    }
}

/// The first `line N` in a message.
fn line_in(msg: &str) -> Option<u64> {
    let at = msg.find("line ")? + 5;
    let digits: String = msg[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_error_keeps_its_line() {
        let e = crate::config::Config::parse("backends: []\nrouting: {}\nbogus: 1\n").unwrap_err();
        let Outcome::Invalid { line, .. } = Outcome::invalid(&e) else {
            panic!()
        };
        assert_eq!(line, Some(3), "{e}");
    }

    #[test]
    fn a_validation_error_names_field_and_line() {
        let e = ConfigError::invalid("tenants[1].id", Some(12), "duplicate tenant id `a`");
        let o = Outcome::invalid(&e);
        assert_eq!(o.json()["field"], "tenants[1].id");
        assert_eq!(o.json()["line"], 12);
        assert_eq!(o.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(o.label(), "invalid");
    }
}
