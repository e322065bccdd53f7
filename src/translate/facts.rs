//! What a whole upstream answer says of itself, for traces: the model that answered and why each
//! choice stopped (`choices[].finish_reason`, Anthropic's `stop_reason`, a Responses `status`).
//! Read without a tree (serde skips the rest, answer text included), only when a trace is sampled.

use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    output: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    finish_reason: Option<String>,
}

/// The answering model and the finish reasons of a JSON answer (`None`, empty: not said).
pub fn response_facts(body: &[u8]) -> (Option<String>, Vec<String>) {
    let Ok(a) = serde_json::from_slice::<Answer>(body) else {
        return (None, Vec::new());
    };
    let mut reasons: Vec<String> = a
        .choices
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.finish_reason)
        .collect();
    reasons.extend(a.stop_reason);
    if a.output.is_some() {
        reasons.extend(a.status);
    }
    (a.model, reasons)
}

#[cfg(test)]
mod tests {
    use super::response_facts;

    #[test]
    fn openai_anthropic_and_responses_answers() {
        let chat = br#"{"model":"gpt-4o","choices":[{"message":{"content":"hi"},"finish_reason":"stop"},{"finish_reason":"length"}],"usage":{}}"#;
        assert_eq!(
            response_facts(chat),
            (Some("gpt-4o".into()), vec!["stop".into(), "length".into()])
        );
        let msg = br#"{"model":"claude","content":[{"type":"text","text":"x"}],"stop_reason":"end_turn"}"#;
        assert_eq!(
            response_facts(msg),
            (Some("claude".into()), vec!["end_turn".into()])
        );
        let resp = br#"{"model":"m","status":"completed","output":[]}"#;
        assert_eq!(response_facts(resp).1, vec!["completed".to_string()]);
        assert_eq!(response_facts(b"not json"), (None, vec![]));
    }
}
