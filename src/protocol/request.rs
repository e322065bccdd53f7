//! The client's request body as every stage sees it: the bytes as received, and their JSON tree,
//! built only when a plan rewrites or translates the body (pass-through requests never build it).

use bytes::Bytes;
use serde_json::Value;
use std::sync::OnceLock;

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
