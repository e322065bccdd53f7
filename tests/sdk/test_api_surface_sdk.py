"""Token counting and model lists through the official SDKs."""
import anthropic
import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

ALL = ["claude-haiku", "gpt-4o-mini", "gpt-4o-resp", "open-any-1", "open-any-2"]


def test_count_tokens_both_ways(gateway):
    client = Anthropic(base_url=gateway, api_key="sk-sdk-test", max_retries=0, timeout=20)
    messages = [{"role": "user", "content": "how many tokens are these words"}]
    # An Anthropic backend serves the model: its own count.
    raw = client.messages.with_raw_response.count_tokens(model="claude-haiku", system="be brief", messages=messages)
    assert raw.parse().input_tokens > 0
    assert raw.headers.get("x-sluice-token-estimate") is None
    # Only an OpenAI backend does: Sluice's estimate, marked so.
    raw = client.messages.with_raw_response.count_tokens(model="gpt-4o-mini", messages=messages)
    assert raw.parse().input_tokens > 0
    assert raw.headers.get("x-sluice-token-estimate") == "true"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=messages)


def test_models_list_and_retrieve(gateway):
    client = OpenAI(base_url=gateway + "/v1", api_key="sk-sdk-test", max_retries=0, timeout=20)
    assert sorted(m.id for m in client.models.list()) == ALL
    assert client.models.retrieve("open-any-2").id == "open-any-2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    claude = Anthropic(base_url=gateway, api_key="sk-sdk-test", max_retries=0, timeout=20)
    assert sorted(m.id for m in claude.models.list()) == ALL
    m = claude.models.retrieve("claude-haiku")
    assert m.type == "model" and m.display_name == "claude-haiku"
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("no-such-model")
