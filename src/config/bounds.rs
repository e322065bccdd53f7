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
    /// All client request bodies being read at once, together; past it new requests get 503 at once.
    #[serde(default = "default_pending_bodies")]
    pub max_pending_body_bytes: usize,
    /// Longest gap between two pieces of a client's request body (408 after it).
    #[serde(default = "ten_s")]
    pub body_idle_timeout_ms: u64,
    /// Longest time to receive a whole client request body (408 after it).
    #[serde(default = "sixty_s")]
    pub body_timeout_ms: u64,
}

fn default_pending_bodies() -> usize {
    256 * 1024 * 1024
}
fn ten_s() -> u64 {
    10_000
}
fn sixty_s() -> u64 {
    60_000
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
            max_pending_body_bytes: default_pending_bodies(),
            body_idle_timeout_ms: ten_s(),
            body_timeout_ms: sixty_s(),
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
            ("bounds.max_pending_body_bytes", self.max_pending_body_bytes),
        ] {
            if v < 1024 {
                return Err(ConfigError::invalid(field, None, "must be at least 1024"));
            }
        }
        for (field, v) in [
            ("bounds.body_idle_timeout_ms", self.body_idle_timeout_ms),
            ("bounds.body_timeout_ms", self.body_timeout_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(field, None, "must be above 0"));
            }
        }
        Ok(())
    }
}
