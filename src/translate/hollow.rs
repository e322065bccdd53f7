//! Large non-streamed answers translated at about 1× their size. The long `text` / `content` string
//! values of an upstream body (the answer itself) are cut out before it is parsed, each replaced
//! by a short placeholder; the translators work on that small skeleton as on any body, and the
//! translated skeleton is then filled back with zero-copy slices of the upstream body. A JSON string
//! literal's raw content is valid as it stands inside another string literal, so nothing is
//! re-escaped, and no second copy of the answer (tree, translated tree, serialised output) is made.

use bytes::Bytes;
use std::ops::Range;

/// Shorter strings stay in the skeleton: not worth a hole.
const HOLE_MIN: usize = 64 * 1024;

/// An upstream body with its long answer strings cut out.
#[derive(Debug)]
pub struct Hollowed {
    /// The body with each hole's content replaced by its placeholder: what is parsed.
    pub skeleton: Vec<u8>,
    /// Where each hole's raw string content stands in the upstream body.
    holes: Vec<Range<usize>>,
    /// Placeholder prefix as serde_json writes it: `\u0000sluice-hole-<nonce>-`.
    mark: String,
}

/// Keys whose long string values are the answer text, never read by the translators.
fn is_text_key(key: &[u8]) -> bool {
    key == b"text" || key == b"content"
}

/// Cut the long `text` / `content` string values out of `body`; None when there are none (or the
/// body is not well-formed enough to scan: the parser then reports it as usual).
pub fn hollow(body: &[u8]) -> Option<Hollowed> {
    let mut holes = Vec::new();
    let mut last_key: &[u8] = b"";
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', body.get(i..)?) {
        let start = i + q + 1;
        let mut j = start;
        let end = loop {
            let k = memchr::memchr2(b'"', b'\\', body.get(j..)?)?;
            if body[j + k] == b'"' {
                break j + k;
            }
            j += k + 2;
        };
        let next = body[end + 1..].iter().find(|b| !b.is_ascii_whitespace());
        if next == Some(&b':') {
            last_key = &body[start..end];
        } else if end - start >= HOLE_MIN && is_text_key(last_key) {
            holes.push(start..end);
        }
        i = end + 1;
    }
    if holes.is_empty() {
        return None;
    }
    let mark = format!("\\u0000sluice-hole-{:016x}-", rand::random::<u64>());
    let mut skeleton = Vec::with_capacity(
        body.len() - holes.iter().map(|h| h.len()).sum::<usize>() + holes.len() * 64,
    );
    let mut at = 0;
    for (n, h) in holes.iter().enumerate() {
        skeleton.extend_from_slice(&body[at..h.start]);
        skeleton.extend_from_slice(mark.as_bytes());
        skeleton.extend_from_slice(format!("{n}\\u0000").as_bytes());
        at = h.end;
    }
    skeleton.extend_from_slice(&body[at..]);
    Some(Hollowed {
        skeleton,
        holes,
        mark,
    })
}

impl Hollowed {
    /// The translated skeleton `out` (serialised) with every placeholder replaced by its hole's
    /// content, as slices of `body`: the pieces of the response body, in order.
    pub fn fill(&self, body: &Bytes, out: Bytes) -> Vec<Bytes> {
        let mut pieces = Vec::with_capacity(2 * self.holes.len() + 1);
        let finder = memchr::memmem::Finder::new(self.mark.as_bytes());
        let mut at = 0;
        while let Some(p) = finder.find(&out[at..]) {
            let digits = at + p + self.mark.len();
            let len = out[digits..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let hole = std::str::from_utf8(&out[digits..digits + len])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .and_then(|n| self.holes.get(n));
            let close = digits + len + b"\\u0000".len();
            match hole {
                Some(h) if out.get(digits + len..close) == Some(b"\\u0000".as_slice()) => {
                    pieces.push(out.slice(at..at + p));
                    pieces.push(body.slice(h.clone()));
                    at = close;
                }
                // Not a placeholder of ours after all: leave it as it is.
                _ => {
                    pieces.push(out.slice(at..digits));
                    at = digits;
                }
            }
        }
        pieces.push(out.slice(at..));
        pieces.retain(|b| !b.is_empty());
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_answer_strings_are_cut_out_and_filled_back_unchanged() {
        let long = "a\\\"b\\n\u{e9}".repeat(HOLE_MIN / 4);
        let body = format!(
            r#"{{"content":[{{"type":"text","text":"{long}"}},{{"type":"text", "text" : "short"}}],"id":"{long}"}}"#
        );
        let h = hollow(body.as_bytes()).expect("a hole");
        assert_eq!(h.holes.len(), 1, "only text / content values");
        assert!(
            h.skeleton.len() < long.len() + 400,
            "the id stays, the text goes"
        );
        let v: serde_json::Value = serde_json::from_slice(&h.skeleton).unwrap();
        // A translator concatenating text: the placeholder travels inside other text.
        let text = format!("x{}y", v["content"][0]["text"].as_str().unwrap());
        let out = Bytes::from(serde_json::json!({"message": {"content": text}}).to_string());
        let body = Bytes::from(body);
        let whole: Vec<u8> = h.fill(&body, out).concat();
        let back: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        let want: serde_json::Value = serde_json::from_str(&format!(r#""{long}""#)).unwrap();
        assert_eq!(
            back["message"]["content"],
            format!("x{}y", want.as_str().unwrap())
        );
    }

    #[test]
    fn short_or_broken_bodies_are_left_to_the_parser() {
        assert!(hollow(br#"{"text":"short"}"#).is_none());
        assert!(hollow(b"{\"text\":\"unterminated").is_none());
        assert!(hollow(b"{\"text\":\"ends in a backslash\\").is_none());
    }
}
