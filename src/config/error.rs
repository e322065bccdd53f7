//! Config errors: every message names the field, and the line where it is known.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config `{path}`: {reason}")]
    Read { path: String, reason: String },
    /// From the YAML reader: its message carries the line and column.
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: field `{field}`{}: {reason}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        field: String,
        line: Option<u64>,
        reason: String,
    },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, line: Option<u64>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            line,
            reason: reason.into(),
        }
    }
}
