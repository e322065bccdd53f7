//! Usage extraction (bodies and pass-through streams) and token estimates.

use serde_json::json;

use super::ev;
use super::stream_to_openai::{TEXT_STREAM, upstream_events};
use crate::translate::{
    MEDIA_TOKENS, StreamUsage, Usage, estimate_prompt_tokens, requested_max_tokens, usage_from_body,
};

#[test]
fn usage_from_bodies_of_both_protocols() {
    let openai =
        json!({"usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}});
    assert_eq!(
        usage_from_body(&openai),
        Some(Usage {
            input_tokens: 11,
            output_tokens: 7
        })
    );
    let anthropic = json!({"usage": {"input_tokens": 5, "output_tokens": 9,
                                     "cache_read_input_tokens": 100, "cache_creation_input_tokens": 10}});
    assert_eq!(
        usage_from_body(&anthropic),
        Some(Usage {
            input_tokens: 115,
            output_tokens: 9
        })
    );
    let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}});
    assert_eq!(
        usage_from_body(&start),
        Some(Usage {
            input_tokens: 3,
            output_tokens: 1
        })
    );
    assert_eq!(usage_from_body(&json!({"usage": null})), None);
    assert_eq!(usage_from_body(&json!({"choices": []})), None);
}

#[test]
fn stream_usage_anthropic() {
    let mut su = StreamUsage::default();
    assert_eq!(su.usage(), None);
    for e in upstream_events(TEXT_STREAM) {
        su.observe(&e);
    }
    assert_eq!(
        su.usage(),
        Some(Usage {
            input_tokens: 25,
            output_tokens: 15
        })
    );
}

#[test]
fn stream_usage_anthropic_message_delta_with_input() {
    let mut su = StreamUsage::default();
    su.observe(&ev(None, json!({"type": "message_start", "message": {"usage": {"input_tokens": 2, "output_tokens": 1}}})));
    su.observe(&ev(
        None,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
        "usage": {"input_tokens": 2, "cache_read_input_tokens": 8, "output_tokens": 40}}),
    ));
    assert_eq!(
        su.usage(),
        Some(Usage {
            input_tokens: 10,
            output_tokens: 40
        })
    );
}

#[test]
fn stream_usage_openai() {
    let mut su = StreamUsage::default();
    su.observe(&ev(
        None,
        json!({"choices": [{"index": 0, "delta": {"content": "x"}}], "usage": null}),
    ));
    assert_eq!(su.usage(), None);
    su.observe(&ev(None, json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}})));
    su.observe(&crate::translate::SseEvent {
        event: None,
        data: "[DONE]".into(),
    });
    assert_eq!(
        su.usage(),
        Some(Usage {
            input_tokens: 4,
            output_tokens: 6
        })
    );
}

#[test]
fn estimates_count_text_roughly_by_four() {
    let body = json!({"messages": [{"role": "user", "content": "abcdefgh"}]});
    assert_eq!(estimate_prompt_tokens(&body), 2);
    let body = json!({"system": "abcd", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "abcd"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_long_identifier", "name": "fn", "input": {"q": "ab"}}]},
    ]});
    // "abcd" + "abcd" + "fn" + "ab" = 12 chars.
    assert_eq!(estimate_prompt_tokens(&body), 3);
    assert_eq!(estimate_prompt_tokens(&json!({"prompt": ["abcdefghi"]})), 3);
    assert_eq!(estimate_prompt_tokens(&json!({})), 1);
    assert_eq!(estimate_prompt_tokens(&json!({"messages": []})), 1);
}

#[test]
fn estimates_include_tools_and_flat_media() {
    let tools =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let chars = tools.to_string().len() as u64;
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(100_000))}},
    ]}], "tools": tools});
    assert_eq!(
        estimate_prompt_tokens(&body),
        MEDIA_TOKENS + chars.div_ceil(4)
    );
}

#[test]
fn requested_max_tokens_reads_either_field() {
    assert_eq!(requested_max_tokens(&json!({"max_tokens": 100})), Some(100));
    assert_eq!(
        requested_max_tokens(&json!({"max_completion_tokens": 50, "max_tokens": 100})),
        Some(50)
    );
    assert_eq!(requested_max_tokens(&json!({"max_tokens": null})), None);
    assert_eq!(requested_max_tokens(&json!({})), None);
}
