//! `usage` of a whole (non-streamed) OpenAI or Anthropic body, scanned without a JSON tree.

use super::{Usage, usage_from_object};
use serde_json::Value;

/// `usage` of an OpenAI or Anthropic body without building a tree of the whole body: only the object
/// after its last `"usage"` key is parsed (both APIs put it last, at the top level; inside a JSON string
/// the quotes would be escaped, so the match is a key). Same result as [`usage_from_body`].
pub fn scan_usage(body: &[u8]) -> Option<Usage> {
    let at = memchr::memmem::rfind(body, b"\"usage\"")?;
    let rest = body[at + 7..].trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start();
    if rest.first() != Some(&b'{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(rest);
    match serde::Deserialize::deserialize(&mut de) {
        Ok(fields) => UsageFields::usage(fields),
        // Anything unusual (a duplicate key, say): the tree decides.
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(rest);
            let v: Value = serde::Deserialize::deserialize(&mut de).ok()?;
            usage_from_object(&v)
        }
    }
}

/// The `usage` fields either API uses, read without building a tree; a field counts as present even
/// when null, as in [`usage_from_object`].
#[derive(serde::Deserialize)]
struct UsageFields {
    #[serde(default, deserialize_with = "present")]
    prompt_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    completion_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    input_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    output_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cache_read_input_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cache_creation_input_tokens: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

impl UsageFields {
    fn usage(self) -> Option<Usage> {
        let num = |v: &Option<Value>| v.as_ref().and_then(Value::as_u64).unwrap_or(0);
        if self.prompt_tokens.is_some() || self.completion_tokens.is_some() {
            return Some(Usage {
                input_tokens: num(&self.prompt_tokens),
                output_tokens: num(&self.completion_tokens),
            });
        }
        if self.input_tokens.is_some() || self.output_tokens.is_some() {
            return Some(Usage {
                input_tokens: num(&self.input_tokens)
                    + num(&self.cache_read_input_tokens)
                    + num(&self.cache_creation_input_tokens),
                output_tokens: num(&self.output_tokens),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::scan_usage;
    use crate::translate::{Usage, usage_from_body};

    fn both(raw: &str) -> (Option<Usage>, Option<Usage>) {
        let tree = serde_json::from_str(raw).ok();
        (
            scan_usage(raw.as_bytes()),
            tree.as_ref().and_then(usage_from_body),
        )
    }

    #[test]
    fn scanned_usage_equals_the_tree_usage() {
        for raw in [
            r#"{"id":"c","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
            r#"{"usage" : {"input_tokens":5,"output_tokens":7,"cache_read_input_tokens":2,"cache_creation_input_tokens":1},"content":[{"type":"text","text":"x"}]}"#,
            r#"{"choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 999} is quoted"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            r#"{"usage":null}"#,
            r#"{"choices":[]}"#,
            r#"{"usage":{"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":null,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            r#"{"usage":{"input_tokens":"x","output_tokens":2.5,"cache_read_input_tokens":3}}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens":7,"completion_tokens":2}}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"usage":{}}"#,
        ] {
            let (scanned, tree) = both(raw);
            assert_eq!(scanned, tree, "{raw}");
        }
        assert_eq!(
            scan_usage(br#"{"usage":{"prompt_tokens":4,"completion_tokens":5}}"#),
            Some(Usage {
                input_tokens: 4,
                output_tokens: 5
            })
        );
    }
}
