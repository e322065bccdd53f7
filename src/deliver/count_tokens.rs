//! Calls beside generations, sent to one chosen backend and answered whole: Anthropic's
//! `POST /v1/messages/count_tokens` (an Anthropic backend that serves the model counts), and the
//! stored-response calls of the Responses API (`GET`/`DELETE /v1/responses/{id}`, its
//! `input_items`, `POST …/cancel`) sent to the backend holding the response. No slot, no token
//! bucket, no failover beyond trying the next backend that can count.

use super::Deliver;
use super::upstream::{anthropic_headers, read_limited, with_key};
use crate::balance::Backend;
use crate::error::GatewayError;
use crate::protocol::{Protocol, RespBody, full_body};
use crate::translate::tag_response_ids;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::Value;
use std::sync::Arc;

/// The path of Anthropic's token counting.
const PATH: &str = "/v1/messages/count_tokens";

impl Deliver {
    /// Send `req` (its target a path on `backend`) and read the whole answer, within the backend's
    /// first-byte timeout.
    async fn send_whole(
        &self,
        backend: &Backend,
        req: Request<Bytes>,
    ) -> Result<(StatusCode, Bytes), GatewayError> {
        let set = super::client::client_set().min(self.clients.len() - 1);
        let client = &self.clients[set][backend.id];
        let deadline = tokio::time::Instant::now() + backend.cfg.timeouts.first_byte();
        let resp = match tokio::time::timeout_at(deadline, client.send(req)).await {
            Err(_) => return Err(GatewayError::UpstreamTimeout(backend.name().into())),
            Ok(Err(e)) => {
                return Err(GatewayError::UpstreamUnavailable {
                    backend: backend.name().into(),
                    reason: e.to_string(),
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let max = self.bounds.max_upstream_body_bytes;
        let body = read_limited(backend, resp.into_body(), deadline, max).await?;
        Ok((status, body))
    }

    fn target(&self, backend: &Backend, path: &str) -> Result<http::Uri, GatewayError> {
        self.clients[0][backend.id]
            .target(path)
            .map_err(|e| GatewayError::UpstreamUnavailable {
                backend: backend.name().into(),
                reason: format!("invalid upstream url: {e}"),
            })
    }

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
            let Ok(target) = self.target(backend, PATH) else {
                continue;
            };
            let b = Request::post(target).header(CONTENT_TYPE, "application/json");
            let b = anthropic_headers(with_key(b, backend), headers, true);
            let Ok(req) = b.body(body) else { continue };
            let Ok((status, answer)) = self.send_whole(backend, req).await else {
                continue;
            };
            if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 401 {
                continue;
            }
            return Some((json(status, answer), backend.clone()));
        }
        None
    }

    /// A stored-response call (`path` with the backend's own response id, query included) sent to
    /// `backend`, which holds the response; the ids in its answer tagged as the client knows them.
    pub async fn stored_response(
        &self,
        backend: &Backend,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<RespBody>, GatewayError> {
        let target = self.target(backend, path)?;
        let mut b = Request::builder().method(method).uri(target);
        if !body.is_empty() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        let req =
            with_key(b, backend)
                .body(body)
                .map_err(|e| GatewayError::UpstreamUnavailable {
                    backend: backend.name().into(),
                    reason: format!("cannot build request: {e}"),
                })?;
        let (status, answer) = self.send_whole(backend, req).await?;
        let answer = if status.is_success() {
            tag_response_ids(answer, &crate::translate::response_tag(backend.name()))
        } else {
            answer
        };
        Ok(json(status, answer))
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<RespBody> {
    let mut r = Response::new(full_body(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
