//! The request scan's short way: a body of plain, usual JSON read in one validating walk
//! (`protocol::Walk`), without serde's visitors. Anything unusual (an escaped key, model or media
//! type, the affinity field, nesting deeper than the walk goes) answers `None`, and the serde scan in
//! `scan.rs` reads the body as before and decides.

use super::estimate::{MEDIA_TYPES, SKIP_KEYS, Tally};
use super::scan::{Fields, Key};
use crate::protocol::{Walk, plain_string};
use serde_json::Value;

/// The scan of `raw` when it is a plain object that needs no decision of serde's. As in the serde
/// scan, the last of a repeated top-level key counts.
pub(super) fn walked(raw: &[u8], affinity_field: Option<&str>) -> Option<Fields> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut w = Walk::new(text);
    let mut out = Fields::default();
    let whole = w.object(&mut |w, key| {
        if Some(key) == affinity_field {
            return false;
        }
        let key = Key::of(key);
        if let Key::Text(i) = key {
            let mut t = Tally::default();
            let whole = tally(w, &mut t);
            out.text[i] = t;
            return whole;
        }
        let Some(value) = w.value() else {
            return false;
        };
        match key {
            Key::Model if value.starts_with('"') => match plain_string(value) {
                Some(m) => out.scan.model = Some(m).filter(|m| !m.is_empty()).map(str::to_string),
                None => return false,
            },
            Key::Model => out.scan.model = None,
            Key::Stream => out.scan.stream = value == "true",
            Key::MaxCompletionTokens => out.max_completion_tokens = value.parse().ok(),
            Key::MaxOutputTokens => out.max_output_tokens = value.parse().ok(),
            Key::MaxTokens => out.max_tokens = value.parse().ok(),
            // Rare and small: the same tree the serde scan reads them from.
            Key::StreamOptions | Key::Tools(_) => match serde_json::from_str::<Value>(value) {
                Ok(v) => out.apply(key, &v),
                Err(_) => return false,
            },
            Key::Text(_) | Key::Other => {}
        }
        true
    });
    (whole && w.ended()).then_some(out)
}

/// Walks the value `w` is at, counting its prompt text as the serde scan's `TallySeed` does: every
/// string, but in an object only the members not in `SKIP_KEYS`, and an object whose (last) `type`
/// names a media part counts as one medium instead.
fn tally(w: &mut Walk<'_>, t: &mut Tally) -> bool {
    match w.peek() {
        Some(b'"') => match w.value() {
            Some(s) => {
                t.chars += unescaped_chars(&s[1..s.len() - 1]);
                true
            }
            None => false,
        },
        Some(b'[') => w.array(&mut |w| tally(w, t)),
        Some(b'{') => {
            let (mut inner, mut media) = (Tally::default(), false);
            let whole = w.object(&mut |w, key| {
                if key == "type" {
                    let Some(v) = w.value() else {
                        return false;
                    };
                    media = match v.starts_with('"') {
                        true => match plain_string(v) {
                            Some(kind) => MEDIA_TYPES.contains(&kind),
                            None => return false,
                        },
                        false => false,
                    };
                    true
                } else if SKIP_KEYS.contains(&key) {
                    w.skip()
                } else {
                    tally(w, &mut inner)
                }
            });
            if media {
                t.media += 1;
            } else {
                t.chars += inner.chars;
                t.media += inner.media;
            }
            whole
        }
        _ => w.skip(),
    }
}

/// The characters of a validated JSON string's text (between its quotes) once unescaped: each
/// escape is one character, a `\u` surrogate pair too.
fn unescaped_chars(inner: &str) -> u64 {
    let b = inner.as_bytes();
    if !b.contains(&b'\\') {
        return inner.chars().count() as u64;
    }
    let (mut n, mut i) = (0u64, 0);
    while i < b.len() {
        match b[i] {
            b'\\' if b[i + 1] == b'u' => {
                // The walk checked that a high surrogate is followed by its low half.
                let high = matches!(
                    u16::from_str_radix(&inner[i + 2..i + 6], 16),
                    Ok(0xD800..=0xDBFF)
                );
                i += if high { 12 } else { 6 };
                n += 1;
            }
            b'\\' => {
                i += 2;
                n += 1;
            }
            byte => {
                // A character starts at every byte that does not continue one.
                n += u64::from(byte & 0xC0 != 0x80);
                i += 1;
            }
        }
    }
    n
}
