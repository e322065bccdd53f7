//! The API a client called, and where each one goes on a backend of either protocol.

use super::Protocol;

/// The API a client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Messages,
    Embeddings,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        match path {
            "/v1/chat/completions" | "/chat/completions" => Some(Endpoint::Chat),
            "/v1/completions" | "/completions" => Some(Endpoint::Completions),
            "/v1/messages" | "/messages" => Some(Endpoint::Messages),
            "/v1/embeddings" | "/embeddings" => Some(Endpoint::Embeddings),
            "/v1/responses" | "/responses" => Some(Endpoint::Responses),
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
            Endpoint::Responses => "responses",
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

    /// The upstream API path for a backend of `proto`: one of [`UPSTREAM_PATHS`]. Responses go to
    /// `/v1/chat/completions` (translated) unless the backend serves Responses itself (see
    /// `translate::plan`).
    pub fn upstream_path(self, proto: Protocol) -> &'static str {
        match (self, proto) {
            (_, Protocol::Anthropic) => "/v1/messages",
            (Endpoint::Completions, Protocol::Openai) => "/v1/completions",
            (Endpoint::Embeddings, Protocol::Openai) => "/v1/embeddings",
            (_, Protocol::Openai) => "/v1/chat/completions",
        }
    }
}

/// Every path [`Endpoint::upstream_path`] can return.
pub const UPSTREAM_PATHS: [&str; 5] = [
    "/v1/messages",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/chat/completions",
];

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
            Endpoint::Responses,
        ];
        for e in endpoints {
            for p in [Protocol::Openai, Protocol::Anthropic] {
                assert!(UPSTREAM_PATHS.contains(&e.upstream_path(p)), "{e:?} {p:?}");
            }
        }
    }
}
