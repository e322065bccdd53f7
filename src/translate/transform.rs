//! Stream transforms: turn upstream SSE events into the client's frames (a translator between
//! dialects, or a filter on a same-dialect stream).

use super::{SseEvent, Usage, encode_sse};
use bytes::Bytes;

/// Turns upstream SSE events into the client's frames (a translator, or a filter).
pub trait StreamTransform: Send {
    fn push(&mut self, ev: &SseEvent) -> Vec<Bytes>;
    fn finish(&mut self) -> Vec<Bytes>;
    fn usage(&self) -> Option<Usage>;
    /// A filter that passes what it keeps unchanged says whether it keeps `ev`: a run of kept
    /// events then goes out as the bytes it came in (nothing re-encoded). `None`, the default: the
    /// transform rewrites events, and only [`StreamTransform::push`] says what goes out.
    fn keeps(&self, _ev: &SseEvent) -> Option<bool> {
        None
    }
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
///
/// Each event is read for two facts only (is `choices` an empty array, is there a `usage` key),
/// without building a JSON tree: this runs on every chunk of every such stream, which is most
/// OpenAI streams (the SDKs do not ask for usage by default). The usage itself is read by the
/// stream's check ([`super::StreamCheck`]), which parses the one chunk that carries it.
#[derive(Default)]
pub struct DropInjectedUsage;

/// The field [`DropInjectedUsage`] parses (the `usage` key is found by its quoted name); the rest
/// is skipped.
#[derive(serde::Deserialize)]
struct UsageOnly {
    /// A vector of zero-sized items: nothing is allocated.
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
}

impl DropInjectedUsage {
    /// Whether `data` is the usage-only chunk: a `usage` key and an empty `choices` array. Every
    /// other chunk also has `"usage":null` once usage was asked for: only one with an empty array
    /// somewhere is parsed. The empty array is looked for first: most chunks have none, and that
    /// search is the cheaper one.
    fn usage_only(data: &str) -> bool {
        has_empty_array(data.as_bytes())
            && data.contains("\"usage\"")
            && serde_json::from_str::<UsageOnly>(data)
                .ok()
                .and_then(|c| c.choices)
                .is_some_and(|c| c.is_empty())
    }
}

/// Whether `b` holds `[` and `]` with only white space between them (anywhere, strings included).
fn has_empty_array(b: &[u8]) -> bool {
    memchr::memchr_iter(b']', b).any(|i| {
        b[..i]
            .iter()
            .rev()
            .find(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
            == Some(&b'[')
    })
}

impl StreamTransform for DropInjectedUsage {
    fn keeps(&self, ev: &SseEvent) -> Option<bool> {
        Some(!Self::usage_only(&ev.data))
    }

    fn push(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        if Self::usage_only(&ev.data) {
            return Vec::new();
        }
        vec![encode_sse(ev.event.as_deref(), &ev.data)]
    }
    fn finish(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
    /// None: the stream's check reads the usage (see the type's note).
    fn usage(&self) -> Option<Usage> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Protocol;
    use crate::translate::StreamCheck;

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.to_string(),
        }
    }

    /// Only the usage-only chunk is dropped (OpenAI sends `"usage":null` on every other chunk once
    /// usage is asked for), and the stream's check still counts the usage.
    #[test]
    fn only_the_usage_only_chunk_is_dropped_and_the_check_counts_it() {
        let chunks = [
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"say \"usage\": []"}}],"usage":null}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
            r#"{"id":"c","choices":null,"usage":null}"#,
            "[DONE]",
        ];
        let mut t = DropInjectedUsage;
        let mut check = StreamCheck::new(Protocol::Openai);
        let mut kept = Vec::new();
        for c in chunks {
            check.observe(&ev(c)).unwrap();
            kept.push(!t.push(&ev(c)).is_empty());
        }
        assert_eq!(kept, [true, true, false, true, true]);
        let keeps: Vec<_> = chunks.iter().map(|c| t.keeps(&ev(c))).collect();
        assert_eq!(
            keeps,
            [Some(true), Some(true), Some(false), Some(true), Some(true)]
        );
        // White space inside the empty array, and a non-empty one that only looks empty in text.
        assert_eq!(
            t.keeps(&ev(r#"{"choices": [ ], "usage": {"total_tokens": 1}}"#)),
            Some(false)
        );
        assert_eq!(
            t.keeps(&ev(
                r#"{"choices":[{"delta":{"content":"[]"}}],"usage":null}"#
            )),
            Some(true)
        );
        assert_eq!(t.usage(), None);
        assert_eq!(
            check.usage(),
            Some(Usage {
                input_tokens: 3,
                output_tokens: 2
            })
        );
    }
}
