//! One pass over a raw request body for what admission and routing need (model, stream flags, token
//! estimate, an affinity field) without building a JSON tree: most requests are passed through as
//! the bytes they came in, so the tree is only built later, when a translation or rewrite needs it.
//!
//! The results equal those of the tree-based helpers in `estimate.rs` (kept as the reference) on the
//! same body; the tests hold the two side by side. Plain bodies are read by the validating walk in
//! `scan_walk.rs`; the serde scan here reads the rest, and is the judge the walk is tested against.

use super::estimate::{CHARS_PER_TOKEN, MEDIA_TOKENS, MEDIA_TYPES, SKIP_KEYS, Tally};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// What the pipeline reads from a request body before choosing a backend.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestScan {
    /// `model`, when it is a non-empty string.
    pub model: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage == true`.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_output_tokens` (Responses), else `max_tokens` (the first
    /// that is an unsigned integer).
    pub max_tokens: Option<u64>,
    /// Estimated prompt tokens; at least 1.
    pub prompt_tokens: u64,
    /// The affinity field's value: a string as is, any other non-null value as its JSON text.
    pub affinity: Option<String>,
}

/// Why a body cannot be scanned. The message is the JSON parser's, or says the body is not an object.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScanError(pub String);

/// Deepest nesting of arrays and objects accepted, as serde_json allows when it builds a tree: a
/// body passed through untouched is held to the same limit as one that is translated.
const MAX_DEPTH: usize = 128;

/// Whether no array or object in `raw` is nested deeper than `max` (strings are skipped).
fn nesting_within(raw: &[u8], max: usize) -> bool {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in raw {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Scan `raw` (a JSON object); `affinity_field` is the top-level field whose value pins a session.
pub fn scan_request(raw: &[u8], affinity_field: Option<&str>) -> Result<RequestScan, ScanError> {
    match super::scan_walk::walked(raw, affinity_field) {
        Some(fields) => Ok(fields.finish()),
        None => scanned(raw, affinity_field),
    }
}

/// The serde scan: any body, and what it says of one that is not valid.
pub(super) fn scanned(raw: &[u8], affinity_field: Option<&str>) -> Result<RequestScan, ScanError> {
    let starts_object = raw
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !starts_object {
        // Not an object: let the parser name the syntax error, if there is one.
        return Err(match serde_json::from_slice::<Value>(raw) {
            Err(e) => ScanError(e.to_string()),
            Ok(_) => ScanError("expected a json object".into()),
        });
    }
    if !nesting_within(raw, MAX_DEPTH) {
        return Err(ScanError(format!(
            "json nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(raw);
    let top = Top {
        affinity_field,
        out: Fields::default(),
    };
    let fields = top
        .deserialize(&mut de)
        .and_then(|f| de.end().map(|_| f))
        .map_err(|e| ScanError(e.to_string()))?;
    Ok(fields.finish())
}

#[derive(Default)]
pub(super) struct Fields {
    pub(super) scan: RequestScan,
    pub(super) max_completion_tokens: Option<u64>,
    pub(super) max_output_tokens: Option<u64>,
    pub(super) max_tokens: Option<u64>,
    /// `messages`, `system`, `prompt`, `input`, `instructions`: the last occurrence of each key
    /// counts, as in a map.
    pub(super) text: [Tally; 5],
    /// `tools`, `functions`: characters of their compact JSON.
    tools: [u64; 2],
}

impl Fields {
    pub(super) fn finish(mut self) -> RequestScan {
        let mut tally = Tally::default();
        for t in &self.text {
            tally.chars += t.chars;
            tally.media += t.media;
        }
        tally.chars += self.tools.iter().sum::<u64>();
        let text = tally.chars.div_ceil(CHARS_PER_TOKEN);
        self.scan.prompt_tokens = (text + tally.media * MEDIA_TOKENS).max(1);
        self.scan.max_tokens = self
            .max_completion_tokens
            .or(self.max_output_tokens)
            .or(self.max_tokens);
        self.scan
    }

    /// A known top-level field, given as a tree (small fields, or one that is also the affinity field).
    pub(super) fn apply(&mut self, key: Key, v: &Value) {
        match key {
            Key::Model => {
                self.scan.model = v.as_str().filter(|m| !m.is_empty()).map(str::to_string)
            }
            Key::Stream => self.scan.stream = v.as_bool().unwrap_or(false),
            Key::StreamOptions => {
                self.scan.include_usage =
                    v.get("include_usage").and_then(Value::as_bool) == Some(true)
            }
            Key::MaxCompletionTokens => self.max_completion_tokens = v.as_u64(),
            Key::MaxOutputTokens => self.max_output_tokens = v.as_u64(),
            Key::MaxTokens => self.max_tokens = v.as_u64(),
            Key::Text(i) => {
                let mut t = Tally::default();
                t.walk(v);
                self.text[i] = t;
            }
            Key::Tools(i) => {
                self.tools[i] = if v.is_null() {
                    0
                } else {
                    v.to_string().chars().count() as u64
                }
            }
            Key::Other => {}
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Key {
    Model,
    Stream,
    StreamOptions,
    MaxCompletionTokens,
    MaxOutputTokens,
    MaxTokens,
    Text(usize),
    Tools(usize),
    Other,
}

impl Key {
    pub(super) fn of(k: &str) -> Key {
        match k {
            "model" => Key::Model,
            "stream" => Key::Stream,
            "stream_options" => Key::StreamOptions,
            "max_completion_tokens" => Key::MaxCompletionTokens,
            "max_output_tokens" => Key::MaxOutputTokens,
            "max_tokens" => Key::MaxTokens,
            "messages" => Key::Text(0),
            "system" => Key::Text(1),
            "prompt" => Key::Text(2),
            "input" => Key::Text(3),
            "instructions" => Key::Text(4),
            "tools" => Key::Tools(0),
            "functions" => Key::Tools(1),
            _ => Key::Other,
        }
    }
}

/// A map key, classified without allocating (borrowed or not).
struct KeySeed<F>(F);

impl<'de, F: FnOnce(&str) -> R, R> DeserializeSeed<'de> for KeySeed<F> {
    type Value = R;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<R, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, F: FnOnce(&str) -> R, R> Visitor<'de> for KeySeed<F> {
    type Value = R;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, v: &str) -> Result<R, E> {
        Ok((self.0)(v))
    }
}

struct Top<'a> {
    affinity_field: Option<&'a str>,
    out: Fields,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Fields;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Fields;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a json object")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Fields, A::Error> {
        let field = self.affinity_field;
        while let Some((key, is_affinity)) =
            map.next_key_seed(KeySeed(|k: &str| (Key::of(k), Some(k) == field)))?
        {
            if is_affinity {
                let v: Value = map.next_value()?;
                self.out.scan.affinity = match &v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                };
                self.out.apply(key, &v);
                continue;
            }
            match key {
                Key::Text(i) => {
                    let mut t = Tally::default();
                    map.next_value_seed(TallySeed(&mut t))?;
                    self.out.text[i] = t;
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    let v: Value = map.next_value()?;
                    self.out.apply(key, &v);
                }
            }
        }
        Ok(self.out)
    }
}

/// Counts prompt text like [`Tally::walk`], straight from the parser.
struct TallySeed<'t>(&'t mut Tally);

impl<'de> DeserializeSeed<'de> for TallySeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TallySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any json value")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.chars += v.chars().count() as u64;
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(TallySeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
    /// An object's text counts unless its `type` names a media part, which counts as one medium
    /// instead (whatever comes first in the object).
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut inner = Tally::default();
        let mut media = false;
        while let Some((is_type, skip)) =
            map.next_key_seed(KeySeed(|k: &str| (k == "type", SKIP_KEYS.contains(&k))))?
        {
            if is_type {
                media = map.next_value_seed(MediaType)?;
            } else if skip {
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(TallySeed(&mut inner))?;
            }
        }
        if media {
            self.0.media += 1;
        } else {
            self.0.chars += inner.chars;
            self.0.media += inner.media;
        }
        Ok(())
    }
}

/// Whether a `type` value names a media part.
struct MediaType;

impl<'de> DeserializeSeed<'de> for MediaType {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MediaType {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any json value")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(MEDIA_TYPES.contains(&v))
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}
