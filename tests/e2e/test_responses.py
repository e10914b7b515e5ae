"""OpenAI's Responses API through the official SDK, from a real server: a plain answer, a
stream through the SDK's event helpers with reasoning apart, a function tool round trip,
`text.format` with a schema, hosted tools left out, and bad input refused naming the item."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script, ToolCallScript
from tests.support.scripted import scripted_model_config

LOCAL = "local/smollm2-135m-instruct"
THINKER = "fake/qwen-like"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream()
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[RunningServer]:
    data: Path = tmp_path_factory.mktemp("responses")
    config = scripted_model_config(data, upstream.base_url, THINKER, thinking="always")
    with RunningServer(data, config) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    base = server.base_url + "/v1"
    with openai.OpenAI(base_url=base, api_key=server.admin_key, max_retries=0) as opened:
        yield opened


def test_a_plain_answer_from_the_local_model(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=LOCAL, input="Say hi", instructions="Be brief.", max_output_tokens=16
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete")
    assert response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.usage.output_tokens <= 16


def test_reasoning_and_text_come_as_separate_items_whole_and_streamed(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    script = Script(reasoning=["Think", "ing."], text=["Hel", "lo!"], usage=(7, 5, 2, 0))
    upstream.on("REASON", script)
    whole = client.responses.create(model=THINKER, input="REASON please")
    kinds = [item.type for item in whole.output]
    assert kinds == ["reasoning", "message"]
    assert whole.output[0].content[0].text == "Thinking."  # type: ignore[union-attr,index]
    assert whole.output_text == "Hello!"
    assert whole.usage is not None and whole.usage.output_tokens_details.reasoning_tokens == 2
    events = []
    text = ""
    reasoning = ""
    with client.responses.stream(model=THINKER, input="REASON please") as stream:
        for event in stream:
            events.append(event)
            if event.type == "response.output_text.delta":
                text += event.delta
            elif event.type == "response.reasoning_text.delta":
                reasoning += event.delta
        final = stream.get_final_response()
    assert (reasoning, text) == ("Thinking.", "Hello!")
    names = [e.type for e in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert names.index("response.output_text.done") < names.index("response.completed")
    assert final.output_text == "Hello!"


def test_a_function_tool_round_trip(client: openai.OpenAI, upstream: FakeOpenAIUpstream) -> None:
    upstream.on(
        "WEATHER",
        Script(tool_calls=[ToolCallScript("get_weather", ('{"city": "Hangzhou"}',), id="call_1")]),
    )
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"type": "web_search"},  # hosted: not offered to the model (Codex sends one)
    ]
    first = client.responses.create(model=THINKER, input="WEATHER in Hangzhou?", tools=tools)  # type: ignore[arg-type]
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Hangzhou"}
    sent = upstream.requests[-1].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    upstream.on("RESULT", Script(text=["Sunny, 25 °C."]))
    second = client.responses.create(
        model=THINKER,
        tools=tools,  # type: ignore[arg-type]
        input=[
            {"role": "user", "content": "WEATHER in Hangzhou?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 25"},
            {"role": "user", "content": "RESULT please"},
        ],
    )
    assert second.output_text == "Sunny, 25 °C."
    messages = upstream.requests[-1].body["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 25"}


def test_text_format_with_a_schema_reaches_the_upstream_and_parse_reads_it(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    class City(BaseModel):
        name: str
        population: int

    upstream.on("CITY", Script(text=['{"name": "Hangzhou", "population": 12000000}']))
    parsed = client.responses.parse(model=THINKER, input="CITY facts", text_format=City)
    assert parsed.output_parsed == City(name="Hangzhou", population=12000000)
    fmt = upstream.requests[-1].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "City"


def test_bad_input_is_a_400_naming_the_item(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(
            model=LOCAL,
            input=[{"role": "user", "content": "hi"}, {"type": "function_call", "name": "x"}],  # type: ignore[list-item]
        )
    assert bad.value.body["param"] == "input[1].call_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=LOCAL, input="hi", previous_response_id="resp_123")


def test_a_stored_response_is_continued_retrieved_listed_and_deleted(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream, server: RunningServer
) -> None:
    upstream.on("REMEMBER", Script(reasoning=["Noted."], text=["I will remember 42."]))
    first = client.responses.create(
        model=THINKER, input="REMEMBER the number 42", instructions="Be terse."
    )
    assert first.store is True
    upstream.on("RECALL", Script(text=["It was 42."]))
    second = client.responses.create(
        model=THINKER, input="RECALL the number", previous_response_id=first.id
    )
    assert second.output_text == "It was 42." and second.previous_response_id == first.id
    sent = upstream.requests[-1].body["messages"]
    # The stored turn and its answer come first; the instructions are not inherited.
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == "I will remember 42."
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == "I will remember 42."
    items = client.responses.input_items.list(first.id)
    assert [item.type for item in items.data] == ["message"]
    # Another account cannot see it.
    other = server.cli("keys", "create", "--name", "stranger", "--json")
    secret = json.loads(other.stdout)["secret"]
    base = server.base_url + "/v1"
    stranger = openai.OpenAI(base_url=base, api_key=secret, max_retries=0)
    with stranger, pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(first.id)
    # A streamed response is stored too; store: false is not.
    with client.responses.stream(model=THINKER, input="RECALL again") as stream:
        streamed = stream.get_final_response()
    assert client.responses.retrieve(streamed.id).output_text == "It was 42."
    unstored = client.responses.create(model=THINKER, input="RECALL", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_a_stateless_client_gets_its_reasoning_sealed_and_hands_it_back(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    """As Codex does: `store: false` with `include: ["reasoning.encrypted_content"]`; the
    reasoning item comes back next turn and the model sees the earlier thinking."""
    upstream.on("SEAL", Script(reasoning=["Private ", "thought."], text=["Done."]))
    first = client.responses.create(
        model=THINKER, input="SEAL this", store=False, include=["reasoning.encrypted_content"]
    )
    [reasoning] = [item for item in first.output if item.type == "reasoning"]
    sealed = reasoning.encrypted_content
    assert sealed and "Private" not in sealed  # opaque
    upstream.on("NEXT", Script(text=["Next."]))
    items = [
        {"role": "user", "content": "SEAL this"},
        reasoning.model_dump(exclude_none=True),
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "NEXT please"},
    ]
    second = client.responses.create(model=THINKER, input=items, store=False)  # type: ignore[arg-type]
    assert second.output_text == "Next."
    turn = upstream.requests[-1].body["messages"][1]
    assert turn["role"] == "assistant"
    assert "Private thought." in json.dumps(turn)  # the earlier thinking reached the model
    tampered = dict(items[1], encrypted_content=sealed[:-6] + "AAAAAA")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=THINKER, input=[items[0], tampered, *items[2:]], store=False)  # type: ignore[list-item]
    assert refused.value.body["param"] == "input[1].encrypted_content"  # type: ignore[index]


def test_a_reasoning_summary_asked_for_is_the_thinking_whole_and_streamed(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    """Qwen3 writes no separate summary: asked for one, the thinking is the summary."""
    upstream.on("SUMMARY", Script(reasoning=["Step one. ", "Step two."], text=["Answer."]))
    whole = client.responses.create(model=THINKER, input="SUMMARY", reasoning={"summary": "auto"})
    [item] = [i for i in whole.output if i.type == "reasoning"]
    assert [part.text for part in item.summary] == ["Step one. Step two."]
    plain = client.responses.create(model=THINKER, input="SUMMARY")
    assert next(i for i in plain.output if i.type == "reasoning").summary == []
    summary = ""
    names = []
    with client.responses.stream(
        model=THINKER, input="SUMMARY", reasoning={"summary": "auto"}
    ) as stream:
        for event in stream:
            names.append(event.type)
            if event.type == "response.reasoning_summary_text.delta":
                summary += event.delta
    assert summary == "Step one. Step two."
    assert names.index("response.reasoning_summary_part.added") < names.index(
        "response.reasoning_summary_text.done"
    )


def test_an_answer_cut_at_max_output_tokens_is_incomplete_whole_and_streamed(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.on("LONG", Script(text=[f"word{i} " for i in range(200)], finish_reason="length"))
    whole = client.responses.create(model=THINKER, input="LONG story", max_output_tokens=16)
    assert whole.status == "incomplete"
    assert whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "max_output_tokens"
    with client.responses.stream(model=THINKER, input="LONG story", max_output_tokens=16) as s:
        names = [event.type for event in s]
    assert names[-1] == "response.incomplete"
