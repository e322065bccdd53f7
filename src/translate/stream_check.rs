//! Stream integrity: whether an upstream SSE stream is complete, malformed or cut short, read with
//! as little parsing as that needs. Every event's data is validated as JSON without building a tree:
//! an OpenAI chunk's few fields are read in the validating walk ([`crate::protocol::Walk`]), with serde
//! as the judge of anything unusual; other events go through serde, which skips what it does not
//! need. Only the few events that carry `usage` are parsed for it.
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

/// What the check reads of an OpenAI chunk.
#[derive(Debug, Default, PartialEq)]
struct ChatFacts<'a> {
    model: Option<std::borrow::Cow<'a, str>>,
    /// The label of the first choice's non-null `finish_reason`.
    finish: Option<&'static str>,
    /// A non-null `error`.
    error: bool,
    /// A non-null `usage`.
    usage: bool,
}

impl<'a> From<OpenAiChunk<'a>> for ChatFacts<'a> {
    fn from(c: OpenAiChunk<'a>) -> Self {
        ChatFacts {
            model: c.model,
            finish: c.choices.and_then(|c| c.0),
            error: c.error.is_some(),
            usage: c.usage.is_some(),
        }
    }
}

impl<'a> ChatFacts<'a> {
    /// The facts read in one validating walk over the chunk, without a parser's visitors (this
    /// runs on every chunk of every OpenAI stream). `None` when anything is unusual (a repeated
    /// field, an escape in a key or in a string read here, a value of another type than the API
    /// sends, deep nesting): serde then reads the chunk as before, and decides.
    fn read(data: &'a str) -> Option<ChatFacts<'a>> {
        let mut facts = ChatFacts::default();
        let mut seen = [false; 4];
        let mut w = crate::protocol::Walk::new(data);
        let whole = w.object(&mut |w, key| {
            let field = match key {
                "model" => 0,
                "choices" => 1,
                "error" => 2,
                "usage" => 3,
                _ => return w.skip(),
            };
            if std::mem::replace(&mut seen[field], true) {
                return false;
            }
            if field == 1 && w.peek() == Some(b'[') {
                return first_finish(w).map(|f| facts.finish = f).is_some();
            }
            let Some(value) = w.value() else {
                return false;
            };
            let null = value == "null";
            match field {
                0 if !null => match crate::protocol::plain_string(value) {
                    Some(m) => facts.model = Some(std::borrow::Cow::Borrowed(m)),
                    None => return false,
                },
                // `choices` that is neither an array nor null.
                1 if !null => return false,
                2 => facts.error = !null,
                3 => facts.usage = !null,
                _ => {}
            }
            true
        });
        (whole && w.ended()).then_some(facts)
    }
}

/// Walks `choices` (the walk is at its `[`): the label of the first choice's non-null
/// `finish_reason` (`Some(None)`: none has one); `None` when a choice is not an object, repeats the
/// field or holds another type than a string.
fn first_finish(w: &mut crate::protocol::Walk<'_>) -> Option<Option<&'static str>> {
    let mut first = None;
    let whole = w.array(&mut |w| {
        let (mut reason, mut seen) = (None, false);
        let whole = w.object(&mut |w, key| {
            if key != "finish_reason" {
                return w.skip();
            }
            let Some(value) = w.value() else {
                return false;
            };
            if std::mem::replace(&mut seen, true) {
                return false;
            }
            if value != "null" {
                match crate::protocol::plain_string(value) {
                    Some(r) => reason = Some(r),
                    None => return false,
                }
            }
            true
        });
        if first.is_none() {
            first = reason.map(|r| finish_label(Some(r)));
        }
        whole
    });
    whole.then_some(first)
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
                let facts = match ChatFacts::read(data) {
                    Some(f) => f,
                    None => serde_json::from_str::<OpenAiChunk>(data)
                        .map_err(|_| StreamFault::Malformed)?
                        .into(),
                };
                if facts.error {
                    self.errored = true;
                }
                if self.keep_model
                    && self.model.is_none()
                    && let Some(m) = facts.model.filter(|m| !m.is_empty())
                {
                    self.model = Some(m.into_owned());
                }
                if let Some(reason) = facts.finish {
                    self.finished = true;
                    self.finish_reason.get_or_insert(reason);
                }
                if facts.usage {
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

    /// Whatever the members' reading returns, serde returns too (it is only a faster way to the
    /// same facts); where it gives up, serde decides. Checked on API-shaped chunks, unusual ones,
    /// and every single-byte change and cut of them.
    #[test]
    fn the_fast_reading_of_a_chunk_never_disagrees_with_serde() {
        let chunks = [
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi \"there\" \u00e9"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"c","model":"m","choices":[{"index":1,"finish_reason":null},{"index":0,"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
            r#"{"choices":null,"model":null,"error":null}"#,
            r#"{"choices":[{"finish_reason":"weird"}],"model":""}"#,
            r#" { "model" : "m" , "choices" : [ { "finish_reason" : "length" } ] } "#,
            r#"{"model":"m","model":"n"}"#,
            r#"{"choices":[{"finish_reason":"stop","finish_reason":null}]}"#,
            r#"{"choices":[["stop"]]}"#,
            r#"{"choices":[{"finish_reason":5}]}"#,
            r#"{"choices":{"finish_reason":"stop"}}"#,
            r#"{"model":7}"#,
            r#"{"mod\u0065l":"m"}"#,
            r#"{"model":"\u0041"}"#,
            r#"[null,[{"finish_reason":"stop"}],null,null]"#,
        ];
        fn serde(d: &str) -> Option<ChatFacts<'_>> {
            serde_json::from_str::<OpenAiChunk>(d)
                .ok()
                .map(ChatFacts::from)
        }
        let mut fast_read = 0;
        for c in chunks {
            if let Some(f) = ChatFacts::read(c) {
                assert_eq!(Some(f), serde(c), "{c}");
            }
            for m in
                crate::protocol::mutations(c.as_bytes()).filter_map(|m| String::from_utf8(m).ok())
            {
                if let Some(f) = ChatFacts::read(&m) {
                    fast_read += 1;
                    assert_eq!(Some(f), serde(&m), "{m}");
                }
            }
        }
        // The usual chunks are read fast; the mutations exercise it thousands of times.
        assert!(ChatFacts::read(chunks[0]).is_some() && ChatFacts::read(chunks[7]).is_some());
        assert!(fast_read > 1000, "{fast_read}");
    }

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
