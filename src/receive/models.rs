//! `/v1/models`: every model name the config maps, in OpenAI's list shape (backends without a model
//! map serve whatever is asked, so they add no names).

use crate::config::BackendConfig;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The list body, built once at start.
pub fn list<'a>(backends: impl IntoIterator<Item = &'a BackendConfig>) -> Bytes {
    let names: BTreeSet<&str> = backends
        .into_iter()
        .flat_map(|b| b.models.keys().map(String::as_str))
        .collect();
    let data: Vec<Value> = names
        .into_iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "sluice"}))
        .collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}
