//! OpenAI Chat Completions request → Anthropic Messages request.
//!
//! Fields OpenAI accepts but Anthropic cannot honour fail with `Unsupported` naming the field.
//! Fields dropped on purpose, because they are hints or consumed by the gateway:
//! `stream_options` (Anthropic always streams usage; the gateway handles `include_usage`),
//! `store`/`metadata` (OpenAI-side storage), `service_tier`, `prompt_cache_key`, `verbosity`,
//! message `name`, `image_url.detail`, tool `function.strict` (Anthropic already follows the
//! schema; failing on it would break SDKs that set it by default), `parallel_tool_calls: true`
//! (the default) and unknown fields (forward compatibility).

use serde_json::{Map, Value, json};

use super::common::{as_obj, is_absent, is_off, join, opt_f64, opt_positive, req_str};
use super::error::{TranslateError, invalid, unsupported};
use super::messages_to_anthropic::convert_messages;

/// Translate an OpenAI chat completions body into an Anthropic messages body for `model`.
pub fn chat_request_to_messages(
    req: &Value,
    model: &str,
    default_max_tokens: u32,
) -> Result<Value, TranslateError> {
    let obj = as_obj(req, "body")?;
    reject_chat_only_fields(obj)?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "expected an array"))?;
    let (system, turns) = convert_messages(messages)?;

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(turns));
    common_params(obj, &mut out, default_max_tokens)?;
    tools(obj, &mut out)?;
    Ok(Value::Object(out))
}

/// Fields shared by chat and legacy completions: limits, sampling, stop, user, stream, and the
/// OpenAI-only knobs Anthropic has no equivalent for.
pub(crate) fn common_params(
    obj: &Map<String, Value>,
    out: &mut Map<String, Value>,
    default_max_tokens: u32,
) -> Result<(), TranslateError> {
    if let Some(n) = obj.get("n").filter(|v| !v.is_null())
        && n.as_u64() != Some(1)
    {
        return Err(unsupported("n", "Anthropic returns exactly one choice"));
    }
    for (key, reason) in [
        ("logprobs", "Anthropic does not return log probabilities"),
        (
            "top_logprobs",
            "Anthropic does not return log probabilities",
        ),
        ("presence_penalty", "Anthropic has no presence penalty"),
        ("frequency_penalty", "Anthropic has no frequency penalty"),
        ("logit_bias", "Anthropic has no logit bias"),
    ] {
        if !is_off(obj.get(key)) {
            return Err(unsupported(key, reason));
        }
    }
    if !is_absent(obj.get("seed")) {
        return Err(unsupported(
            "seed",
            "Anthropic has no deterministic sampling seed",
        ));
    }

    let max = match opt_positive(obj, "max_completion_tokens")? {
        Some(n) => n,
        None => opt_positive(obj, "max_tokens")?.unwrap_or(u64::from(default_max_tokens)),
    };
    out.insert("max_tokens".into(), json!(max));

    if let Some(t) = opt_f64(obj, "temperature")? {
        if t < 0.0 {
            return Err(invalid("temperature", "must be at least 0"));
        }
        if t > 1.0 {
            return Err(unsupported(
                "temperature",
                "Anthropic accepts temperatures from 0 to 1",
            ));
        }
        out.insert("temperature".into(), obj["temperature"].clone());
    }
    if let Some(p) = opt_f64(obj, "top_p")? {
        if !(0.0..=1.0).contains(&p) {
            return Err(invalid("top_p", "must be between 0 and 1"));
        }
        out.insert("top_p".into(), obj["top_p"].clone());
    }

    let stops = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::String(_) => Ok(s.clone()),
                _ => Err(invalid(format!("stop[{i}]"), "expected a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("stop", "expected a string or an array of strings")),
    };
    if !stops.is_empty() {
        out.insert("stop_sequences".into(), Value::Array(stops));
    }

    let user = ["user", "safety_identifier"].iter().find_map(|k| {
        obj.get(*k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    });
    if let Some(user) = user {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    match obj.get("stream") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            out.insert("stream".into(), json!(b));
        }
        Some(_) => return Err(invalid("stream", "expected a boolean")),
    }
    Ok(())
}

fn reject_chat_only_fields(obj: &Map<String, Value>) -> Result<(), TranslateError> {
    for (key, reason) in [
        ("audio", "Anthropic cannot produce audio"),
        ("prediction", "Anthropic has no predicted outputs"),
        (
            "reasoning_effort",
            "Anthropic has no reasoning effort setting",
        ),
        (
            "web_search_options",
            "Anthropic web search is a server tool, not a request option",
        ),
        (
            "functions",
            "legacy functions are not translated; use `tools`",
        ),
        (
            "function_call",
            "legacy function_call is not translated; use `tool_choice`",
        ),
    ] {
        if !is_off(obj.get(key)) {
            return Err(unsupported(key, reason));
        }
    }
    if let Some(modalities) = obj.get("modalities").and_then(Value::as_array)
        && modalities.iter().any(|m| m.as_str() != Some("text"))
    {
        return Err(unsupported("modalities", "Anthropic produces text only"));
    }
    if let Some(format) = obj.get("response_format").filter(|v| !v.is_null()) {
        let kind = format.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "text" {
            return Err(unsupported(
                "response_format.type",
                format!("Anthropic cannot enforce a `{kind}` response format"),
            ));
        }
    }
    Ok(())
}

/// `tools`, `tool_choice` and `parallel_tool_calls`.
fn tools(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let mut tools = Vec::new();
    match obj.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, t) in list.iter().enumerate() {
                let path = format!("tools[{i}]");
                let t = as_obj(t, &path)?;
                let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
                if kind != "function" {
                    return Err(unsupported(
                        join(&path, "type"),
                        format!("`{kind}` tools have no Anthropic equivalent"),
                    ));
                }
                let fpath = join(&path, "function");
                let f = t
                    .get("function")
                    .and_then(Value::as_object)
                    .ok_or_else(|| invalid(&fpath, "expected an object"))?;
                let mut tool = Map::new();
                tool.insert("name".into(), json!(req_str(f, "name", &fpath)?));
                if let Some(d) = f.get("description").and_then(Value::as_str) {
                    tool.insert("description".into(), json!(d));
                }
                let schema = match f.get("parameters") {
                    None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                    Some(p) => p.clone(),
                };
                tool.insert("input_schema".into(), schema);
                tools.push(Value::Object(tool));
            }
        }
        Some(_) => return Err(invalid("tools", "expected an array")),
    }

    let choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("unknown tool_choice `{other}`"),
                ));
            }
        }),
        Some(Value::Object(c)) => match c.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = c
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool_choice.function.name", "expected a string"))?;
                Some(json!({"type": "tool", "name": name}))
            }
            Some(other) => {
                return Err(unsupported(
                    "tool_choice.type",
                    format!("`{other}` tool choice has no Anthropic equivalent"),
                ));
            }
            None => return Err(invalid("tool_choice.type", "expected a string")),
        },
        Some(_) => return Err(invalid("tool_choice", "expected a string or an object")),
    };

    if tools.is_empty() {
        if let Some(c) = &choice
            && matches!(c["type"].as_str(), Some("any" | "tool"))
        {
            return Err(invalid("tool_choice", "requires `tools`"));
        }
        return Ok(());
    }
    let serial = obj.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let choice = match choice {
        Some(c) => Some(c),
        None if serial => Some(json!({"type": "auto"})),
        None => None,
    };
    out.insert("tools".into(), Value::Array(tools));
    if let Some(mut choice) = choice {
        if serial && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        out.insert("tool_choice".into(), choice);
    }
    Ok(())
}
