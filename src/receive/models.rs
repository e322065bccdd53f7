//! `GET /v1/models` and `GET /v1/models/{id}`: every model the caller can call through Sluice (the
//! names of backends' `models:` maps, plus the `list_models` of backends that serve any model, kept
//! to those its requests would be routed to a backend serving), in OpenAI's shape, or in
//! Anthropic's when the request carries `anthropic-version`.

use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::observe::admin::json_response_bytes;
use crate::protocol::{Protocol, RespBody};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Every model some backend serves by name, sorted.
#[derive(Debug, Clone)]
pub struct ModelList {
    names: Vec<String>,
}

/// The `created_at` Anthropic's model objects carry (Sluice knows no release dates).
const EPOCH: &str = "1970-01-01T00:00:00Z";

fn openai_model(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "sluice"})
}

fn anthropic_model(id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": id, "created_at": EPOCH})
}

/// The list, built once at start.
pub fn list<'a>(backends: impl IntoIterator<Item = &'a BackendConfig>) -> ModelList {
    let names: BTreeSet<&str> = backends
        .into_iter()
        .flat_map(|b| {
            b.models
                .keys()
                .chain(b.list_models.iter())
                .map(String::as_str)
        })
        .collect();
    ModelList {
        names: names.into_iter().map(str::to_string).collect(),
    }
}

/// The dialect a models request speaks: Anthropic's SDKs always send `anthropic-version`.
pub fn dialect(headers: &HeaderMap) -> Protocol {
    if headers.contains_key("anthropic-version") {
        Protocol::Anthropic
    } else {
        Protocol::Openai
    }
}

impl ModelList {
    /// `GET /v1/models` (`id` None) or `GET /v1/models/{id}`, of the models `callable` keeps.
    pub fn answer(
        &self,
        id: Option<&str>,
        proto: Protocol,
        callable: impl Fn(&str) -> bool,
    ) -> Response<RespBody> {
        let Some(id) = id else {
            let names: Vec<&str> = self
                .names
                .iter()
                .map(String::as_str)
                .filter(|n| callable(n))
                .collect();
            let body = match proto {
                Protocol::Openai => {
                    let data: Vec<Value> = names.iter().map(|m| openai_model(m)).collect();
                    json!({"object": "list", "data": data})
                }
                Protocol::Anthropic => {
                    let data: Vec<Value> = names.iter().map(|m| anthropic_model(m)).collect();
                    json!({"data": data, "has_more": false, "first_id": names.first(), "last_id": names.last()})
                }
            };
            return json_response_bytes(StatusCode::OK, Bytes::from(body.to_string()));
        };
        if !self.names.iter().any(|n| n == id) || !callable(id) {
            return GatewayError::ModelNotFound(id.to_string()).response(proto);
        }
        let v = match proto {
            Protocol::Openai => openai_model(id),
            Protocol::Anthropic => anthropic_model(id),
        };
        json_response_bytes(StatusCode::OK, Bytes::from(v.to_string()))
    }
}
