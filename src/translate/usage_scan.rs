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

/// A passed-through answer, checked and read in one walk: `None` when `body` is not one JSON text
/// (as [`crate::protocol::is_json`] decides), else its usage. An object whose only top-level `usage`
/// is plainly written (no repeated or escaped key) is read straight from the walk's members; anything
/// else goes the long way, the check and then [`scan_usage`].
pub fn checked_usage(body: &[u8]) -> Option<Option<Usage>> {
    if let Ok(text) = std::str::from_utf8(body)
        && let Some(usage) = walked_usage(text)
    {
        return Some(usage);
    }
    crate::protocol::is_json(body).then(|| scan_usage(body))
}

/// The top-level `usage` of `text`, read in one validating walk; `None` when the long way must
/// decide (`text` is not a plain object, `usage` is repeated or not an object, or absent while the
/// text names it somewhere deeper, as an Anthropic `message.usage` does).
fn walked_usage(text: &str) -> Option<Option<Usage>> {
    // `prompt_tokens`, `completion_tokens`, `input_tokens`, `output_tokens`, `cache_read_input_tokens`,
    // `cache_creation_input_tokens`, as [`UsageFields`] names them; of a repeated one the last
    // counts, as in a tree.
    let mut fields: [Option<&str>; 6] = [None; 6];
    let mut seen = false;
    let mut w = crate::protocol::Walk::new(text);
    let whole = w.object(&mut |w, key| {
        if key != "usage" {
            return w.skip();
        }
        if std::mem::replace(&mut seen, true) {
            return false;
        }
        w.object(&mut |w, key| {
            let Some(value) = w.value() else {
                return false;
            };
            let i = match key {
                "prompt_tokens" => 0,
                "completion_tokens" => 1,
                "input_tokens" => 2,
                "output_tokens" => 3,
                "cache_read_input_tokens" => 4,
                "cache_creation_input_tokens" => 5,
                _ => return true,
            };
            fields[i] = Some(value);
            true
        })
    });
    if !(whole && w.ended()) {
        return None;
    }
    if !seen {
        return (!text.contains("\"usage\"")).then_some(None);
    }
    let [
        prompt,
        completion,
        input,
        output,
        cache_read,
        cache_creation,
    ] = fields.map(|f| f.map(unsigned));
    Some(
        UsageFields {
            prompt_tokens: prompt,
            completion_tokens: completion,
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: cache_read,
            cache_creation_input_tokens: cache_creation,
        }
        .usage(),
    )
}

/// A present field's value as `Value::as_u64` reads it: only an unsigned integer that fits counts.
fn unsigned(text: &str) -> Value {
    match text.parse::<u64>() {
        Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => Value::from(n),
        _ => Value::Null,
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

    /// Whenever the one-walk reading answers, it agrees with the check (`is_json`) and with the
    /// tree's usage; on every single-byte change and cut of API-like and odd answers.
    #[test]
    fn the_walked_usage_never_disagrees_with_the_check_and_the_tree() {
        use super::{checked_usage, walked_usage};
        let answers = [
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"there\" \u00e9"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
            r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":7,"cache_read_input_tokens":2,"cache_creation_input_tokens":1}}"#,
            r#"{"message":{"usage":{"input_tokens":4}},"usage":null}"#,
            r#"{"message":{"usage":{"input_tokens":4}}}"#,
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-2e3]}],"usage":{"prompt_tokens":18446744073709551615,"total_tokens":18446744073709551616}}"#,
            r#"{"usage":{"prompt_tokens":-1,"completion_tokens":2.0,"input_tokens":"3","output_tokens":1e2}}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens":7}}"#,
            r#"{"usage":{"pr\u006fmpt_tokens":1}}"#,
            r#"{"usage":{}}"#,
            r#"{"usage":[1]}"#,
            r#" { "choices" : [ ] , "usage" : { "completion_tokens" : 9 } } "#,
            r#"[{"usage":{"prompt_tokens":1}}]"#,
        ];
        let tree = |t: &str| -> Option<Option<Usage>> {
            serde_json::from_str::<serde_json::Value>(t)
                .ok()
                .map(|v| usage_from_body(&v))
        };
        let mut walked = 0;
        let mut check = |t: &[u8]| {
            assert_eq!(
                checked_usage(t).is_some(),
                crate::protocol::is_json(t),
                "{}",
                String::from_utf8_lossy(t)
            );
            if let Ok(t) = std::str::from_utf8(t)
                && let Some(u) = walked_usage(t)
            {
                walked += 1;
                assert_eq!(Some(u), tree(t), "{t}");
            }
        };
        for a in answers {
            check(a.as_bytes());
            for m in crate::protocol::mutations(a.as_bytes()) {
                check(&m);
            }
        }
        assert!(walked > 1000, "{walked}");
        for a in &answers[..2] {
            assert!(walked_usage(a).is_some_and(|u| u.is_some()), "{a}");
        }
        assert_eq!(
            checked_usage(answers[0].as_bytes()),
            Some(Some(Usage {
                input_tokens: 12,
                output_tokens: 3
            }))
        );
        assert_eq!(
            checked_usage(answers[1].as_bytes()),
            Some(Some(Usage {
                input_tokens: 8,
                output_tokens: 7
            }))
        );
        assert_eq!(checked_usage(b"{\"usage\":{}"), None);
    }
}
