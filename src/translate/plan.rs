//! What to send to a backend of a given protocol, and how to bring its answer back to the client:
//! the translation matrix between client endpoints and backend protocols.

use super::Wire;
use super::transform::{DropInjectedUsage, StreamTransform};
use crate::error::GatewayError;
use crate::protocol::{Endpoint, Protocol, RequestBody};
use crate::translate as tr;
use bytes::Bytes;
use serde_json::Value;

/// What a plan needs to know of the client's call.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub endpoint: Endpoint,
    pub body: &'a RequestBody,
    /// The model the client named.
    pub model: &'a str,
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
}

/// One attempt's request, and how to read its response.
pub struct Plan {
    pub path: &'static str,
    pub body: Bytes,
    /// Whether the response needs translating back (protocols differ).
    pub translated: bool,
    /// We added `stream_options.include_usage` the client did not ask for.
    pub injected_usage: bool,
    /// What the upstream answers in (its stream's events and completion marker).
    pub wire: Wire,
    /// A Responses call passed through: the backend's tag, put on the response ids it returns.
    pub tag: Option<String>,
}

/// Whether a Responses call goes to this backend as it is (the backend serves Responses itself).
fn native_responses(endpoint: Endpoint, backend_proto: Protocol, serves_responses: bool) -> bool {
    endpoint == Endpoint::Responses && backend_proto == Protocol::Openai && serves_responses
}

/// Build the upstream body for `backend_proto` with the backend's `model`; `responses_tag`: the
/// backend serves the Responses API itself, and tags its response ids so.
pub fn plan(
    call: &PlanInput<'_>,
    backend_proto: Protocol,
    responses_tag: Option<&str>,
    model: &str,
    default_max_tokens: u32,
) -> Result<Plan, GatewayError> {
    let PlanInput {
        endpoint,
        body,
        model: client_model,
        stream,
        include_usage: wants_usage,
    } = *call;
    let client = endpoint.client_protocol();
    let native = native_responses(endpoint, backend_proto, responses_tag.is_some());
    let tag = responses_tag.filter(|_| native).map(str::to_string);
    // A follow-up names its predecessor as the client knows it: the backend wants its own id.
    let previous = native
        .then(|| body.tree().get("previous_response_id")?.as_str())
        .flatten()
        .and_then(|id| match tr::split_response_id(id) {
            (bare, Some(_)) => Some(bare.to_string()),
            _ => None,
        });
    let (path, wire) = if native {
        ("/v1/responses", Wire::Responses)
    } else {
        (
            endpoint.upstream_path(backend_proto),
            Wire::of(backend_proto),
        )
    };
    if native || (client == backend_proto && endpoint != Endpoint::Responses) {
        let inject =
            stream && wire == Wire::Chat && endpoint != Endpoint::Embeddings && !wants_usage;
        if model == client_model && !inject && previous.is_none() {
            return Ok(Plan {
                path,
                body: body.raw().clone(),
                translated: false,
                injected_usage: false,
                wire,
                tag,
            });
        }
        let mut v = body.tree().clone();
        v["model"] = Value::String(model.to_string());
        if let Some(id) = previous {
            v["previous_response_id"] = Value::String(id);
        }
        if inject {
            v["stream_options"] = serde_json::json!({"include_usage": true});
        }
        return Ok(Plan {
            path,
            body: Bytes::from(v.to_string()),
            translated: false,
            injected_usage: inject,
            wire,
            tag,
        });
    }
    let v = match (endpoint, backend_proto) {
        (Endpoint::Chat, Protocol::Anthropic) => {
            tr::chat_request_to_messages(body.tree(), model, default_max_tokens)?
        }
        (Endpoint::Completions, Protocol::Anthropic) => {
            tr::completion_request_to_messages(body.tree(), model, default_max_tokens)?
        }
        (Endpoint::Messages, Protocol::Openai) => tr::messages_request_to_chat(body.tree(), model)?,
        (Endpoint::Responses, Protocol::Openai) => {
            tr::responses_request_to_chat(body.tree(), model)?
        }
        (Endpoint::Responses, Protocol::Anthropic) => {
            let chat = tr::responses_request_to_chat(body.tree(), model)?;
            tr::chat_request_to_messages(&chat, model, default_max_tokens)
                .map_err(tr::TranslateError::as_responses)?
        }
        _ => {
            return Err(GatewayError::BadRequest {
                field: "model".into(),
                reason: "this endpoint cannot be served by the chosen backend".into(),
            });
        }
    };
    Ok(Plan {
        path,
        body: Bytes::from(v.to_string()),
        translated: true,
        injected_usage: false,
        wire,
        tag: None,
    })
}

/// The stream transform for this plan, if any (None: pass bytes through).
pub fn stream_transform(call: &PlanInput<'_>, plan: &Plan) -> Option<Box<dyn StreamTransform>> {
    let (endpoint, client_model, include_usage) = (call.endpoint, call.model, call.include_usage);
    if let Some(tag) = &plan.tag {
        return Some(Box::new(tr::TagResponseIds::new(tag)));
    }
    if !plan.translated {
        return plan
            .injected_usage
            .then(|| Box::new(DropInjectedUsage) as Box<dyn StreamTransform>);
    }
    Some(match endpoint {
        Endpoint::Responses if plan.wire == Wire::Chat => Box::new(tr::ChatToResponsesStream::new(
            call.body.tree(),
            client_model,
        )),
        Endpoint::Responses => Box::new(tr::MessagesToResponsesStream::new(
            call.body.tree(),
            client_model,
        )),
        Endpoint::Chat => Box::new(tr::MessagesToChatStream::new(client_model, include_usage)),
        Endpoint::Completions => Box::new(tr::MessagesToCompletionStream::new(
            client_model,
            include_usage,
        )),
        _ => Box::new(tr::ChatToMessagesStream::new(client_model)),
    })
}

/// Translate a whole (non-streamed) success body back to the client's dialect.
pub fn response_back(call: &PlanInput<'_>, plan: &Plan, v: &Value) -> Result<Value, GatewayError> {
    let (endpoint, client_model) = (call.endpoint, call.model);
    Ok(match endpoint {
        Endpoint::Responses => {
            let chat;
            let chat = match plan.wire {
                Wire::Messages => {
                    chat = tr::messages_response_to_chat(v, client_model)?;
                    &chat
                }
                _ => v,
            };
            tr::chat_response_to_responses(chat, call.body.tree(), client_model)?
        }
        Endpoint::Chat => tr::messages_response_to_chat(v, client_model)?,
        Endpoint::Completions => tr::messages_response_to_completion(v, client_model)?,
        _ => tr::chat_response_to_messages(v, client_model)?,
    })
}

/// An upstream error body in the client's dialect.
pub fn error_back(client: Protocol, status: u16, body: &[u8]) -> Value {
    match client {
        Protocol::Openai => tr::error_to_openai(status, body),
        Protocol::Anthropic => tr::error_to_anthropic(status, body),
    }
}
