//! `POST /v1/messages/count_tokens` passed through to an Anthropic backend that serves the model
//! (its own count, for its own tokenizer). Not a generation: no slot, no token bucket, no failover
//! beyond trying the next such backend; the caller estimates when none answers.

use super::Deliver;
use super::upstream::{anthropic_headers, read_limited, with_key};
use crate::balance::Backend;
use crate::protocol::{Protocol, RespBody, full_body};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response};
use serde_json::Value;
use std::sync::Arc;

/// The path of Anthropic's token counting.
const PATH: &str = "/v1/messages/count_tokens";

impl Deliver {
    /// The count of the first available Anthropic backend of `pool` serving `model` that answers
    /// (a success or a client error, passed on as it came), and that backend; `None` when there
    /// is none.
    pub async fn count_tokens(
        &self,
        pool: &[usize],
        model: &str,
        body: &Bytes,
        headers: &HeaderMap,
    ) -> Option<(Response<RespBody>, Arc<Backend>)> {
        let now = std::time::Instant::now();
        let backends = self.balancer.backends();
        let set = super::client::client_set().min(self.clients.len() - 1);
        for &id in pool {
            let backend = &backends[id];
            let cfg = &backend.cfg;
            if cfg.protocol != Protocol::Anthropic
                || !cfg.serves(model)
                || !self.balancer.view().status(backend, now).available
            {
                continue;
            }
            let upstream_model = cfg.model_for(model);
            let body = if upstream_model == model {
                body.clone()
            } else {
                let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
                    continue;
                };
                v["model"] = Value::String(upstream_model.to_string());
                Bytes::from(v.to_string())
            };
            let client = &self.clients[set][id];
            let Ok(target) = client.target(PATH) else {
                continue;
            };
            let b = Request::post(target).header(CONTENT_TYPE, "application/json");
            let b = anthropic_headers(with_key(b, backend), headers, true);
            let Ok(req) = b.body(body) else { continue };
            let deadline = tokio::time::Instant::now() + cfg.timeouts.first_byte();
            let Ok(Ok(resp)) = tokio::time::timeout_at(deadline, client.send(req)).await else {
                continue;
            };
            let status = resp.status();
            if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 401 {
                continue;
            }
            let max = self.bounds.max_upstream_body_bytes;
            let Ok(answer) = read_limited(backend, resp.into_body(), deadline, max).await else {
                continue;
            };
            let mut r = Response::new(full_body(answer));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Some((r, backend.clone()));
        }
        None
    }
}
