"""The official `openai` SDK's Responses API through Sluice: passed through to a backend that serves it
(`gpt-4o-resp`), translated to a Chat-Completions-only backend (`gpt-4o-mini`) and to an Anthropic one
(`claude-haiku`); whole, streamed with `create(stream=True)` and with `responses.stream()`."""
import openai
import pytest
from openai import OpenAI

MODELS = [("gpt-4o-resp", "oa-sim"), ("gpt-4o-mini", "oa-sim"), ("claude-haiku", "an-sim")]
TOOLS = [{"type": "function", "name": "lookup", "description": "find a thing",
          "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}}]


@pytest.fixture
def client(gateway):
    return OpenAI(base_url=gateway + "/v1", api_key="sk-sdk-test", max_retries=0, timeout=20)


@pytest.mark.parametrize("model,backend_name", MODELS)
def test_string_input(client, model, backend_name):
    r = client.responses.create(model=model, instructions="be brief", input="hello sdk",
                                max_output_tokens=40, metadata={"run": "sdk"})
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed"
    assert backend_name in r.output_text and "hello sdk" in r.output_text
    assert r.metadata == {"run": "sdk"}
    assert r.usage.input_tokens > 0 and r.usage.output_tokens == 16
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


@pytest.mark.parametrize("model,backend_name", MODELS)
def test_item_list_input(client, model, backend_name):
    r = client.responses.create(model=model, input=[
        {"role": "developer", "content": "answer plainly"},
        {"role": "user", "content": [{"type": "input_text", "text": "first question"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "first answer"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second question"}]},
    ], max_output_tokens=4)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text.startswith(backend_name)
    assert r.usage.output_tokens == 4


@pytest.mark.parametrize("model,backend_name", MODELS)
def test_function_call_output_round_trip(client, model, backend_name):
    r = client.responses.create(model=model, input="find cats", tools=TOOLS)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1, r.output
    call = calls[0]
    assert call.name == "lookup" and "find cats" in call.arguments
    # The call and its result go back as items; the answer is text again.
    r2 = client.responses.create(model=model, tools=TOOLS, input=[
        {"role": "user", "content": "find cats"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "3 cats"},
    ])
    assert r2.status == "completed" and backend_name in r2.output_text


@pytest.mark.parametrize("model,backend_name", MODELS)
def test_create_stream(client, model, backend_name):
    stream = client.responses.create(model=model, input="stream please", stream=True)
    kinds, text, done = [], "", None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            done = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    assert backend_name in text and "stream please" in text
    assert done.output_text == text and done.usage.output_tokens == 16


@pytest.mark.parametrize("model,backend_name", MODELS)
def test_responses_stream_helper(client, model, backend_name):
    with client.responses.stream(model=model, input="find dogs", tools=TOOLS) as stream:
        args = ""
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                args += event.delta
        final = stream.get_final_response()
    call = [o for o in final.output if o.type == "function_call"][0]
    assert call.name == "lookup" and call.arguments == args and "find dogs" in args
    with client.responses.stream(model=model, input="stream text") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert backend_name in text and final.output_text == text


def test_previous_response_id_continues_on_a_responses_backend(client):
    first = client.responses.create(model="gpt-4o-resp", input="remember this")
    second = client.responses.create(model="gpt-4o-resp", input="and this", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens


def test_what_a_backend_cannot_express_is_a_bad_request(client):
    for model in ("gpt-4o-mini", "claude-haiku"):
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model=model, input="x", previous_response_id="resp_abc")
        assert "previous_response_id" in str(e.value)
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model=model, input="x", tools=[{"type": "web_search"}])
        assert "tools[0].type" in str(e.value)


@pytest.mark.parametrize("model", ["gpt-4o-resp", "gpt-4o-mini", "claude-haiku"])
def test_truncated_stream_raises(truncating_gateway, model):
    client = OpenAI(base_url=truncating_gateway + "/v1", api_key="sk-sdk-test", max_retries=0, timeout=20)
    with pytest.raises(openai.APIError) as raised:
        for _ in client.responses.create(model=model, input="stream please", stream=True):
            pass
    assert "ended before the message was complete" in str(raised.value), raised.value


def test_previous_response_id_through_other_nodes_of_a_cluster(responses_cluster):
    """Round-robin over two backends would send half the follow-ups to the one that does not hold the
    response (a 404 from it); Sluice sends each to the holder, whichever node it reaches."""
    clients = [OpenAI(base_url=u + "/v1", api_key="sk-sdk-test", max_retries=0, timeout=20) for u in responses_cluster]
    first = clients[0].responses.with_raw_response.create(model="any-model", input="remember the cat")
    holder = first.headers["x-sluice-backend"]
    prev = first.parse()
    for step in range(4):
        node = clients[1 + step % 2]
        raw = node.responses.with_raw_response.create(model="any-model", input=f"turn {step}", previous_response_id=prev.id)
        assert raw.headers["x-sluice-backend"] == holder
        nxt = raw.parse()
        assert nxt.previous_response_id == prev.id
        assert nxt.usage.input_tokens > prev.usage.input_tokens
        prev = nxt
    with clients[2].responses.stream(model="any-model", input="streamed turn", previous_response_id=prev.id) as s:
        final = s.get_final_response()
    assert final.previous_response_id == prev.id and final.output_text


def test_stored_responses_are_read_and_deleted_through_any_node(responses_cluster):
    clients = [OpenAI(base_url=u + "/v1", api_key="sk-sdk-test", max_retries=0, timeout=20) for u in responses_cluster]
    made = clients[0].responses.create(model="any-model", input="keep me")
    got = clients[1].responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text
    items = clients[2].responses.input_items.list(made.id)
    assert [i.content[0].text for i in items.data] == ["keep me"]
    clients[2].responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        clients[1].responses.retrieve(made.id)
    with pytest.raises(openai.BadRequestError):
        clients[0].responses.retrieve("resp_unknown--sl00000000")
