"""The official `anthropic` SDK through Sluice, unchanged: native and translated backends, streaming included."""
import anthropic
import pytest
from anthropic import Anthropic


@pytest.fixture
def client(gateway):
    return Anthropic(base_url=gateway, api_key="sk-sdk-test", max_retries=0, timeout=20)


@pytest.mark.parametrize("model,backend_name", [("claude-haiku", "an-sim"), ("gpt-4o-mini", "oa-sim")])
def test_message(client, model, backend_name):
    r = client.messages.create(
        model=model, max_tokens=12, system="be brief",
        messages=[{"role": "user", "content": "hello anthropic sdk"}],
    )
    text = "".join(b.text for b in r.content if b.type == "text")
    assert backend_name in text and "hello anthropic sdk" in text
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.model in (model, "claude-3-5-haiku-latest")


@pytest.mark.parametrize("model,backend_name", [("claude-haiku", "an-sim"), ("gpt-4o-mini", "oa-sim")])
def test_message_stream(client, model, backend_name):
    with client.messages.stream(model=model, max_tokens=100,
                                messages=[{"role": "user", "content": "stream it"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert backend_name in text and "stream it" in text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16


def test_tool_use_through_openai_backend(client):
    tools = [{"name": "lookup", "description": "find a thing",
              "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}}}]
    r = client.messages.create(model="gpt-4o-mini", max_tokens=100, tools=tools,
                               messages=[{"role": "user", "content": "find dogs"}])
    assert r.stop_reason == "tool_use"
    use = next(b for b in r.content if b.type == "tool_use")
    assert use.name == "lookup" and use.input == {"input": "find dogs"}
    with client.messages.stream(model="gpt-4o-mini", max_tokens=100, tools=tools,
                                messages=[{"role": "user", "content": "find dogs"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    assert next(b for b in final.content if b.type == "tool_use").input == {"input": "find dogs"}


def test_errors_are_sdk_exceptions(client):
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="gpt-4o-mini", max_tokens=5, extra_body={"top_k": 3}, messages=[{"role": "user", "content": "x"}])
    assert "top_k" in str(e.value)


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o-mini"])
def test_truncated_stream_raises_instead_of_returning_a_partial_answer(truncating_gateway, model):
    client = Anthropic(base_url=truncating_gateway, api_key="sk-sdk-test", max_retries=0, timeout=20)
    with pytest.raises(anthropic.APIError) as raised:
        with client.messages.stream(model=model, max_tokens=100,
                                    messages=[{"role": "user", "content": "stream it"}]) as stream:
            "".join(stream.text_stream)
            stream.get_final_message()
    assert "ended before the message was complete" in str(raised.value), raised.value
