//! Response body type (whole or channel-fed) and response builders, including error JSON.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::protocol::Protocol;

/// A response body: either one buffer, or frames pushed by a producer task as they are made. An
/// empty frame on the channel aborts the body (the connection drops without a terminating chunk).
pub(crate) enum MockBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            MockBody::Full(data) => Poll::Ready(data.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Stream(rx) => rx.poll_recv(cx).map(|b| {
                b.map(|b| match b.is_empty() {
                    true => Err(std::io::Error::other("mock: dropped mid-body")),
                    false => Ok(Frame::data(b)),
                })
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64))
            }
            MockBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// A complete JSON response.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut res = Response::new(MockBody::Full(Some(body.into())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// A complete JSON response from a serializable value.
pub(crate) fn json_ok(value: &impl Serialize) -> Response<MockBody> {
    match serde_json::to_vec(value) {
        Ok(v) => json_response(StatusCode::OK, v),
        // Our own types always serialize; keep a sane answer anyway.
        Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A `text/event-stream` response fed by `rx`.
pub(crate) fn sse_response(rx: mpsc::Receiver<Bytes>) -> Response<MockBody> {
    let mut res = Response::new(MockBody::Stream(rx));
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// An error response in the protocol's shape.
pub(crate) fn error(protocol: Protocol, status: StatusCode, message: &str) -> Response<MockBody> {
    json_response(status, error_json(protocol, status, message))
}

/// OpenAI: `{"error":{"message","type","param","code"}}`.
#[derive(Serialize)]
struct OpenaiError<'a> {
    error: OpenaiErrorBody<'a>,
}

#[derive(Serialize)]
struct OpenaiErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<()>,
    code: Option<()>,
}

/// Anthropic: `{"type":"error","error":{"type","message"}}`.
#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorBody<'a>,
}

#[derive(Serialize)]
struct AnthropicErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// Error JSON in the protocol's shape, its `type` derived from the status.
pub(crate) fn error_json(protocol: Protocol, status: StatusCode, message: &str) -> Vec<u8> {
    let code = status.as_u16();
    let json = match protocol {
        Protocol::Openai => {
            let kind = match code {
                401 => "authentication_error",
                429 => "rate_limit_error",
                500.. => "server_error",
                _ => "invalid_request_error",
            };
            serde_json::to_vec(&OpenaiError {
                error: OpenaiErrorBody {
                    message,
                    kind,
                    param: None,
                    code: None,
                },
            })
        }
        Protocol::Anthropic => {
            let kind = match code {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                500.. => "api_error",
                _ => "invalid_request_error",
            };
            serde_json::to_vec(&AnthropicError {
                kind: "error",
                error: AnthropicErrorBody { kind, message },
            })
        }
    };
    json.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shapes() {
        let o: serde_json::Value = serde_json::from_slice(&error_json(
            Protocol::Openai,
            StatusCode::TOO_MANY_REQUESTS,
            "x",
        ))
        .unwrap();
        assert_eq!(o["error"]["type"], "rate_limit_error");
        assert!(o["error"]["param"].is_null() && o["error"]["code"].is_null());
        let a: serde_json::Value =
            serde_json::from_slice(&error_json(Protocol::Anthropic, StatusCode::NOT_FOUND, "x"))
                .unwrap();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "not_found_error");
        assert_eq!(a["error"]["message"], "x");
    }
}
