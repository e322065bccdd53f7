//! Request dispatch: admin endpoints, then the API pipeline (auth, limits, faults, latency).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::body::{MockBody, error, json_response};
use super::control::{self, Snapshot, retry_after_secs};
use super::fault::StreamFault;
use super::state::{InFlight, State};
use super::{anthropic, embeddings, legacy, openai, responses};
use crate::protocol::Protocol;

/// Largest request body accepted.
const MAX_BODY: usize = 32 << 20;

static X_MOCK_NAME: HeaderName = HeaderName::from_static("x-mock-name");

/// The hyper service: every response carries `x-mock-name`.
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let mut res = dispatch(&state, req).await;
    res.headers_mut()
        .insert(X_MOCK_NAME.clone(), state.name_header.clone());
    Ok(res)
}

async fn dispatch(state: &Arc<State>, req: Request<Incoming>) -> Response<MockBody> {
    let protocol = state.cfg.protocol;
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let post = req.method() == Method::POST;
    match req.uri().path() {
        "/health" if get => control::health(state),
        "/health" => not_allowed(protocol, "GET"),
        "/_mock/stats" if get => control::stats(state),
        "/_mock/stats" => not_allowed(protocol, "GET"),
        "/_mock/control" if get => control::settings(state),
        "/_mock/control" if post => match read_body(protocol, req).await {
            Ok(body) => control::control(state, &body),
            Err(res) => res,
        },
        "/_mock/control" => not_allowed(protocol, "GET, POST"),
        "/_mock/reset" if post => control::reset(state),
        "/_mock/reset" => not_allowed(protocol, "POST"),
        "/_mock/last_trace" if get => json_response(StatusCode::OK, state.last_trace().to_string()),
        "/_mock/last_trace" => not_allowed(protocol, "GET"),
        _ => {
            state.saw_trace(req.headers());
            let guard = InFlight::enter(state);
            let res = api(state, req, guard).await;
            state.stats.record(res.status().as_u16());
            res
        }
    }
}

/// An API endpoint of the simulated provider.
#[derive(Clone, Copy)]
enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    Messages,
    CountTokens,
    Responses,
    /// `/v1/responses/{id}[/input_items]`: GET, or DELETE.
    StoredResponse,
}

fn endpoint(protocol: Protocol, path: &str) -> Option<(Endpoint, Method)> {
    Some(match (protocol, path) {
        (_, "/v1/models") => (Endpoint::Models, Method::GET),
        (Protocol::Openai, "/v1/chat/completions") => (Endpoint::ChatCompletions, Method::POST),
        (Protocol::Openai, "/v1/completions") => (Endpoint::Completions, Method::POST),
        (Protocol::Openai, "/v1/embeddings") => (Endpoint::Embeddings, Method::POST),
        (Protocol::Openai, "/v1/responses") => (Endpoint::Responses, Method::POST),
        (Protocol::Openai, p) if p.starts_with("/v1/responses/") => {
            (Endpoint::StoredResponse, Method::GET)
        }
        (Protocol::Anthropic, "/v1/messages") => (Endpoint::Messages, Method::POST),
        (Protocol::Anthropic, "/v1/messages/count_tokens") => (Endpoint::CountTokens, Method::POST),
        _ => return None,
    })
}

async fn api(state: &Arc<State>, req: Request<Incoming>, guard: InFlight) -> Response<MockBody> {
    let protocol = state.cfg.protocol;
    let Some((ep, method)) = endpoint(protocol, req.uri().path()) else {
        let msg = format!("Unknown request URL: {} {}", req.method(), req.uri().path());
        return error(protocol, StatusCode::NOT_FOUND, &msg);
    };
    let delete = matches!(ep, Endpoint::StoredResponse) && req.method() == Method::DELETE;
    let path = req.uri().path().to_owned();
    if req.method() != method && !(method == Method::GET && req.method() == Method::HEAD) && !delete
    {
        let allow = if method == Method::GET { "GET" } else { "POST" };
        return not_allowed(protocol, allow);
    }
    let auth_ok = state
        .cfg
        .api_key
        .as_deref()
        .is_none_or(|key| authorized(req.headers(), key));
    let keys = matches!(
        state.settings.stream_fault(),
        StreamFault::EchoKey | StreamFault::EchoKeyEvent
    )
    .then(|| sent_keys(req.headers()));
    let body = match read_body(protocol, req).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    if !auth_ok {
        let msg = "Incorrect or missing API key.";
        return error(protocol, StatusCode::UNAUTHORIZED, msg);
    }
    let tokens = if state.settings.limiter.counts_tokens() {
        token_estimate(&body, state.cfg.output_tokens)
    } else {
        0
    };
    let quota = match state.settings.limiter.check(tokens) {
        Ok(q) => q,
        Err((q, wait)) => {
            let mut res = error(
                protocol,
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded (mock). Please retry later.",
            );
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
            if !state.cfg.no_rate_limit_headers {
                q.write(protocol, res.headers_mut());
            }
            return res;
        }
    };
    let stored = Stored {
        delete,
        path: &path,
    };
    let mut res = answer(state, ep, body, keys, stored, guard).await;
    if !state.cfg.no_rate_limit_headers {
        quota.write(protocol, res.headers_mut());
    }
    res
}

/// A request's tokens as the simulated provider counts them against its token limit: its body
/// size / 4 plus its `max_tokens` (or the words it would generate).
fn token_estimate(body: &Bytes, default_output: u32) -> u64 {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok();
    let max = v.as_ref().and_then(|v| {
        ["max_tokens", "max_completion_tokens"]
            .iter()
            .find_map(|k| v.get(*k).and_then(serde_json::Value::as_u64))
    });
    body.len() as u64 / 4 + max.unwrap_or(u64::from(default_output))
}

/// A stored-response call: its method and path.
struct Stored<'a> {
    delete: bool,
    path: &'a str,
}

/// The answer to an API request that passed the limits.
async fn answer(
    state: &Arc<State>,
    ep: Endpoint,
    body: Bytes,
    keys: Option<String>,
    stored: Stored<'_>,
    guard: InFlight,
) -> Response<MockBody> {
    let protocol = state.cfg.protocol;
    let mut snap: Snapshot = state.settings.snapshot();
    if !snap.latency.is_zero() {
        tokio::time::sleep(snap.latency).await;
    }
    match snap.stream_fault {
        StreamFault::Blackhole => {
            // The request was read; nothing, not even a status line, ever comes back.
            let _guard = guard;
            return std::future::pending().await;
        }
        StreamFault::EchoKey => {
            let msg = format!(
                "Invalid request (mock echo_key): you sent {}.",
                keys.unwrap_or_default()
            );
            return error(protocol, StatusCode::BAD_REQUEST, &msg);
        }
        StreamFault::Garbage if !is_streamed(&body) => {
            // A whole answer that is not JSON at all, with a 200 and a JSON content type.
            return json_response(
                StatusCode::OK,
                Bytes::from_static(
                    b"{\"id\": \"chatcmpl-garbage\", \"choices\": [\xff\xfe garbage",
                ),
            );
        }
        StreamFault::EchoKeyEvent => {
            let msg = format!(
                "Invalid request (mock echo_key_event): you sent {}.",
                keys.unwrap_or_default()
            );
            snap.echo_event = Some(error_event(protocol, &msg));
        }
        _ => {}
    }
    if let Some(code) = snap.status {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let msg = format!("Forced status {code} (mock control).");
        let mut res = error(protocol, status, &msg);
        if let Some(secs) = snap.retry_after_s {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        return res;
    }
    if snap.error_rate > 0.0 && rand::random::<f64>() < snap.error_rate {
        let msg = "The server had an error while processing your request (simulated).";
        return error(protocol, StatusCode::INTERNAL_SERVER_ERROR, msg);
    }
    match ep {
        Endpoint::ChatCompletions => openai::chat(state, &snap, &body, guard).await,
        Endpoint::Completions => legacy::completions(state, &snap, &body, guard).await,
        Endpoint::Embeddings => embeddings::embeddings(&snap, &body).await,
        Endpoint::Models if protocol == Protocol::Openai => openai::models(state),
        Endpoint::Models => anthropic::models(),
        Endpoint::Messages => anthropic::messages(state, &snap, &body, guard).await,
        Endpoint::CountTokens => anthropic::count_tokens(&body),
        Endpoint::Responses => responses::create(state, &snap, &body, guard).await,
        Endpoint::StoredResponse => {
            responses::stored(state, stored.delete, &stored.path["/v1/responses/".len()..])
        }
    }
}

/// Whether a request body asks for a streamed answer.
fn is_streamed(body: &Bytes) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("stream").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// An error event in `protocol`'s stream shape.
fn error_event(protocol: Protocol, msg: &str) -> Bytes {
    let ev = match protocol {
        Protocol::Openai => {
            let data =
                serde_json::json!({"error": {"message": msg, "type": "invalid_request_error"}});
            format!("data: {data}\n\n")
        }
        Protocol::Anthropic => {
            let data = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": msg}});
            format!("event: error\ndata: {data}\n\n")
        }
    };
    Bytes::from(ev)
}

/// The credential headers a request carried, as the `echo_key` fault repeats them.
fn sent_keys(headers: &HeaderMap) -> String {
    let show = |name: &str| {
        headers.get(name).map_or_else(
            || "(none)".to_owned(),
            |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )
    };
    format!(
        "Authorization: {}, x-api-key: {}",
        show("authorization"),
        show("x-api-key")
    )
}

/// `Authorization: Bearer <key>` or `x-api-key: <key>`, whatever the protocol.
fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, k)| scheme.eq_ignore_ascii_case("bearer") && k.trim() == key);
    bearer
        || headers
            .get("x-api-key")
            .is_some_and(|v| v.as_bytes() == key.as_bytes())
}

async fn read_body(
    protocol: Protocol,
    req: Request<Incoming>,
) -> Result<Bytes, Response<MockBody>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(error(
            protocol,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large.",
        )),
        Err(e) => Err(error(
            protocol,
            StatusCode::BAD_REQUEST,
            &format!("Could not read request body: {e}"),
        )),
    }
}

fn not_allowed(protocol: Protocol, allow: &'static str) -> Response<MockBody> {
    let mut res = error(
        protocol,
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Method not allowed (allowed: {allow})."),
    );
    res.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    res
}
