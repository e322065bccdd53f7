//! The two wire protocols Sluice speaks, on either side of the proxy.

use serde::Deserialize;

/// An AI API dialect: what a client speaks, or what a backend declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OpenAI Chat Completions (`/v1/chat/completions`, legacy `/v1/completions`).
    Openai,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Openai => "openai",
            Protocol::Anthropic => "anthropic",
        }
    }
}
