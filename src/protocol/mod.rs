//! What both sides of the proxy speak, shared by every stage (imports nothing of the pipeline):
//! the two API dialects, the endpoints a client calls, the request body, response bodies, the
//! providers' rate-limit headers.

mod body;
mod endpoint;
pub mod headers;
mod json_check;
pub mod ratelimit;
mod request;
pub mod responses;

pub use body::{BoxError, ReadError, RespBody, full_body, pieces_body, read_whole};
pub use endpoint::{Endpoint, UPSTREAM_PATHS};
#[cfg(test)]
pub(crate) use json_check::mutations;
pub use json_check::{Walk, is_json, plain_string};
pub use request::RequestBody;

use serde::Deserialize;

/// An AI API dialect: what a client speaks, or what a backend declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OpenAI Chat Completions (`/v1/chat/completions`, legacy `/v1/completions`), and the
    /// Responses API (`/v1/responses`) where a backend declares it (`apis`).
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
