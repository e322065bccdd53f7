//! Request bodies the mock understands (only the fields it uses), and facts derived from them.

use std::borrow::Cow;
use std::fmt;

use http::{Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::body::{MockBody, error};
use crate::protocol::Protocol;

/// A request the mock refuses with 400; becomes the protocol's error JSON.
pub(crate) struct BadRequest(pub String);

impl BadRequest {
    pub fn into_response(self, protocol: Protocol) -> Response<MockBody> {
        error(protocol, StatusCode::BAD_REQUEST, &self.0)
    }
}

/// Parse a JSON request body.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "We could not parse the JSON body of your request: {e}"
        ))
    })
}

/// A chat request, OpenAI Chat Completions or Anthropic Messages (fields of both).
#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    pub model: String,
    pub messages: Option<Vec<Message>>,
    /// Anthropic's top-level system prompt.
    #[serde(default)]
    pub system: Content,
    pub stream: Option<bool>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub stop: Option<Stop>,
    pub stop_sequences: Option<Vec<String>>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<Value>,
    pub stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
pub(crate) struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Content,
}

#[derive(Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    User,
    Tool,
    Function,
    #[serde(other)]
    Other,
}

/// Message content: a string, an array of parts, or absent/null.
#[derive(Default)]
pub(crate) enum Content {
    #[default]
    Empty,
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
pub(crate) struct Part {
    #[serde(rename = "type", default)]
    pub kind: PartKind,
    pub text: Option<String>,
    /// Anthropic `tool_result` content.
    #[serde(default)]
    pub content: Content,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PartKind {
    Text,
    ToolResult,
    #[default]
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// OpenAI `{"type":"function","function":{"name":..}}` or Anthropic `{"name":..}`.
#[derive(Deserialize)]
pub(crate) struct Tool {
    pub name: Option<String>,
    pub function: Option<FunctionDef>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionDef {
    pub name: String,
}

#[derive(Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

impl ChatRequest {
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn messages(&self) -> &[Message] {
        self.messages.as_deref().unwrap_or_default()
    }

    /// The request's output cap, if any.
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// Stop sequences, from `stop` (OpenAI) or `stop_sequences` (Anthropic).
    pub fn stops(&self) -> &[String] {
        match (&self.stop, &self.stop_sequences) {
            (Some(Stop::One(s)), _) => std::slice::from_ref(s),
            (Some(Stop::Many(v)), _) => v,
            (None, Some(v)) => v,
            (None, None) => &[],
        }
    }

    /// Prompt tokens: ceil(chars of all system and message text / 4), at least 1.
    pub fn prompt_tokens(&self) -> u32 {
        let chars = self.system.chars()
            + self
                .messages()
                .iter()
                .map(|m| m.content.chars())
                .sum::<usize>();
        tokens_for_chars(chars)
    }

    /// Text of the last user message (string content or text parts).
    pub fn last_user_text(&self) -> Cow<'_, str> {
        self.messages()
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.text())
            .unwrap_or_default()
    }

    /// The tool to call, if this request should be answered with a tool call: tools are
    /// offered, not disabled by `tool_choice`, and the last message is a plain user message.
    pub fn tool_to_call(&self) -> Option<&str> {
        let first = self.tools.as_deref()?.first()?;
        let last = self.messages().last()?;
        if last.role != Role::User || last.content.has_tool_result() {
            return None;
        }
        let mut name = first.name();
        match &self.tool_choice {
            Some(Value::String(s)) if s == "none" => return None,
            Some(Value::Object(o)) => {
                if o.get("type").and_then(Value::as_str) == Some("none") {
                    return None;
                }
                let chosen = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .or_else(|| o.get("name"))
                    .and_then(Value::as_str);
                name = chosen.or(name);
            }
            _ => {}
        }
        name
    }
}

impl Tool {
    fn name(&self) -> Option<&str> {
        self.function
            .as_ref()
            .map(|f| f.name.as_str())
            .or(self.name.as_deref())
    }
}

impl Content {
    /// Chars of all text, tool results included.
    pub fn chars(&self) -> usize {
        match self {
            Content::Empty => 0,
            Content::Text(s) => s.chars().count(),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| p.text.as_deref().map_or(0, |t| t.chars().count()) + p.content.chars())
                .sum(),
        }
    }

    /// The string content, or the text parts joined by spaces.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Empty => Cow::Borrowed(""),
            Content::Text(s) => Cow::Borrowed(s),
            Content::Parts(parts) => {
                let mut texts = parts
                    .iter()
                    .filter(|p| p.kind == PartKind::Text)
                    .filter_map(|p| p.text.as_deref());
                let Some(first) = texts.next() else {
                    return Cow::Borrowed("");
                };
                match texts.next() {
                    None => Cow::Borrowed(first),
                    Some(second) => {
                        let mut joined = format!("{first} {second}");
                        for t in texts {
                            joined.push(' ');
                            joined.push_str(t);
                        }
                        Cow::Owned(joined)
                    }
                }
            }
        }
    }

    fn has_tool_result(&self) -> bool {
        matches!(self, Content::Parts(p) if p.iter().any(|p| p.kind == PartKind::ToolResult))
    }
}

/// ceil(chars / 4), at least 1.
pub(crate) fn tokens_for_chars(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX).max(1)
}

/// At most `max` chars of `s`.
pub(crate) fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array of content parts, or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Content, E> {
                Ok(Content::Empty)
            }
            fn visit_none<E: de::Error>(self) -> Result<Content, E> {
                Ok(Content::Empty)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(Content::Parts(parts))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Content, A::Error> {
                // A single part object (some clients send one block instead of a list).
                let part = Part::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Content::Parts(vec![part]))
            }
        }
        d.deserialize_any(ContentVisitor)
    }
}
