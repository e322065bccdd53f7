//! Reading a client's request body, bounded in size, in time (an idle gap and a total) and, across
//! all requests being read at once, in memory: a client that declares a large body and trickles it
//! holds neither its connection nor its buffer for ever, and a crowd of them cannot take the node's
//! memory (new requests get 503 at once past the budget).

use crate::config::BoundsConfig;
use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use http::Request;
use http::header::CONTENT_LENGTH;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes of request bodies being read right now, across the node.
#[derive(Debug, Default)]
pub struct BodyBudget(AtomicUsize);

/// A share of the budget, given back on drop.
struct Held<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
}

impl BodyBudget {
    /// Take `n` more bytes for `held`, or refuse past `max`.
    fn grow(&self, held: &mut Held<'_>, n: usize, max: usize) -> bool {
        let before = self.0.fetch_add(n, Ordering::AcqRel);
        if before + n > max {
            self.0.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        held.bytes += n;
        true
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.0.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The request's head and whole body. Refused past `max` bytes (declared or sent), after
/// `body_idle_timeout_ms` without a byte or `body_timeout_ms` in all, and when the node's bodies
/// being read would pass `max_pending_body_bytes`.
pub async fn read_body(
    req: Request<Incoming>,
    max: usize,
    bounds: &BoundsConfig,
    budget: &BodyBudget,
) -> Result<(http::request::Parts, Bytes), GatewayError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(GatewayError::PayloadTooLarge(max));
    }
    let mut held = Held { budget, bytes: 0 };
    // A declared length is reserved up front: refused at once rather than after it trickled in.
    if let Some(n) = declared
        && !budget.grow(&mut held, n, bounds.max_pending_body_bytes)
    {
        return Err(GatewayError::BodiesOverBudget);
    }
    let (parts, mut body) = req.into_parts();
    let idle = Duration::from_millis(bounds.body_idle_timeout_ms);
    let total = Duration::from_millis(bounds.body_timeout_ms);
    // Set at the first wait: a body already read with the head (the usual case) is taken without
    // a clock read or a timer.
    let mut deadline: Option<Instant> = None;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    loop {
        let ready = std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(frame) => Some(frame),
                Poll::Pending => None,
            })
        })
        .await;
        let next = match ready {
            Some(next) => next,
            None => {
                let now = Instant::now();
                let deadline = *deadline.get_or_insert(now + total);
                match tokio::time::timeout_at((now + idle).min(deadline), body.frame()).await {
                    Err(_) => return Err(GatewayError::BodyTimeout),
                    Ok(next) => next,
                }
            }
        };
        let frame = match next {
            None => break,
            Some(Err(e)) => {
                return Err(GatewayError::BadJson(format!(
                    "could not read the body: {e}"
                )));
            }
            Some(Ok(f)) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > max {
            return Err(GatewayError::PayloadTooLarge(max));
        }
        let beyond = (buf.len() + data.len()).saturating_sub(held.bytes);
        if beyond > 0 && !budget.grow(&mut held, beyond, bounds.max_pending_body_bytes) {
            return Err(GatewayError::BodiesOverBudget);
        }
        buf.extend_from_slice(&data);
    }
    Ok((parts, buf.freeze()))
}
