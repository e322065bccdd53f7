//! Translate: protocol knowledge Deliver uses (pure; imports only `protocol` and `error`). What to
//! send to a backend of either dialect ([`plan`]), and OpenAI Chat Completions ↔ Anthropic Messages
//! translation of requests, responses, streams and errors (OpenAI Responses through Chat
//! Completions: `responses`, `stream_responses`); usage read from bodies and streams.
//!
//! Everything here is pure (no I/O; only the clock, for OpenAI `created`). Bodies are
//! `serde_json::Value`s. What the target API cannot express fails with
//! [`TranslateError::Unsupported`] naming the field, rather than being dropped; each request
//! translator documents the fields it drops on purpose because they are mere hints.
//!
//! Usage convention: [`Usage::input_tokens`] is the whole prompt, cached tokens included
//! (OpenAI `prompt_tokens`; Anthropic `input_tokens + cache_*_input_tokens`).

mod common;
mod completion;
mod error;
mod estimate;
mod facts;
mod hollow;
mod messages_to_anthropic;
mod plan;
mod request_to_anthropic;
mod request_to_openai;
mod response;
mod response_ids;
mod responses;
mod scan;
mod scan_walk;
mod sse;
mod stream_anthropic;
mod stream_check;
mod stream_openai;
mod stream_responses;
mod transform;
mod usage;
mod usage_scan;

#[cfg(test)]
mod tests;

pub use completion::{
    MessagesToCompletionStream, completion_request_to_messages, messages_response_to_completion,
};
pub use error::{TranslateError, error_to_anthropic, error_to_openai, stream_error_event};
pub use estimate::MEDIA_TOKENS;
#[cfg(test)]
pub use estimate::{estimate_prompt_tokens, requested_max_tokens};
pub use facts::response_facts;
pub use hollow::{Hollowed, hollow};
pub use plan::{Plan, PlanInput, error_back, plan, response_back, stream_transform};
pub use request_to_anthropic::chat_request_to_messages;
pub use request_to_openai::messages_request_to_chat;
pub use response::{chat_response_to_messages, messages_response_to_chat};
pub use response_ids::{TagResponseIds, response_tag, split_response_id, tag_response_ids};
pub use responses::{
    chat_response_to_responses, responses_native_field, responses_request_to_chat,
};
pub use scan::{RequestScan, ScanError, scan_request};
pub use sse::{SseEvent, SseParser, encode_sse};
pub use stream_anthropic::ChatToMessagesStream;
pub use stream_check::{StreamCheck, StreamFault, Wire};
pub use stream_openai::MessagesToChatStream;
pub use stream_responses::{ChatToResponsesStream, MessagesToResponsesStream};
pub use transform::{DropInjectedUsage, StreamTransform};
pub use usage::{StreamUsage, Usage, usage_from_body, usage_from_object};
pub use usage_scan::{checked_usage, scan_usage};
