"""The Anthropic door end to end with the official `anthropic` SDK: the real server, the
default in-process model, every path an Anthropic client posts to, the request shapes Claude
Code sends, and the error shapes a client reads (docs/anthropic.md).

Greedy decoding (temperature 0) keeps answers repeatable, so a stream can be compared with a
whole answer. This SDK version has no `temperature` argument: it goes in `extra_body`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message
from tests.e2e.server import RunningServer

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

LOCAL = "local/smollm2-135m-instruct"
GREEDY: Any = {"temperature": 0}
QUESTION: Any = [{"role": "user", "content": "What is the capital of France?"}]
COUNTING: Any = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]


def sdk(server: RunningServer, path: str = "/api/anthropic", **auth: Any) -> anthropic.Anthropic:
    """An SDK client for `server` with the base URL `server + path`; the admin key as
    `api_key` unless `auth` names the credentials."""
    credentials = auth or {"api_key": server.admin_key}
    return anthropic.Anthropic(base_url=server.base_url + path, max_retries=0, **credentials)


@pytest.fixture
def client(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    """The package's server through the Anthropic SDK (in place of conftest's OpenAI client)."""
    with sdk(server) as anthropic_client:
        yield anthropic_client


def text_of(message: Message) -> str:
    """The message's text blocks joined, after checking that text is all it holds."""
    assert [block.type for block in message.content] == ["text"] * len(message.content)
    return "".join(block.text for block in message.content if block.type == "text")


def prompt_tokens(message: Message) -> int:
    """All the prompt's tokens: Anthropic's `input_tokens` leaves out those read from cache."""
    return message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("path", ["/api/anthropic", ""], ids=["api-anthropic", "root"])
def test_create_answers_a_message_whose_usage_matches_count_tokens(
    server: RunningServer, path: str
) -> None:
    with sdk(server, path) as client:
        message = client.messages.create(
            model=LOCAL, max_tokens=12, messages=QUESTION, extra_body=GREEDY
        )
        counted = client.messages.count_tokens(model=LOCAL, messages=QUESTION)
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", LOCAL)
    assert text_of(message)
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.stop_sequence is None
    assert 1 <= message.usage.output_tokens <= 12
    if message.stop_reason == "max_tokens":
        assert message.usage.output_tokens == 12
    assert message.usage.cache_creation_input_tokens == 0
    assert counted.input_tokens > 5
    assert prompt_tokens(message) == counted.input_tokens


def test_a_base_url_ending_in_v1_works_too(server: RunningServer) -> None:
    # ANTHROPIC_BASE_URL=http://host/v1 makes clients post to /v1/v1/messages.
    for path in ("/v1", "/api/anthropic/v1"):
        with sdk(server, path) as client:
            message = client.messages.create(model=LOCAL, max_tokens=4, messages=QUESTION)
            counted = client.messages.count_tokens(model=LOCAL, messages=QUESTION)
        assert message.id.startswith("msg_")
        assert prompt_tokens(message) == counted.input_tokens


def test_the_stream_helper_gives_what_create_gives(client: anthropic.Anthropic) -> None:
    request: Any = {"model": LOCAL, "max_tokens": 16, "messages": QUESTION, "extra_body": GREEDY}
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    with client.messages.stream(**request) as stream:
        events = [event.type for event in stream]
    assert "".join(pieces) == text_of(final) == text_of(whole)
    assert len(pieces) > 1  # really streamed, piece by piece
    assert final.id.startswith("msg_") and final.id != whole.id
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert prompt_tokens(final) == prompt_tokens(whole)
    # The SDK also yields its own `text` events beside the raw ones.
    raw = [kind for kind in events if kind != "text"]
    assert raw[:2] == ["message_start", "content_block_start"]
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(raw[2:-3]) == {"content_block_delta"}


def test_stop_sequences_stop_with_the_matched_string(client: anthropic.Anthropic) -> None:
    request: Any = {
        "model": LOCAL,
        "max_tokens": 60,
        "messages": COUNTING,
        "stop_sequences": ["never-seen", "5"],
        "extra_body": GREEDY,
    }
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        streamed = stream.get_final_message()
    for message in (whole, streamed):
        assert message.stop_reason == "stop_sequence"
        assert message.stop_sequence == "5"
        assert text_of(message)
        assert "5" not in text_of(message)
    assert text_of(streamed) == text_of(whole)


def test_system_as_a_string_or_as_blocks_is_the_same_prompt(client: anthropic.Anthropic) -> None:
    system = "You are a pirate. Answer like one."
    blocks: Any = [
        {"type": "text", "text": system, "cache_control": {"type": "ephemeral"}},
    ]
    common: Any = {"model": LOCAL, "max_tokens": 12, "messages": QUESTION, "extra_body": GREEDY}
    as_string = client.messages.create(system=system, **common)
    as_blocks = client.messages.create(system=blocks, **common)
    assert text_of(as_string) == text_of(as_blocks)
    assert prompt_tokens(as_string) == prompt_tokens(as_blocks)
    counted = client.messages.count_tokens(model=LOCAL, system=blocks, messages=QUESTION)
    assert counted.input_tokens == prompt_tokens(as_blocks)
    # The system text is in the prompt: a longer one takes more tokens.
    longer = client.messages.count_tokens(
        model=LOCAL, system=system + " Never break character.", messages=QUESTION
    )
    assert longer.input_tokens > counted.input_tokens


def test_a_system_turn_inside_messages_is_accepted(client: anthropic.Anthropic) -> None:
    # Claude Code's first turn: user blocks, then a system turn with the environment.
    turns: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>Be brief.</system-reminder>"},
                {"type": "text", "text": "Say hello.", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {"role": "system", "content": [{"type": "text", "text": "Platform: linux"}]},
    ]
    message = client.messages.create(model=LOCAL, max_tokens=8, messages=turns)
    assert text_of(message)
    counted = client.messages.count_tokens(model=LOCAL, messages=turns)
    assert prompt_tokens(message) == counted.input_tokens
    shorter = client.messages.count_tokens(model=LOCAL, messages=turns[:1])
    assert counted.input_tokens > shorter.input_tokens  # the system turn is in the prompt
    # Later turns carry the system content as a string.
    later = [*turns, {"role": "assistant", "content": "Hello!"}]
    later += [{"role": "system", "content": "Platform: linux"}, {"role": "user", "content": "Hi"}]
    assert text_of(client.messages.create(model=LOCAL, max_tokens=4, messages=later))


def test_fields_only_anthropic_acts_on_are_accepted(client: anthropic.Anthropic) -> None:
    user_id = json.dumps({"device_id": "d1", "account_uuid": "", "session_id": "s1"})
    tagged: Any = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "What is the capital of France?",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
        }
    ]
    extra: Any = {
        **GREEDY,
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "safeguards": [{"type": "dangerous_tool_use"}],
        "service_tier": "auto",
        "some_future_field": {"nested": [1, 2]},
    }
    message = client.messages.create(
        model=LOCAL,
        max_tokens=12,
        messages=tagged,
        metadata={"user_id": user_id},
        thinking={"type": "adaptive", "display": "omitted"},
        output_config={"effort": "high"},
        extra_body=extra,
    )
    plain = client.messages.create(model=LOCAL, max_tokens=12, messages=QUESTION, extra_body=GREEDY)
    # None of it changes the prompt or the answer (the local model does not think).
    assert text_of(message) == text_of(plain)
    assert prompt_tokens(message) == prompt_tokens(plain)


def test_claude_codes_query_string_and_headers_are_accepted(server: RunningServer) -> None:
    headers = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
        "context-management-2025-06-27,effort-2025-11-24,token-counting-2024-11-01",
        "x-app": "cli",
        "anthropic-dangerous-direct-browser-access": "true",
    }
    beta: Any = {"beta": "true"}
    with sdk(server, "", auth_token=server.admin_key) as client:
        message = client.messages.create(
            model=LOCAL, max_tokens=4, messages=QUESTION, extra_query=beta, extra_headers=headers
        )
        with client.messages.stream(
            model=LOCAL, max_tokens=4, messages=QUESTION, extra_query=beta, extra_headers=headers
        ) as stream:
            streamed = stream.get_final_message()
        counted = client.messages.count_tokens(
            model=LOCAL, messages=QUESTION, extra_query=beta, extra_headers=headers
        )
        listed = client.models.list(extra_query={"limit": 1000}, extra_headers=headers)
    assert message.id.startswith("msg_") and streamed.id.startswith("msg_")
    assert counted.input_tokens == prompt_tokens(message)
    assert LOCAL in [model.id for model in listed.data]


def test_both_ways_of_sending_the_key_work(server: RunningServer) -> None:
    key = server.admin_key
    # `auth_token` (Claude Code's ANTHROPIC_AUTH_TOKEN) sends Authorization: Bearer.
    with sdk(server, auth_token=key) as bearer:
        assert bearer.messages.create(model=LOCAL, max_tokens=2, messages=QUESTION).content
    # x-api-key (Claude Code's ANTHROPIC_API_KEY) as the only credential: this SDK sends its
    # api_key as a Bearer token, so that header is left out.
    only: Any = {"x-api-key": key, "Authorization": anthropic.Omit()}
    with sdk(server, api_key="sk-never-sent", default_headers=only) as by_header:
        assert by_header.messages.create(model=LOCAL, max_tokens=2, messages=QUESTION).content
    wrong_key: Any = {"x-api-key": "sk-wrong", "Authorization": anthropic.Omit()}
    with (
        sdk(server, api_key="sk-never-sent", default_headers=wrong_key) as wrong,
        pytest.raises(anthropic.AuthenticationError) as info,
    ):
        wrong.messages.create(model=LOCAL, max_tokens=2, messages=QUESTION)
    assert info.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": info.value.api_message},
    }


# --------------------------------------------------------------------------- models


def test_model_list_in_anthropics_shape(server: RunningServer) -> None:
    for path in ("/api/anthropic", ""):  # GET /v1/models with the SDK's anthropic-version
        with sdk(server, path) as client:
            page = client.models.list()
            catalog = client.models.list(extra_query={"all": "true"})
            one = client.models.retrieve("qwen/qwen3-8b")
        ids = [model.id for model in page.data]
        assert ids == [LOCAL]  # what can answer; the catalog is behind ?all=true
        catalog_ids = [model.id for model in catalog.data]
        assert catalog_ids[0] == LOCAL
        assert "qwen/qwen3-8b" in catalog_ids
        assert (page.first_id, page.last_id, page.has_more) == (ids[0], ids[-1], False)
        local = page.data[0]
        assert local.type == "model"
        assert local.display_name
        assert local.created_at.year >= 2024
        assert (one.id, one.type, one.max_input_tokens) == ("qwen/qwen3-8b", "model", 131072)
    # Without the version header the same path answers OpenAI clients.
    openai_shape = httpx.get(
        server.base_url + "/v1/models", headers={"Authorization": f"Bearer {server.admin_key}"}
    ).json()
    assert openai_shape["object"] == "list"
    assert openai_shape["data"][0]["object"] == "model"


# --------------------------------------------------------------------------- errors


def test_missing_max_tokens_is_a_400_naming_the_field(client: anthropic.Anthropic) -> None:
    # The SDK insists on max_tokens, so the body goes through its low-level post.
    body = {"model": LOCAL, "messages": QUESTION}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages", cast_to=Message, body=body)
    assert info.value.type == "invalid_request_error"
    assert info.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


@pytest.mark.parametrize(
    ("messages", "path", "says"),
    [
        (
            [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "video"}]}],
            "messages.0.content.1.type",
            "'video'",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_result", "tool_use_id": "x", "content": "y"}],
                },
            ],
            "messages.1.content.0.type",
            "not allowed in assistant messages",
        ),
        ([{"role": "user", "content": [{"text": "no type"}]}], "messages.0.content.0.type", ""),
        ([{"role": "wizard", "content": "hi"}], "messages.0.role", ""),
    ],
    ids=["unknown-block", "misplaced-block", "untyped-block", "bad-role"],
)
def test_a_bad_block_is_a_400_naming_its_path(
    client: anthropic.Anthropic, messages: Any, path: str, says: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=LOCAL, max_tokens=4, messages=messages)
    body: Any = info.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(path + ":")
    assert says in body["error"]["message"]
    # count_tokens validates the same way.
    with pytest.raises(anthropic.BadRequestError) as counted:
        client.messages.count_tokens(model=LOCAL, messages=messages)
    assert counted.value.api_message == body["error"]["message"]


def test_a_missing_or_unknown_key_is_401(server: RunningServer) -> None:
    anonymous = httpx.post(
        server.base_url + "/v1/messages",
        json={"model": LOCAL, "max_tokens": 4, "messages": QUESTION},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    with (
        sdk(server, api_key="sk-unknown") as client,
        pytest.raises(anthropic.AuthenticationError) as info,
    ):
        client.messages.count_tokens(model=LOCAL, messages=QUESTION)
    assert info.value.type == "authentication_error"


def test_an_unknown_model_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="acme/nope", max_tokens=4, messages=QUESTION)
    body: Any = info.value.body
    assert body["error"]["type"] == "not_found_error"
    assert "acme/nope" in body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("acme/nope")


def test_a_prompt_too_long_for_the_model_uses_anthropics_wording(
    client: anthropic.Anthropic,
) -> None:
    huge: Any = [{"role": "user", "content": "hello " * 33_000}]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=LOCAL, max_tokens=4, messages=huge)
    body: Any = info.value.body
    assert body["error"]["type"] == "invalid_request_error"
    # Claude Code parses exactly this wording.
    found = re.fullmatch(
        r"prompt is too long: (\d+) tokens > 32768 maximum", body["error"]["message"]
    )
    assert found is not None, body["error"]["message"]
    assert (
        int(found.group(1)) == client.messages.count_tokens(model=LOCAL, messages=huge).input_tokens
    )


WEATHER: Any = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_use_round_trip_on_the_default_model(
    client: anthropic.Anthropic, stream: bool
) -> None:
    question: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    arguments: Any = {
        "model": LOCAL,
        "max_tokens": 64,
        "messages": question,
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
    }
    if stream:
        with client.messages.stream(**arguments) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(**arguments)
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    assert isinstance(uses[0].input["city"], str)  # type: ignore[index]
    follow_up: Any = [
        *question,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 degrees"}
            ],
        },
    ]
    answer = client.messages.create(
        model=LOCAL,
        max_tokens=48,
        messages=follow_up,
        tools=[WEATHER],
        tool_choice={"type": "auto"},
    )
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert answer.content
    # Anthropic counts the prompt read from the cache apart (whole chunks of the first turn).
    read = answer.usage.cache_read_input_tokens or 0
    assert answer.usage.input_tokens + read > first.usage.input_tokens
