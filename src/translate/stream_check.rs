//! Stream integrity: whether an upstream SSE stream is complete, malformed or cut short, read with
//! as little parsing as that needs. Every event's data is validated as JSON without building a tree
//! (serde skips what it does not need); only the few events that carry `usage` are parsed for it.
//! For a recording trace the response's model is kept too: from a chunk's `model` (OpenAI, read in
//! the same pass), or from the events parsed for usage (Anthropic `message_start`, the Responses
//! terminal event; `response.created` is parsed for it alone).
//!
//! Complete means: OpenAI, a choice with a `finish_reason` and then `[DONE]`; Anthropic,
//! `message_stop`. An upstream error event also ends a stream (the client sees it as an error).

use super::{SseEvent, StreamUsage, Usage};
use crate::protocol::Protocol;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Why a stream is not passed on as complete. Low-cardinality labels for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// The upstream ended (cleanly or not) before the completion marker.
    Truncated,
    /// An event whose data is not what the protocol sends.
    Malformed,
    /// A line or an event past the configured bound.
    TooLarge,
    /// No bytes for longer than the idle timeout.
    Idle,
    /// Longer than the total timeout.
    TotalTimeout,
    /// The upstream sent an error event in the stream (passed on to the client as it came).
    UpstreamError,
}

impl StreamFault {
    pub fn label(self) -> &'static str {
        match self {
            StreamFault::Truncated => "truncated",
            StreamFault::Malformed => "malformed",
            StreamFault::TooLarge => "too_large",
            StreamFault::Idle => "idle",
            StreamFault::TotalTimeout => "total_timeout",
            StreamFault::UpstreamError => "upstream_error",
        }
    }

    /// What the client is told, in its own error event.
    pub fn message(self) -> &'static str {
        match self {
            StreamFault::Truncated => "upstream stream ended before the message was complete",
            StreamFault::Malformed => "upstream sent a malformed stream event",
            StreamFault::TooLarge => "upstream stream event exceeded the size limit",
            StreamFault::Idle => "upstream stream went idle",
            StreamFault::TotalTimeout => "upstream stream exceeded the total timeout",
            StreamFault::UpstreamError => "upstream stream reported an error",
        }
    }
}

/// What a stream speaks: its events and completion marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions (and legacy completions) chunks, `[DONE]` last.
    Chat,
    /// Anthropic Messages events, `message_stop` last.
    Messages,
    /// OpenAI Responses events, `response.completed` (or `.incomplete`, `.failed`) last.
    Responses,
}

impl Wire {
    /// The stream a backend of `p` answers a chat-shaped request with.
    pub fn of(p: Protocol) -> Wire {
        match p {
            Protocol::Openai => Wire::Chat,
            Protocol::Anthropic => Wire::Messages,
        }
    }

    /// The stream a client of `endpoint` reads.
    pub fn client(endpoint: crate::protocol::Endpoint) -> Wire {
        use crate::protocol::Endpoint;
        match endpoint {
            Endpoint::Responses => Wire::Responses,
            Endpoint::Messages => Wire::Messages,
            _ => Wire::Chat,
        }
    }
}

/// Watches one upstream stream.
#[derive(Debug)]
pub struct StreamCheck {
    upstream: Wire,
    usage: StreamUsage,
    /// `[DONE]` (OpenAI) or `message_stop` (Anthropic) seen.
    done: bool,
    /// A `finish_reason` seen (OpenAI).
    finished: bool,
    /// Why the message stopped, as the upstream said (for traces).
    finish_reason: Option<&'static str>,
    errored: bool,
    /// Keep the response's model (a recording trace), and the one kept.
    keep_model: bool,
    model: Option<String>,
}

#[derive(Deserialize)]
struct OpenAiChunk<'a> {
    /// Borrowed (nothing allocated) and copied once, when a model is kept.
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    choices: Option<AnyFinished>,
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct OpenAiChoice {
    /// Null on every chunk but the last: nothing is allocated until then.
    #[serde(default)]
    finish_reason: Option<serde_json::Value>,
}

/// The `choices` array, read for one fact: the `finish_reason` of the first choice that has a
/// non-null one (each choice is validated as it goes; nothing is collected).
struct AnyFinished(Option<&'static str>);

impl<'de> Deserialize<'de> for AnyFinished {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Choices;
        impl<'de> serde::de::Visitor<'de> for Choices {
            type Value = AnyFinished;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AnyFinished, A::Error> {
                let mut first = None;
                while let Some(c) = seq.next_element::<OpenAiChoice>()? {
                    if first.is_none() {
                        first = c.finish_reason.map(|r| finish_label(r.as_str()));
                    }
                }
                Ok(AnyFinished(first))
            }
        }
        d.deserialize_seq(Choices)
    }
}

/// A finish or stop reason as a label: the ones the APIs define, else `other`.
fn finish_label(reason: Option<&str>) -> &'static str {
    const KNOWN: &[&str] = &[
        "stop",
        "length",
        "tool_calls",
        "content_filter",
        "function_call",
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
    ];
    reason
        .and_then(|r| KNOWN.iter().find(|k| **k == r).copied())
        .unwrap_or("other")
}

/// Anthropic's `message_delta`, read for its `stop_reason`.
#[derive(Deserialize)]
struct AnthropicDelta {
    #[serde(default)]
    delta: Option<AnthropicStop>,
}

#[derive(Deserialize)]
struct AnthropicStop {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

impl StreamCheck {
    pub fn new(upstream: Protocol) -> StreamCheck {
        StreamCheck::of(Wire::of(upstream))
    }

    pub fn of(upstream: Wire) -> StreamCheck {
        StreamCheck {
            upstream,
            usage: StreamUsage::default(),
            done: false,
            finished: false,
            finish_reason: None,
            errored: false,
            keep_model: false,
            model: None,
        }
    }

    /// Keep the response's model as well (a recording trace wants `gen_ai.response.model`).
    pub fn keep_model(&mut self) {
        self.keep_model = true;
        self.usage.keep_model();
    }

    /// The model the upstream answered with, when kept and said.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref().or_else(|| self.usage.model())
    }

    /// Look at one event. `Err(Malformed)` when its data is not what the protocol sends.
    pub fn observe(&mut self, ev: &SseEvent) -> Result<(), StreamFault> {
        let data = ev.data.trim();
        match self.upstream {
            Wire::Chat => {
                if data == "[DONE]" {
                    self.done = true;
                    return Ok(());
                }
                let chunk: OpenAiChunk =
                    serde_json::from_str(data).map_err(|_| StreamFault::Malformed)?;
                if chunk.error.is_some() {
                    self.errored = true;
                }
                if self.keep_model
                    && self.model.is_none()
                    && let Some(m) = chunk.model.filter(|m| !m.is_empty())
                {
                    self.model = Some(m.into_owned());
                }
                if let Some(reason) = chunk.choices.and_then(|c| c.0) {
                    self.finished = true;
                    self.finish_reason.get_or_insert(reason);
                }
                if chunk.usage.is_some() {
                    self.usage.observe(ev);
                }
            }
            Wire::Messages => {
                let e: AnthropicEvent<'_> =
                    serde_json::from_str(data).map_err(|_| StreamFault::Malformed)?;
                match e.kind.as_ref() {
                    "message_stop" => self.done = true,
                    "error" => self.errored = true,
                    "message_start" => self.usage.observe(ev),
                    "message_delta" => {
                        self.usage.observe(ev);
                        if let Ok(AnthropicDelta {
                            delta:
                                Some(AnthropicStop {
                                    stop_reason: Some(r),
                                }),
                        }) = serde_json::from_str(data)
                        {
                            self.finish_reason = Some(finish_label(Some(&r)));
                        }
                    }
                    _ => {}
                }
            }
            Wire::Responses => {
                let e: AnthropicEvent<'_> =
                    serde_json::from_str(data).map_err(|_| StreamFault::Malformed)?;
                match e.kind.as_ref() {
                    "response.completed" | "response.incomplete" | "response.failed" => {
                        self.done = true;
                        self.finish_reason = Some(match e.kind.as_ref() {
                            "response.completed" => "completed",
                            "response.incomplete" => "incomplete",
                            _ => "failed",
                        });
                        self.usage.observe(ev);
                    }
                    "response.created" if self.keep_model => self.usage.observe(ev),
                    "error" => self.errored = true,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The upstream finished the message (or reported an error in the stream).
    pub fn complete(&self) -> bool {
        self.errored
            || match self.upstream {
                Wire::Chat => self.done && self.finished,
                Wire::Messages | Wire::Responses => self.done,
            }
    }

    /// Why the message stopped (`stop`, `end_turn`, `completed`, …), once the upstream said.
    pub fn finish_reason(&self) -> Option<&'static str> {
        self.finish_reason
    }

    /// The upstream sent an error event.
    pub fn errored(&self) -> bool {
        self.errored
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    #[test]
    fn openai_needs_a_finish_reason_and_done() {
        let mut c = StreamCheck::new(Protocol::Openai);
        c.observe(&ev(
            None,
            r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}"#,
        ))
        .unwrap();
        assert!(!c.complete());
        c.observe(&ev(
            None,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
        ))
        .unwrap();
        assert!(!c.complete(), "no [DONE] yet");
        c.observe(&ev(
            None,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        ))
        .unwrap();
        c.observe(&ev(None, "[DONE]")).unwrap();
        assert!(c.complete());
        assert_eq!(c.finish_reason(), Some("stop"));
        assert_eq!(
            c.usage(),
            Some(Usage {
                input_tokens: 3,
                output_tokens: 2
            })
        );
        // [DONE] without any finish_reason: cut short somewhere.
        let mut c = StreamCheck::new(Protocol::Openai);
        c.observe(&ev(None, r#"{"choices":[{"delta":{"content":"hi"}}]}"#))
            .unwrap();
        c.observe(&ev(None, "[DONE]")).unwrap();
        assert!(!c.complete());
    }

    #[test]
    fn the_stop_reason_is_kept_for_traces() {
        let mut c = StreamCheck::new(Protocol::Anthropic);
        c.observe(&ev(
            Some("message_delta"),
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":2}}"#,
        ))
        .unwrap();
        assert_eq!(c.finish_reason(), Some("max_tokens"));
        let mut c = StreamCheck::of(Wire::Chat);
        c.observe(&ev(None, r#"{"choices":[{"finish_reason":"weird"}]}"#))
            .unwrap();
        assert_eq!(c.finish_reason(), Some("other"));
    }

    /// A check of `wire` that keeps the model, after `events`.
    fn keeping(wire: Wire, events: &[(&str, &str)]) -> StreamCheck {
        let mut c = StreamCheck::of(wire);
        c.keep_model();
        for (e, d) in events {
            c.observe(&ev(Some(*e).filter(|e| !e.is_empty()), d))
                .unwrap();
        }
        c
    }

    #[test]
    fn the_model_is_kept_only_when_asked() {
        let chunk =
            r#"{"model":"gpt-x","choices":[{"delta":{"content":"hi"},"finish_reason":null}]}"#;
        let mut c = StreamCheck::of(Wire::Chat);
        c.observe(&ev(None, chunk)).unwrap();
        assert_eq!(c.model(), None);
        let later = chunk.replace("gpt-x", "later");
        let c = keeping(Wire::Chat, &[("", chunk), ("", &later)]);
        assert_eq!(c.model(), Some("gpt-x"));
        let c = keeping(
            Wire::Messages,
            &[(
                "message_start",
                r#"{"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":5,"output_tokens":1}}}"#,
            )],
        );
        assert_eq!(c.model(), Some("claude-x"));
        // Responses: `response.created` names it before any usage (and counts none) ...
        let c = keeping(
            Wire::Responses,
            &[(
                "response.created",
                r#"{"type":"response.created","response":{"model":"gpt-r","usage":null}}"#,
            )],
        );
        assert_eq!((c.model(), c.usage()), (Some("gpt-r"), None));
        // ... and the last event names it too.
        let c = keeping(
            Wire::Responses,
            &[(
                "response.completed",
                r#"{"type":"response.completed","response":{"model":"gpt-r2","usage":{"input_tokens":2,"output_tokens":3}}}"#,
            )],
        );
        assert_eq!(c.model(), Some("gpt-r2"));
        assert_eq!(c.finish_reason(), Some("completed"));
    }

    #[test]
    fn anthropic_needs_message_stop() {
        let mut c = StreamCheck::new(Protocol::Anthropic);
        for (e, d) in [
            (
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
            ),
        ] {
            c.observe(&ev(Some(e), d)).unwrap();
        }
        assert!(!c.complete());
        c.observe(&ev(Some("message_stop"), r#"{"type":"message_stop"}"#))
            .unwrap();
        assert!(c.complete());
        assert_eq!(
            c.usage(),
            Some(Usage {
                input_tokens: 5,
                output_tokens: 7
            })
        );
    }

    #[test]
    fn malformed_data_and_error_events() {
        for proto in [Protocol::Openai, Protocol::Anthropic] {
            let mut c = StreamCheck::new(proto);
            assert_eq!(
                c.observe(&ev(None, r#"{"choices":[{"delta":"#)),
                Err(StreamFault::Malformed)
            );
            assert_eq!(
                c.observe(&ev(None, "not json")),
                Err(StreamFault::Malformed)
            );
        }
        // A JSON value that is not an event object is malformed too.
        let mut c = StreamCheck::new(Protocol::Anthropic);
        assert_eq!(c.observe(&ev(None, "[1,2]")), Err(StreamFault::Malformed));
        c.observe(&ev(
            Some("error"),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
        ))
        .unwrap();
        assert!(c.errored() && c.complete());
        let mut c = StreamCheck::new(Protocol::Openai);
        c.observe(&ev(None, r#"{"error":{"message":"boom"}}"#))
            .unwrap();
        assert!(c.errored() && c.complete());
    }
}
