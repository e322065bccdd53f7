//! `bounds:` what Sluice holds for any one peer, whatever it sends: upstream stream lines and events,
//! whole upstream bodies. Every buffer has a bound (see README, "Memory bounds").

use super::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundsConfig {
    /// Longest line of an upstream SSE stream; past it the stream ends with a `too_large` error.
    #[serde(default = "mib")]
    pub sse_max_line_bytes: usize,
    /// Largest data of one upstream SSE event.
    #[serde(default = "mib")]
    pub sse_max_event_bytes: usize,
    /// Largest non-streamed upstream body read into memory.
    #[serde(default = "default_upstream_body")]
    pub max_upstream_body_bytes: usize,
}

fn mib() -> usize {
    1024 * 1024
}
fn default_upstream_body() -> usize {
    64 * 1024 * 1024
}

impl Default for BoundsConfig {
    fn default() -> Self {
        BoundsConfig {
            sse_max_line_bytes: mib(),
            sse_max_event_bytes: mib(),
            max_upstream_body_bytes: default_upstream_body(),
        }
    }
}

impl BoundsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("bounds.sse_max_line_bytes", self.sse_max_line_bytes),
            ("bounds.sse_max_event_bytes", self.sse_max_event_bytes),
            (
                "bounds.max_upstream_body_bytes",
                self.max_upstream_body_bytes,
            ),
        ] {
            if v < 1024 {
                return Err(ConfigError::invalid(field, None, "must be at least 1024"));
            }
        }
        Ok(())
    }
}
