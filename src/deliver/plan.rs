//! What to send to a backend of a given protocol, and how to bring its answer back to the client:
//! the translation matrix between client endpoints and backend protocols.

use super::proxy::Call;
use super::stream::{DropInjectedUsage, StreamTransform};
use crate::error::GatewayError;
use crate::protocol::Protocol;
use crate::translate as tr;
use bytes::Bytes;
use serde_json::Value;
use std::sync::OnceLock;

/// The client's body: the bytes as received, and their JSON tree, built only when a plan rewrites
/// or translates the body (pass-through requests never build it).
#[derive(Debug)]
pub struct RequestBody {
    raw: Bytes,
    tree: OnceLock<Value>,
}

impl RequestBody {
    /// `raw` must already have been scanned as a JSON object.
    pub fn new(raw: Bytes) -> RequestBody {
        RequestBody {
            raw,
            tree: OnceLock::new(),
        }
    }

    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The JSON tree, parsed on first use.
    pub fn tree(&self) -> &Value {
        self.tree
            .get_or_init(|| serde_json::from_slice(&self.raw).unwrap_or(Value::Null))
    }
}

/// The API a client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Messages,
    Embeddings,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        match path {
            "/v1/chat/completions" | "/chat/completions" => Some(Endpoint::Chat),
            "/v1/completions" | "/completions" => Some(Endpoint::Completions),
            "/v1/messages" | "/messages" => Some(Endpoint::Messages),
            "/v1/embeddings" | "/embeddings" => Some(Endpoint::Embeddings),
            _ => None,
        }
    }

    /// Request type for priority rules.
    pub fn request_type(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Messages => "messages",
            Endpoint::Embeddings => "embeddings",
        }
    }

    /// The dialect the client speaks (and its errors' shape).
    pub fn client_protocol(self) -> Protocol {
        match self {
            Endpoint::Messages => Protocol::Anthropic,
            _ => Protocol::Openai,
        }
    }

    /// Whether a backend of `proto` can serve this endpoint (translated or not).
    pub fn servable_by(self, proto: Protocol) -> bool {
        !(self == Endpoint::Embeddings && proto == Protocol::Anthropic)
    }

    /// The upstream API path for a backend of `proto`: one of [`UPSTREAM_PATHS`].
    fn upstream_path(self, proto: Protocol) -> &'static str {
        match (self, proto) {
            (_, Protocol::Anthropic) => "/v1/messages",
            (Endpoint::Completions, Protocol::Openai) => "/v1/completions",
            (Endpoint::Embeddings, Protocol::Openai) => "/v1/embeddings",
            (_, Protocol::Openai) => "/v1/chat/completions",
        }
    }
}

/// Every path [`Endpoint::upstream_path`] can return.
pub const UPSTREAM_PATHS: [&str; 4] = [
    "/v1/messages",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/chat/completions",
];

/// One attempt's request, and how to read its response.
pub struct Plan {
    pub path: &'static str,
    pub body: Bytes,
    /// Whether the response needs translating back (protocols differ).
    pub translated: bool,
    /// We added `stream_options.include_usage` the client did not ask for.
    pub injected_usage: bool,
}

/// Build the upstream body for `backend_proto` with the backend's `model`.
pub fn plan(
    call: &Call<'_>,
    backend_proto: Protocol,
    model: &str,
    default_max_tokens: u32,
) -> Result<Plan, GatewayError> {
    let Call {
        endpoint,
        body,
        model: client_model,
        stream,
        include_usage: wants_usage,
        ..
    } = *call;
    let client = endpoint.client_protocol();
    let path = endpoint.upstream_path(backend_proto);
    if client == backend_proto {
        let inject = stream
            && backend_proto == Protocol::Openai
            && endpoint != Endpoint::Embeddings
            && !wants_usage;
        if model == client_model && !inject {
            return Ok(Plan {
                path,
                body: body.raw().clone(),
                translated: false,
                injected_usage: false,
            });
        }
        let mut v = body.tree().clone();
        v["model"] = Value::String(model.to_string());
        if inject {
            v["stream_options"] = serde_json::json!({"include_usage": true});
        }
        return Ok(Plan {
            path,
            body: Bytes::from(v.to_string()),
            translated: false,
            injected_usage: inject,
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
    })
}

/// The stream transform for this plan, if any (None: pass bytes through).
pub fn stream_transform(
    endpoint: Endpoint,
    plan: &Plan,
    client_model: &str,
    include_usage: bool,
) -> Option<Box<dyn StreamTransform>> {
    if !plan.translated {
        return plan
            .injected_usage
            .then(|| Box::new(DropInjectedUsage::default()) as Box<dyn StreamTransform>);
    }
    Some(match endpoint {
        Endpoint::Chat => Box::new(tr::MessagesToChatStream::new(client_model, include_usage)),
        Endpoint::Completions => Box::new(tr::MessagesToCompletionStream::new(
            client_model,
            include_usage,
        )),
        _ => Box::new(tr::ChatToMessagesStream::new(client_model)),
    })
}

/// Translate a whole (non-streamed) success body back to the client's dialect.
pub fn response_back(
    endpoint: Endpoint,
    v: &Value,
    client_model: &str,
) -> Result<Value, GatewayError> {
    Ok(match endpoint {
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

#[cfg(test)]
mod tests {
    use super::{Endpoint, UPSTREAM_PATHS};
    use crate::protocol::Protocol;

    #[test]
    fn every_upstream_path_is_listed() {
        let endpoints = [
            Endpoint::Chat,
            Endpoint::Completions,
            Endpoint::Messages,
            Endpoint::Embeddings,
        ];
        for e in endpoints {
            for p in [Protocol::Openai, Protocol::Anthropic] {
                assert!(UPSTREAM_PATHS.contains(&e.upstream_path(p)), "{e:?} {p:?}");
            }
        }
    }
}
