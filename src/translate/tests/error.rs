//! Upstream errors rewritten for each client, and TranslateError bodies.

use serde_json::json;

use crate::translate::{TranslateError, error_to_anthropic, error_to_openai};

const ANTHROPIC_OVERLOADED: &[u8] =
    br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
const OPENAI_RATE_LIMIT: &[u8] = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;

#[test]
fn anthropic_error_to_openai() {
    assert_eq!(
        error_to_openai(529, ANTHROPIC_OVERLOADED),
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": null}})
    );
    let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;
    let out = error_to_openai(400, body);
    assert_eq!(out["error"]["type"], "invalid_request_error");
    assert_eq!(out["error"]["message"], "max_tokens: Field required");
    let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    assert_eq!(
        error_to_openai(429, body)["error"]["code"],
        "rate_limit_exceeded"
    );
    assert_eq!(
        error_to_openai(429, body)["error"]["type"],
        "rate_limit_error"
    );
}

#[test]
fn openai_error_passes_through_to_openai() {
    assert_eq!(
        error_to_openai(429, OPENAI_RATE_LIMIT),
        json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null,
                         "code": "rate_limit_exceeded"}})
    );
}

#[test]
fn openai_error_to_anthropic() {
    assert_eq!(
        error_to_anthropic(429, OPENAI_RATE_LIMIT),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}})
    );
    let body = br#"{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}"#;
    assert_eq!(
        error_to_anthropic(401, body)["error"]["type"],
        "authentication_error"
    );
    for (status, kind) in [
        (400, "invalid_request_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (500, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ] {
        assert_eq!(
            error_to_anthropic(status, b"{}")["error"]["type"],
            kind,
            "{status}"
        );
    }
}

#[test]
fn anthropic_error_keeps_its_type() {
    assert_eq!(
        error_to_anthropic(529, ANTHROPIC_OVERLOADED),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}

#[test]
fn non_json_and_odd_bodies() {
    let out = error_to_openai(502, b"<html>Bad Gateway</html>\n");
    assert_eq!(out["error"]["message"], "<html>Bad Gateway</html>");
    assert_eq!(out["error"]["type"], "server_error");
    assert_eq!(out["error"]["param"], serde_json::Value::Null);
    let out = error_to_anthropic(504, b"");
    assert_eq!(out["error"]["message"], "upstream returned HTTP 504");
    assert_eq!(out["error"]["type"], "api_error");
    assert_eq!(
        error_to_openai(400, br#"{"error":"bad thing"}"#)["error"]["message"],
        "bad thing"
    );
    assert_eq!(
        error_to_anthropic(422, br#"{"detail":"nope"}"#)["error"]["message"],
        "nope"
    );
    assert_eq!(
        error_to_openai(500, b"\xff\xfe oops")["error"]["message"],
        "\u{fffd}\u{fffd} oops"
    );
    let long = "x".repeat(10_000);
    let msg = error_to_openai(500, long.as_bytes())["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.chars().count() < 2100);
}

#[test]
fn translate_error_names_field_and_renders_bodies() {
    let e = TranslateError::Unsupported {
        field: "messages[2].content[0].type".into(),
        reason: "nope".into(),
    };
    assert_eq!(e.field(), "messages[2].content[0].type");
    assert_eq!(
        e.to_string(),
        "field `messages[2].content[0].type` cannot be expressed for the target api: nope"
    );
    assert_eq!(
        e.to_openai()["error"]["param"],
        "messages[2].content[0].type"
    );
    assert_eq!(e.to_openai()["error"]["type"], "invalid_request_error");
    assert_eq!(e.to_anthropic()["error"]["type"], "invalid_request_error");
    let e = TranslateError::Invalid {
        field: "stop".into(),
        reason: "bad".into(),
    };
    assert_eq!(e.to_string(), "invalid field `stop`: bad");
}
