//! Stream transforms: turn upstream SSE events into the client's frames (a translator between
//! dialects, or a filter on a same-dialect stream).

use super::{SseEvent, StreamUsage, Usage, encode_sse};
use bytes::Bytes;

/// Turns upstream SSE events into the client's frames (a translator, or a filter).
pub trait StreamTransform: Send {
    fn push(&mut self, ev: &SseEvent) -> Vec<Bytes>;
    fn finish(&mut self) -> Vec<Bytes>;
    fn usage(&self) -> Option<Usage>;
}

macro_rules! transform_for {
    ($($t:ty),*) => {$(
        impl StreamTransform for $t {
            fn push(&mut self, ev: &SseEvent) -> Vec<Bytes> { <$t>::push(self, ev) }
            fn finish(&mut self) -> Vec<Bytes> { <$t>::finish(self) }
            fn usage(&self) -> Option<Usage> { <$t>::usage(self) }
        }
    )*};
}
transform_for!(
    super::MessagesToChatStream,
    super::ChatToMessagesStream,
    super::MessagesToCompletionStream,
    super::ChatToResponsesStream,
    super::MessagesToResponsesStream
);

/// Same protocol, but we asked the upstream for `stream_options.include_usage` the client did not:
/// re-encode events and drop the usage-only chunk the client does not expect.
#[derive(Default)]
pub struct DropInjectedUsage {
    usage: StreamUsage,
}

impl StreamTransform for DropInjectedUsage {
    fn push(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        self.usage.observe(ev);
        let usage_only = ev.data.contains("\"usage\"")
            && serde_json::from_str::<serde_json::Value>(&ev.data)
                .ok()
                .and_then(|v| {
                    v.get("choices")
                        .and_then(|c| c.as_array())
                        .map(|c| c.is_empty())
                })
                .unwrap_or(false);
        if usage_only {
            return Vec::new();
        }
        vec![encode_sse(ev.event.as_deref(), &ev.data)]
    }
    fn finish(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
    fn usage(&self) -> Option<Usage> {
        self.usage.usage()
    }
}
