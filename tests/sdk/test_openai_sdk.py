"""The official `openai` SDK through Sluice, unchanged: native and translated backends, streaming included."""
import openai
import pytest
from openai import OpenAI


@pytest.fixture
def client(gateway):
    return OpenAI(base_url=gateway + "/v1", api_key="sk-sdk-test", max_retries=0, timeout=20)


@pytest.mark.parametrize("model,backend_name", [("gpt-4o-mini", "oa-sim"), ("claude-haiku", "an-sim")])
def test_chat_completion(client, model, backend_name):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello sdk"}],
        max_tokens=12,
    )
    text = r.choices[0].message.content
    assert backend_name in text and "hello sdk" in text
    # Passed through: the backend's own model name; translated: the name the client asked for.
    assert r.model in (model, "gpt-4o-mini-2024-07-18")
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@pytest.mark.parametrize("model,backend_name", [("gpt-4o-mini", "oa-sim"), ("claude-haiku", "an-sim")])
def test_chat_completion_stream(client, model, backend_name):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert backend_name in text and "stream please" in text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 16


def test_tool_call_through_anthropic_backend(client):
    tools = [{"type": "function", "function": {"name": "lookup", "description": "find a thing",
              "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}}}]
    r = client.chat.completions.create(
        model="claude-haiku", messages=[{"role": "user", "content": "find cats"}], tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup" and "find cats" in call.function.arguments
    # Send the tool result back: the answer is text again.
    r2 = client.chat.completions.create(model="claude-haiku", tools=tools, messages=[
        {"role": "user", "content": "find cats"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "3 cats"},
    ])
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content


def test_errors_are_sdk_exceptions(client, gateway):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    bad = OpenAI(base_url=gateway + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude-haiku", messages=[{"role": "user", "content": "x"}], n=2)
    assert "n" in str(e.value)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku"])
def test_truncated_stream_raises_instead_of_returning_a_partial_answer(truncating_gateway, model):
    client = OpenAI(base_url=truncating_gateway + "/v1", api_key="sk-sdk-test", max_retries=0, timeout=20)
    text = ""
    with pytest.raises(openai.APIError) as raised:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "stream please"}], stream=True)
        for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
    assert "ended before the message was complete" in str(raised.value), raised.value
