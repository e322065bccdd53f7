//! Response ids that say which backend holds the response, so a follow-up with
//! `previous_response_id` reaches it from any node: the id a backend serving the Responses API
//! gives is handed to the client as `{id}--sl{tag}`, the tag naming the backend (eight hex digits
//! of a stable hash of its name, the same on every node of the same config). A follow-up's id is
//! split back into the backend's own id and the tag that pins the call.

use bytes::Bytes;
use serde::Deserialize;

use super::sse::{SseEvent, encode_sse};
use super::usage::Usage;

/// Between a backend's response id and the tag of the backend that holds it.
const MARK: &str = "--sl";
/// Hex digits of a tag.
const TAG_LEN: usize = 8;

/// `id` split into the backend's own id and the holding backend's tag, when it carries one.
pub fn split_response_id(id: &str) -> (&str, Option<&str>) {
    match id.rsplit_once(MARK) {
        Some((bare, tag))
            if !bare.is_empty()
                && tag.len() == TAG_LEN
                && tag.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            (bare, Some(tag))
        }
        _ => (id, None),
    }
}

/// The id the client sees for the backend's `id`.
fn tagged(id: &str, tag: &str) -> String {
    format!("{id}{MARK}{tag}")
}

#[derive(Deserialize, Default)]
struct Ids {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    previous_response_id: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    response: Option<Ids>,
}

/// `"id"` → `"id--slTAG"` for each response id (itself and its predecessor), quoted so that only
/// whole JSON strings are replaced.
fn replacements(ids: &Ids, tag: &str) -> Vec<(String, String)> {
    [&ids.id, &ids.previous_response_id]
        .into_iter()
        .flatten()
        .filter(|id| !id.is_empty() && split_response_id(id).1.is_none())
        .map(|id| (format!("\"{id}\""), format!("\"{}\"", tagged(id, tag))))
        .collect()
}

fn replace_all(text: &[u8], pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = text.to_vec();
    for (from, to) in pairs {
        let mut next = Vec::with_capacity(out.len() + to.len());
        let mut rest: &[u8] = &out;
        while let Some(i) = memchr::memmem::find(rest, from.as_bytes()) {
            next.extend_from_slice(&rest[..i]);
            next.extend_from_slice(to.as_bytes());
            rest = &rest[i + from.len()..];
        }
        next.extend_from_slice(rest);
        out = next;
    }
    out
}

/// A whole Responses body with its response ids tagged (as it is when it has none).
pub fn tag_response_ids(body: Bytes, tag: &str) -> Bytes {
    let Ok(ids) = serde_json::from_slice::<Ids>(&body) else {
        return body;
    };
    let pairs = replacements(&ids, tag);
    if pairs.is_empty() {
        return body;
    }
    Bytes::from(replace_all(&body, &pairs))
}

/// A passed-through Responses stream with its response ids tagged in the events that carry the
/// `response` object; the ids are learnt from the first of them (`response.created`).
pub struct TagResponseIds {
    tag: String,
    pairs: Vec<(String, String)>,
}

impl TagResponseIds {
    pub fn new(tag: &str) -> Self {
        TagResponseIds {
            tag: tag.to_string(),
            pairs: Vec::new(),
        }
    }
}

impl super::StreamTransform for TagResponseIds {
    /// Only events that carry the `response` object hold its id (deltas are left alone).
    fn push(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        if !ev.data.contains("\"response\":") {
            return vec![encode_sse(ev.event.as_deref(), &ev.data)];
        }
        if self.pairs.is_empty()
            && let Ok(Event {
                response: Some(ids),
            }) = serde_json::from_str::<Event>(&ev.data)
        {
            self.pairs = replacements(&ids, &self.tag);
        }
        let data = replace_all(ev.data.as_bytes(), &self.pairs);
        vec![encode_sse(
            ev.event.as_deref(),
            &String::from_utf8_lossy(&data),
        )]
    }
    fn finish(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
    /// The stream check reads the usage of the untouched upstream events.
    fn usage(&self) -> Option<Usage> {
        None
    }
}

/// The tag Sluice appends to the ids of responses backend `name` holds (see `split_response_id`):
/// eight hex digits of a stable hash of its name, the same on every node.
pub fn response_tag(name: &str) -> String {
    format!("{:08x}", crate::hash::stable_hash(name.as_bytes()) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::StreamTransform;

    #[test]
    fn ids_are_tagged_and_split_back() {
        let body = Bytes::from_static(
            br#"{"id":"resp_1","previous_response_id":"resp_0","output":[{"id":"msg_1","text":"resp_1 is \"resp_1\""}]}"#,
        );
        let out = tag_response_ids(body, "0a1b2c3d");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "resp_1--sl0a1b2c3d");
        assert_eq!(v["previous_response_id"], "resp_0--sl0a1b2c3d");
        assert_eq!(v["output"][0]["id"], "msg_1");
        assert_eq!(
            split_response_id("resp_1--sl0a1b2c3d"),
            ("resp_1", Some("0a1b2c3d"))
        );
        assert_eq!(split_response_id("resp_1--slxyz"), ("resp_1--slxyz", None));
        assert_eq!(split_response_id("resp_1"), ("resp_1", None));
        // An id already tagged (a follow-up's predecessor, sent back tagged) stays as it is.
        let body = Bytes::from_static(br#"{"id":"resp_2--sl0a1b2c3d"}"#);
        assert_eq!(tag_response_ids(body.clone(), "0a1b2c3d"), body);
    }

    #[test]
    fn stream_events_are_tagged_from_the_first_response_object() {
        let mut t = TagResponseIds::new("00000001");
        let ev = |data: &str| SseEvent {
            event: Some("x".into()),
            data: data.into(),
        };
        let first = t.push(&ev(
            r#"{"type":"response.created","response":{"id":"resp_9"}}"#,
        ));
        assert_eq!(
            &first[0][..],
            b"event: x\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_9--sl00000001\"}}\n\n"
        );
        let delta = t.push(&ev(
            r#"{"type":"response.output_text.delta","delta":"resp_9"}"#,
        ));
        assert!(String::from_utf8_lossy(&delta[0]).contains("\"delta\":\"resp_9\""));
    }

    #[test]
    fn a_backend_tag_is_eight_hex_digits() {
        let t = super::response_tag("ra");
        assert_eq!(t.len(), 8);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(t, super::response_tag("ra"));
    }
}
