//! `scan_request` against the tree-based helpers on the same bodies.

use crate::translate::{estimate_prompt_tokens, requested_max_tokens, scan_request};
use serde_json::{Value, json};

/// What the tree-based path reads from `body`.
fn by_tree(
    body: &Value,
    field: Option<&str>,
) -> (Option<String>, bool, bool, Option<u64>, u64, Option<String>) {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let affinity = field.and_then(|f| match body.get(f)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    });
    (
        model,
        stream,
        usage,
        requested_max_tokens(body),
        estimate_prompt_tokens(body),
        affinity,
    )
}

fn by_scan(
    body: &Value,
    field: Option<&str>,
) -> (Option<String>, bool, bool, Option<u64>, u64, Option<String>) {
    let s = scan_request(body.to_string().as_bytes(), field).expect("scans");
    (
        s.model,
        s.stream,
        s.include_usage,
        s.max_tokens,
        s.prompt_tokens,
        s.affinity,
    )
}

fn bodies() -> Vec<Value> {
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "query é"}}}}}]);
    vec![
        json!({}),
        json!({"model": "", "stream": "yes", "max_tokens": -1}),
        json!({"model": 7, "stream": true, "stream_options": {"include_usage": true}}),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "abcdefgh"}], "max_tokens": 100}),
        json!({"model": "m", "max_completion_tokens": null, "max_tokens": 9}),
        json!({"model": "m", "max_completion_tokens": 50, "max_tokens": 100, "stream_options": {"include_usage": false}}),
        json!({"system": "abcd", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "abcd"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_long_identifier", "name": "fn", "input": {"q": "ab", "n": [1, 2.5, null, true]}}]},
        ]}),
        json!({"prompt": ["abcdefghi", "ünïcödé ✓"], "user": "u-1"}),
        json!({"input": ["one", "two"], "user": 42}),
        json!({"messages": [{"role": "user", "content": [
            {"text": "before the type", "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"type": {"nested": "not a string"}, "text": "counted"},
            {"type": "text", "text": "quote \" and \\ escapes \u{1F600}", "cache_control": {"type": "ephemeral"}},
        ]}], "tools": tools, "functions": null, "user": null}),
        json!({"messages": "plain", "tools": [], "user": {"id": 1}}),
    ]
}

#[test]
fn scan_agrees_with_the_tree_helpers() {
    for body in bodies() {
        for field in [None, Some("user"), Some("messages"), Some("model")] {
            assert_eq!(
                by_scan(&body, field),
                by_tree(&body, field),
                "body {body} field {field:?}"
            );
        }
    }
}

#[test]
fn scan_keeps_the_last_of_duplicate_top_level_keys() {
    let raw = br#"{"model":"a","messages":[{"content":"aaaaaaaaaaaa"}],"model":"b","messages":[{"content":"bbbb"}]}"#;
    let s = scan_request(raw, None).unwrap();
    let tree: Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(s.model.as_deref(), Some("b"));
    assert_eq!(s.prompt_tokens, estimate_prompt_tokens(&tree));
}

#[test]
fn scan_rejects_what_the_parser_rejects() {
    for raw in [
        &b"{\"model\": "[..],
        b"not json",
        b"{\"a\":1} trailing",
        b"",
        b"{\"a\":1,}",
    ] {
        let want = serde_json::from_slice::<Value>(raw)
            .unwrap_err()
            .to_string();
        let got = scan_request(raw, None).unwrap_err().to_string();
        assert_eq!(got, want, "{}", String::from_utf8_lossy(raw));
    }
    for raw in [&b"[1, 2]"[..], b"\"text\"", b"  42", b"null"] {
        assert_eq!(
            scan_request(raw, None).unwrap_err().to_string(),
            "expected a json object"
        );
    }
}

#[test]
fn scan_escaped_keys_are_the_same_keys() {
    let s = scan_request(br#"{"mod\u0065l":"m","str\u0065am":true}"#, None).unwrap();
    assert_eq!(s.model.as_deref(), Some("m"));
    assert!(s.stream);
}

#[test]
fn deep_nesting_is_refused_by_the_scan_even_when_the_body_would_pass_through() {
    let deep = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"metadata":{}1{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    assert!(scan_request(deep.as_bytes(), None).is_err());
    let shallow = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"metadata":{}1{}}}"#,
        "[".repeat(50),
        "]".repeat(50)
    );
    assert!(scan_request(shallow.as_bytes(), None).is_ok());
}

#[test]
fn brackets_inside_strings_do_not_count_as_nesting() {
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{} \" {}"}}]}}"#,
        "[".repeat(500),
        "{".repeat(500)
    );
    assert!(scan_request(body.as_bytes(), None).is_ok());
}

/// Whenever the short way (the members walk) answers, the serde scan answers the same; on every
/// single-byte change and cut of usual and odd bodies, with and without an affinity field.
#[test]
fn the_walked_scan_never_disagrees_with_the_serde_scan() {
    use crate::translate::scan::scanned;
    use crate::translate::scan_walk::walked;
    let mut raws: Vec<String> = bodies().iter().map(Value::to_string).collect();
    raws.extend(
        [
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence please."}]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"line\none \"q\" \\ \u00e9 \ud83d\ude00 \/"},{"role":"user","content":[{"type":"text","text":"a\tb"},{"type":"image_url","image_url":{"url":"data:x"}}]}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":7}"#,
            r#"{"model":"claude","system":[{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}],"max_tokens":1024}"#,
            r#" { "model" : "m" , "input" : [ { "type" : "input_text" , "text" : "x" } ] , "max_output_tokens" : 18446744073709551616 } "#,
            r#"{"model":"m","max_completion_tokens":-0,"max_tokens":1.5,"stream":"true"}"#,
            r#"{"model":"m\u0041","messages":[]}"#,
            r#"{"model":"m","messages":[{"content":[[[[[[[[[["deep"]]]]]]]]]]}]}"#,
            r#"{"model":"m","messages":[{"content":"a","content":"bb"}]}"#,
            r#"{"model":"m","messages":[{"type":"image","type":"text","text":"x"}]}"#,
            r#"{"model":"m","messages":[{"type":"im\u0061ge"}]}"#,
        ]
        .map(str::to_string),
    );
    let mut walked_count = 0;
    let mut check = |raw: &[u8]| {
        for field in [None, Some("user")] {
            if let Some(fields) = walked(raw, field) {
                walked_count += 1;
                let serde = scanned(raw, field);
                assert_eq!(
                    Some(fields.finish()),
                    serde.ok(),
                    "{} {field:?}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
    };
    for raw in &raws {
        check(raw.as_bytes());
        for m in crate::protocol::mutations(raw.as_bytes()) {
            check(&m);
        }
    }
    assert!(walked_count > 5000, "{walked_count}");
    // The usual bodies take the short way.
    for raw in &raws[raws.len() - 10..raws.len() - 6] {
        assert!(walked(raw.as_bytes(), None).is_some(), "{raw}");
    }
}
