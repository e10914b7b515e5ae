"""Hostile input, end to end (issue 13): bad input is a quick 4xx naming the field, in the
door's error shape, never a 500; upstream failures reach clients as typed errors with a
generic message and the request id, their details only in the server log and for admins;
values a client sent come back in error messages clipped.

One real server (SQLite) in front of the scripted upstream, and one on PostgreSQL for the
bounds its 32- and 64-bit columns set (skipped without a local server); raw HTTP (httpx),
since the SDKs refuse to send most of what is sent here.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.server import RunningServer, free_port
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script
from tests.support.postgres import postgres_url_or_skip

pytestmark = pytest.mark.e2e

MODEL = "qwen/qwen3-8b"
DEAD = "qwen/qwen3-coder"  # its only backend refuses connections
SLOW = "qwen/qwen3-30b-a3b"  # its backend times out after 0.3 s


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(models=("Qwen/Qwen3-8B",))
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("hostile")
    config = data_dir / "modelport.toml"
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config.write_text(
        f"""
[[models]]
id = "local/smollm2-135m-instruct"
backends = []

[[models]]
id = "{MODEL}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{upstream.base_url}"
  dialect = "vllm"
  upstream_model = "Qwen/Qwen3-8B"

[[models]]
id = "{DEAD}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{dead}"

[[models]]
id = "{SLOW}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{upstream.base_url}"
  timeout = 0.3
"""
    )
    with RunningServer(data_dir, config=config, env={"MODELPORT_KEY_CACHE_TTL": "0"}) as server:
        yield server


@pytest.fixture(scope="module")
def http(gateway: RunningServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def user_key(http: httpx.Client) -> str:
    """A user's key (not an admin's), with money to spend."""
    name = f"user-{uuid.uuid4().hex[:8]}"
    made = http.post("/api/v1/admin/users", json={"name": name, "balance": "100"})
    assert made.status_code == 201, made.text
    key = http.post("/api/v1/admin/keys", json={"name": "k", "user": name})
    assert key.status_code == 201, key.text
    secret: str = key.json()["secret"]
    return secret


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def message(**fields: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


def raw(body: dict[str, Any]) -> bytes:
    """JSON with integers of any size (the standard library writes them as they are), and
    `nested()` written out as deep as it is."""
    return json.dumps(body).replace(json.dumps(NESTED), NESTED_JSON).encode()


def openai_error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    """The OpenAI-shaped error of `response`, checked."""
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def anthropic_error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["type"] == "error", body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "message"}, error
    return error


# ------------------------------------------------------------------ bodies that are not JSON

BAD_UTF8 = (
    b'{"model":"qwen/qwen3-8b","max_tokens":5,"messages":[{"role":"user","content":"\xff\xfe"}]}'
)
DEEP = b'{"model":"qwen/qwen3-8b","max_tokens":5,"messages":' + b"[" * 100_000 + b"]" * 100_000
DEEP += b"}"


@pytest.mark.parametrize(("body", "says"), [(BAD_UTF8, "UTF-8"), (DEEP, "nested too deeply")])
def test_undecodable_bodies_are_400s_on_every_door(
    http: httpx.Client, body: bytes, says: str
) -> None:
    error = openai_error(http.post("/v1/chat/completions", content=body))
    assert error["type"] == "invalid_request_error" and says in error["message"]
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        refused = anthropic_error(http.post(path, content=body))
        assert refused["type"] == "invalid_request_error" and says in refused["message"]
    admin = openai_error(http.post("/api/v1/admin/users", content=body))
    assert says in admin["message"]


# A JSON value nested as deep as the decoder follows, where the request keeps free-form JSON
# (written by `raw`: the standard library's encoder does not go that deep).
NEST = 990
NESTED = "(nested)"
NESTED_JSON = '{"a":' * NEST + "{}" + "}" * NEST


def nested() -> Any:
    return NESTED


def tool(parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": [tool(nested())]},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": nested()}}},
        {"chat_template_kwargs": nested()},
        {"extra_field": nested()},
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": nested()}}],
                },
                {"role": "tool", "tool_call_id": "c", "content": "ok"},
            ]
        },
    ],
    ids=["tool-schema", "response-format", "template-kwargs", "extension", "tool-arguments"],
)
def test_deep_free_form_json_is_never_a_500_on_the_openai_door(
    http: httpx.Client, fields: dict[str, Any]
) -> None:
    response = http.post("/v1/chat/completions", content=raw(chat(**fields)))
    assert response.status_code < 500, response.text[:500]


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": [{"name": "f", "input_schema": nested()}]},
        {"output_config": {"format": {"type": "json_schema", "schema": nested()}}},
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": nested()}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
            ]
        },
    ],
    ids=["tool-schema", "output-format", "tool-input"],
)
def test_deep_free_form_json_is_never_a_500_on_the_anthropic_door(
    http: httpx.Client, fields: dict[str, Any]
) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = http.post(path, content=raw(message(**fields)))
        assert response.status_code < 500, response.text[:500]


# ------------------------------------------------------------------ integers beyond 64 bits

HUGE = (2**63, 2**64, 10**30)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        *[({"max_tokens": value}, "max_tokens") for value in HUGE],
        *[({"max_completion_tokens": value}, "max_completion_tokens") for value in HUGE],
        ({"seed": 2**64}, "seed"),
        ({"seed": -(2**64)}, "seed"),
        ({"top_k": 2**63}, "top_k"),
        ({"n": 2**64}, "n"),
        ({"logprobs": True, "top_logprobs": 2**64}, "top_logprobs"),
        ({"reasoning": {"max_tokens": 2**64}}, "reasoning.max_tokens"),
        ({"logit_bias": {str(2**64): 1}}, "logit_bias"),
        ({"logit_bias": {"9" * 5000: 1}}, "logit_bias"),
        ({"temperature": 1e400}, "temperature"),
    ],
)
def test_integers_out_of_range_are_400s_naming_the_field_on_the_openai_door(
    http: httpx.Client, fields: dict[str, Any], param: str
) -> None:
    body = raw(chat(**fields)).replace(b"Infinity", b"1e400")
    error = openai_error(http.post("/v1/chat/completions", content=body))
    assert error["param"] == param, error
    assert param in error["message"]
    assert len(error["message"]) < 300


def test_a_huge_max_tokens_within_64_bits_is_clamped_not_refused(http: httpx.Client) -> None:
    for value in (2**62, 2**63 - 1):
        answered = http.post("/v1/chat/completions", content=raw(chat(max_tokens=value)))
        assert answered.status_code == 200, answered.text[:500]
        answered = http.post("/v1/messages", content=raw(message(max_tokens=value)))
        assert answered.status_code == 200, answered.text[:500]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        *[({"max_tokens": value}, "max_tokens") for value in HUGE],
        ({"top_k": 2**63}, "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2**64}}, "thinking.budget_tokens"),
        ({"temperature": 1e400}, "temperature"),
    ],
)
def test_integers_out_of_range_are_400s_naming_the_field_on_the_anthropic_door(
    http: httpx.Client, fields: dict[str, Any], param: str
) -> None:
    body = raw(message(**fields)).replace(b"Infinity", b"1e400")
    error = anthropic_error(http.post("/v1/messages", content=body))
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(param), error


# ------------------------------------------------------------------ the admin API


@pytest.mark.parametrize("amount", ["1e309", "1e20", str(2**63 - 1), "1e400", "-1e400"])
@pytest.mark.parametrize("as_number", [False, True])
def test_top_ups_beyond_what_a_balance_holds_are_400s(
    http: httpx.Client, amount: str, as_number: bool
) -> None:
    name = f"rich-{uuid.uuid4().hex[:8]}"
    assert http.post("/api/v1/admin/users", json={"name": name}).status_code == 201
    value = amount.encode() if as_number else json.dumps(amount).encode()
    body = b'{"amount": ' + value + b', "reason": "test"}'
    error = openai_error(http.post(f"/api/v1/admin/users/{name}/topup", content=body))
    assert error["param"] == "amount", error
    body = b'{"name": "x' + uuid.uuid4().hex.encode() + b'", "balance": ' + value + b"}"
    error = openai_error(http.post("/api/v1/admin/users", content=body))
    assert error["param"] == "balance", error


@pytest.mark.parametrize(
    ("field", "value"),
    [("rpm", 2**70), ("tpm", 2**70), ("rpm", 2**63 - 1), ("limit", "1e400"), ("limit", 1e20)],
)
def test_key_limits_beyond_range_are_400s(http: httpx.Client, field: str, value: Any) -> None:
    body = {"name": "k", "user": "nobody-" + uuid.uuid4().hex[:8], field: value}
    error = openai_error(http.post("/api/v1/admin/keys", content=raw(body)))
    assert error["param"] == field, error


@pytest.mark.parametrize(
    "query",
    ["key=" + str(10**23), "key=" + "9" * 60_000, "key=-1", "key=1e3", "key=%C2%B2"],
)
def test_numeric_query_parameters_beyond_range_are_400s(http: httpx.Client, query: str) -> None:
    error = openai_error(http.get("/api/v1/admin/usage?" + query))
    assert error["param"] == "key"
    assert len(error["message"]) < 300


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/admin/keys", {"name": "k", "expires_at": "9999-12-31T23:59:59-14:00"}),
        ("/api/v1/admin/keys", {"name": "k", "expires_at": "0001-01-01T00:00:00+14:00"}),
        ("/api/v1/admin/keys", {"name": "k", "expires_at": 10**30}),
        ("/api/v1/admin/keys", {"name": "k", "user": 5}),
        ("/api/v1/admin/keys", {"name": "k", "user": ["a"]}),
        ("/api/v1/admin/keys", {"name": "k", "role": {"a": 1}}),
        ("/api/v1/admin/keys", {"name": "k", "models": ["m" * 100_000]}),
        ("/api/v1/admin/keys", {"name": "k", "limit": True}),
        ("/api/v1/admin/keys", {"name": "k", "limit": [1]}),
        ("/api/v1/admin/keys", {"name": ["k"]}),
        ("/api/v1/admin/users", {"name": "n", "balance": None}),
        ("/api/v1/admin/users", [1, 2]),
    ],
)
def test_the_admin_api_refuses_values_of_the_wrong_kind(
    http: httpx.Client, path: str, body: Any
) -> None:
    response = http.post(path, content=raw(body))
    assert 400 <= response.status_code < 500, response.text[:300]
    assert len(response.content) < 2500


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_usage_since_a_time_without_a_utc_time_is_a_400(http: httpx.Client, when: str) -> None:
    error = openai_error(http.get("/api/v1/usage", params={"since": when}))
    assert error["param"] == "since"


def test_revoking_a_key_by_an_id_beyond_range_is_a_400(http: httpx.Client) -> None:
    error = openai_error(http.delete(f"/api/v1/admin/keys/{10**23}"))
    assert error["param"] == "id"


# ------------------------------------------------------------------ echoes are clipped


def test_a_megabyte_model_name_is_not_echoed_back(http: httpx.Client) -> None:
    name = "m" * 1_000_000
    error = openai_error(http.post("/v1/chat/completions", json=chat(model=name)), 404)
    assert len(error["message"]) < 500 and "…" in error["message"]
    refused = anthropic_error(http.post("/v1/messages", json=message(model=name)), 404)
    assert len(refused["message"]) < 1000
    # However a message is worded, what a response repeats is bounded.
    claude = anthropic_error(http.post("/v1/messages", json=message(model="claude-" + name)), 404)
    assert len(claude["message"]) <= 2001


def test_echoes_in_the_admin_api_are_clipped(http: httpx.Client) -> None:
    long = "x" * 60_000
    for response in (
        http.get(f"/api/v1/admin/users/{long}"),
        http.get(f"/api/v1/generation?id={long}"),
        http.get(f"/api/v1/admin/usage?since={long}"),
        http.post("/api/v1/admin/users", json={"name": "n" + uuid.uuid4().hex, "balance": long}),
        http.get(f"/api/v1/{long}"),
    ):
        assert 400 <= response.status_code < 500, response.text[:300]
        assert len(response.content) < 1000, response.text[:300]


def test_a_tool_choice_naming_a_huge_function_is_clipped(http: httpx.Client) -> None:
    choice = {"type": "function", "function": {"name": "f" * 100_000}}
    error = openai_error(http.post("/v1/chat/completions", json=chat(tool_choice=choice)))
    assert len(error["message"]) < 500


# ------------------------------------------------------------------ upstream failures

SECRET_DETAIL = "internal boom at /srv/vllm/engine.py line 42"


def ask(marker: str, model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"{marker} please"}]}


def request_id_in(message: str) -> str:
    found = re.search(r"request id (\S+?)\)?$", message)
    assert found, message
    return found.group(1)


def test_an_upstream_failure_reaches_the_client_without_internal_details(
    http: httpx.Client, upstream: FakeOpenAIUpstream, gateway: RunningServer
) -> None:
    marker = "BOOM-" + uuid.uuid4().hex[:6]
    upstream.on(marker, Script(status=500, error_body={"error": {"message": SECRET_DETAIL}}))
    error = openai_error(http.post("/v1/chat/completions", json=ask(marker)), 502)
    assert error["type"] == "upstream_error"
    assert "HTTP 500" in error["message"]
    assert "/srv" not in error["message"] and "127.0.0.1" not in error["message"]
    request_id = request_id_in(error["message"])
    lines = [line for line in gateway.output().splitlines() if request_id in line]
    assert len(lines) == 1 and SECRET_DETAIL in lines[0] and upstream.base_url in lines[0]

    refused = anthropic_error(
        http.post("/v1/messages", json={**ask(marker), "max_tokens": 10}), 502
    )
    assert refused["type"] == "api_error"
    assert "/srv" not in refused["message"] and "127.0.0.1" not in refused["message"]


def test_an_error_inside_a_stream_reaches_the_client_without_internal_details(
    http: httpx.Client, upstream: FakeOpenAIUpstream
) -> None:
    marker = "MIDBOOM-" + uuid.uuid4().hex[:6]
    crash = {"error": {"message": SECRET_DETAIL, "type": "server_error", "code": 500}}
    upstream.on(marker, Script(text=["a", "b", "c"], error_after=2, stream_error=crash))
    streamed = http.post("/v1/chat/completions", json={**ask(marker), "stream": True})
    assert streamed.status_code == 200
    assert "/srv" not in streamed.text and "request id" in streamed.text
    assert "HTTP 500" in streamed.text


@pytest.mark.parametrize(
    ("detail", "kept"),
    [
        ("temperature must be at most 2", True),
        ("invalid value at /srv/app/validate.py:12", False),
        ("see http://10.9.8.7:8000/docs", False),
    ],
)
def test_an_upstream_refusal_the_client_caused_keeps_its_message_unless_it_leaks(
    http: httpx.Client, upstream: FakeOpenAIUpstream, detail: str, kept: bool
) -> None:
    marker = "REFUSE-" + uuid.uuid4().hex[:6]
    upstream.on(marker, Script(status=400, error_body={"error": {"message": detail}}))
    error = openai_error(http.post("/v1/chat/completions", json=ask(marker)), 400)
    assert (detail in error["message"]) is kept, error
    assert "HTTP 400" in error["message"] or kept


def test_an_unreachable_upstream_does_not_show_its_address(http: httpx.Client) -> None:
    error = openai_error(http.post("/v1/chat/completions", json=ask("X", DEAD)), 502)
    assert "127.0.0.1" not in error["message"] and "http" not in error["message"]
    assert "request id" in error["message"]


def test_an_upstream_timeout_is_a_typed_504(
    http: httpx.Client, upstream: FakeOpenAIUpstream
) -> None:
    marker = "SLOW-" + uuid.uuid4().hex[:6]
    upstream.on(marker, Script(first_byte_delay=2.0))
    error = openai_error(http.post("/v1/chat/completions", json=ask(marker, SLOW)), 504)
    assert error["type"] == "timeout_error"
    assert "timed out" in error["message"] and "127.0.0.1" not in error["message"]


def test_the_backend_of_a_generation_is_shown_to_admins_only(
    gateway: RunningServer, http: httpx.Client, user_key: str
) -> None:
    headers = {"Authorization": f"Bearer {user_key}"}
    answer = http.post("/v1/chat/completions", json=ask("HELLO"), headers=headers)
    assert answer.status_code == 200, answer.text
    generation_id = answer.json()["id"]
    mine = http.get(f"/api/v1/generation?id={generation_id}", headers=headers)
    assert mine.status_code == 200
    assert mine.json()["data"]["backend"] is None and "127.0.0.1" not in mine.text
    admin = http.get(f"/api/v1/generation?id={generation_id}")
    assert admin.json()["data"]["backend"].startswith("openai_compat:127.0.0.1:")


# ------------------------------------------------------------------ PostgreSQL's 64-bit columns


@pytest.fixture(scope="module")
def pg_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[RunningServer]:
    """The gateway on PostgreSQL, whose BIGINT columns refuse what SQLite would take."""
    data_dir: Path = tmp_path_factory.mktemp("hostile-pg")
    config = data_dir / "modelport.toml"
    config.write_text(
        f"""
[[models]]
id = "local/smollm2-135m-instruct"
backends = []

[[models]]
id = "{MODEL}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{upstream.base_url}"
  dialect = "vllm"
  upstream_model = "Qwen/Qwen3-8B"
"""
    )
    with postgres_url_or_skip() as url:
        env = {"MODELPORT_KEY_CACHE_TTL": "0", "MODELPORT_DATABASE_URL": url}
        with RunningServer(data_dir, config=config, env=env) as server:
            yield server


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/v1/chat/completions", chat(max_tokens=2**62)),
        ("/v1/chat/completions", chat(max_completion_tokens=2**63 - 1)),
        ("/v1/chat/completions", chat(reasoning={"max_tokens": 2**62}, max_tokens=2**62)),
        ("/v1/messages", message(max_tokens=2**62)),
        ("/v1/messages", message(thinking={"type": "enabled", "budget_tokens": 2**62})),
    ],
)
def test_huge_limits_within_64_bits_are_served_on_postgresql(
    pg_gateway: RunningServer, path: str, fields: dict[str, Any]
) -> None:
    with httpx.Client(base_url=pg_gateway.base_url, timeout=30) as admin:
        admin.headers["Authorization"] = f"Bearer {pg_gateway.admin_key}"
        name = f"user-{uuid.uuid4().hex[:8]}"
        assert admin.post("/api/v1/admin/users", json={"name": name, "balance": "100"}).is_success
        secret = admin.post("/api/v1/admin/keys", json={"name": "k", "user": name}).json()["secret"]
        for key in (secret, pg_gateway.admin_key):  # prepaid (a hold) and postpaid
            answered = admin.post(
                path, content=raw(fields), headers={"Authorization": f"Bearer {key}"}
            )
            assert answered.status_code == 200, answered.text[:500]
        usage = admin.get(f"/api/v1/admin/usage?user={name}")
        assert usage.status_code == 200 and usage.json()["data"][0]["requests"] == 1


def test_numbers_at_the_edge_of_64_bits_are_answered_on_postgresql(
    pg_gateway: RunningServer,
) -> None:
    headers = {"Authorization": f"Bearer {pg_gateway.admin_key}"}
    with httpx.Client(base_url=pg_gateway.base_url, headers=headers, timeout=30) as admin:
        # Key ids are 32-bit INTEGER columns on PostgreSQL.
        top = str(2**31 - 1)
        assert admin.get(f"/api/v1/admin/usage?key={top}").status_code == 200
        assert admin.delete(f"/api/v1/admin/keys/{top}").status_code == 404
        for beyond in (2**31, 2**63 - 1):
            error = openai_error(admin.get(f"/api/v1/admin/usage?key={beyond}"))
            assert error["param"] == "key"
            assert openai_error(admin.delete(f"/api/v1/admin/keys/{beyond}"))["param"] == "id"
        top = str(2**63 - 1)
        name = f"edge-{uuid.uuid4().hex[:8]}"
        assert admin.post("/api/v1/admin/users", json={"name": name}).status_code == 201
        for amount in ("1e20", top, "1e400"):
            body = {"amount": amount, "reason": "test"}
            refused = admin.post(f"/api/v1/admin/users/{name}/topup", json=body)
            assert openai_error(refused)["param"] == "amount"
        made = admin.post("/api/v1/admin/keys", json={"name": "k", "user": name, "rpm": 2**62})
        assert openai_error(made)["param"] == "rpm"
