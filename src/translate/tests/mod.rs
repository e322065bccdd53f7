//! Unit tests for the translate module, one file per area.

mod completion;
mod error;
mod request_to_anthropic;
mod request_to_openai;
mod response;
mod responses;
mod scan;
mod sse;
mod stream_to_anthropic;
mod stream_to_openai;
mod usage;

use bytes::Bytes;
use serde_json::Value;

use super::{SseEvent, SseParser, TranslateError};

/// Parse encoded frames back into events.
pub(super) fn events(frames: &[Bytes]) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    let mut out = Vec::new();
    for f in frames {
        out.extend(parser.push(f));
    }
    assert!(
        parser.finish().is_empty(),
        "frames must end with a blank line"
    );
    out
}

/// The JSON payloads of frames (skipping `[DONE]`).
pub(super) fn payloads(frames: &[Bytes]) -> Vec<Value> {
    events(frames)
        .into_iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).expect("frame data is JSON"))
        .collect()
}

/// An upstream event as the parser would produce it.
pub(super) fn ev(event: Option<&str>, data: Value) -> SseEvent {
    SseEvent {
        event: event.map(str::to_string),
        data: data.to_string(),
    }
}

/// Assert an `Unsupported` error naming `field`.
#[track_caller]
pub(super) fn assert_unsupported<T: std::fmt::Debug>(r: Result<T, TranslateError>, field: &str) {
    match r {
        Err(e @ TranslateError::Unsupported { .. }) => {
            assert_eq!(e.field(), field, "{e}");
            assert!(e.to_string().contains(field));
        }
        other => panic!("expected Unsupported({field}), got {other:?}"),
    }
}

/// Assert an `Invalid` error naming `field`.
#[track_caller]
pub(super) fn assert_invalid<T: std::fmt::Debug>(r: Result<T, TranslateError>, field: &str) {
    match r {
        Err(e @ TranslateError::Invalid { .. }) => {
            assert_eq!(e.field(), field, "{e}");
            assert!(e.to_string().contains(field));
        }
        other => panic!("expected Invalid({field}), got {other:?}"),
    }
}
