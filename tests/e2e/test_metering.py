"""The metering stage end to end (services/metering.py, docs/billing.md): every request is
settled once and at once, its hold is the clamped worst case, and what an upstream reports is
believed only where it fits what the gateway relayed.

One real server (SQLite) in front of a scripted upstream that can also misbehave: answer a
stream to a request for one JSON body, cut a JSON body short, report absurd usage. Each test
makes its own users. qwen/qwen3-8b costs 500 nano-yuan per prompt token and 1,750 per
completion token; the gateway counts with Qwen3's tokenizer, which this process loads too.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, RecordedRequest, Script, ToolCallScript

from modelport.tokenizers.qwen3 import qwen3_tokenizer

pytestmark = pytest.mark.e2e

MODEL = "qwen/qwen3-8b"
CODER = "qwen/qwen3-coder"
PRICES = {MODEL: (500, 1750), CODER: (3750, 15000)}  # nano-yuan per prompt, output token
NANO = 10**9
THE = [" the"] * 200  # 200 single-token pieces

CONFIG = """\
[[models]]
id = "local/smollm2-135m-instruct"
backends = []
{entries}"""
ENTRY = """
[[models]]
id = "{model}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{url}"
  dialect = "generic"
  upstream_model = "{upstream_model}"
  # Failures are this module's subject, one after another: the circuit must not open.
  circuit_failures = 0
"""
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def cost_of(prompt: int, completion: int, model: str = MODEL) -> int:
    input_nano, output_nano = PRICES[model]
    return prompt * input_nano + completion * output_nano


def tokens(text: str) -> int:
    tokenizer = qwen3_tokenizer()
    assert tokenizer is not None
    return tokenizer.count(text)


@dataclass(frozen=True)
class Hostile(Script):
    """A script the plain fake cannot play: `as_stream` answers SSE even to a request for one
    JSON body (so drop_after / error_after apply to it); `truncate_json` sends the first half
    of the JSON body and closes the connection."""

    as_stream: bool = False
    truncate_json: bool = False


class HostileUpstream(FakeOpenAIUpstream):
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body: Any = json.loads(await request.read())
        script = self._script_for(body)
        if not isinstance(script, Hostile) or body.get("stream"):
            return await super()._chat(request)  # the body is cached: read again there
        record = RecordedRequest(request.method, request.path, dict(request.headers), body)
        with self._lock:
            self.requests.append(record)
        if script.as_stream:
            return await self._stream(request, script, body, record)
        whole = json.dumps(self._completion(script, body)).encode()
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": str(len(whole))}
        )
        await response.prepare(request)
        await response.write(whole[: len(whole) // 2])
        assert request.transport is not None
        request.transport.close()
        record.completed = True
        return response


@dataclass(frozen=True)
class User:
    name: str
    id: int
    secret: str


@dataclass
class Gateway:
    server: RunningServer
    upstream: HostileUpstream
    http: httpx.Client
    _markers: Iterator[int] = field(default_factory=itertools.count)

    def script(self, script: Script) -> str:
        marker = f"mk{next(self._markers):04d}{uuid.uuid4().hex[:6]}"
        self.upstream.on(marker, script)
        return marker

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.call(self.server.admin_key, method, path, body)

    def call(self, secret: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.request(
            method, path, json=body, headers={"Authorization": f"Bearer {secret}"}
        )

    def new_user(self, balance_nano: int) -> User:
        name = f"user-{uuid.uuid4().hex[:10]}"
        balance = str(Decimal(balance_nano) / NANO)
        created = self.admin("POST", "/api/v1/admin/users", {"name": name, "balance": balance})
        assert created.status_code == 201, created.text
        issued = self.admin("POST", "/api/v1/admin/keys", {"name": f"{name}-key", "user": name})
        assert issued.status_code == 201, issued.text
        return User(name, created.json()["id"], issued.json()["secret"])

    def topup(self, user: User, nano: int) -> None:
        if nano:
            amount = str(Decimal(nano) / NANO)
            body = {"amount": amount, "reason": "refund of a failed request"}
            answer = self.admin("POST", f"/api/v1/admin/users/{user.name}/topup", body)
            assert answer.status_code == 200, answer.text

    def balance(self, user: User) -> int:
        me = self.call(user.secret, "GET", "/api/v1/me")
        assert me.status_code == 200, me.text
        nano: int = me.json()["balance_nano"]
        return nano

    def ledger(self, user: User) -> list[dict[str, Any]]:
        answer = self.admin("GET", f"/api/v1/admin/users/{user.name}/ledger")
        assert answer.status_code == 200, answer.text
        entries: list[dict[str, Any]] = answer.json()["data"]
        return entries

    def rows(self, user: User) -> list[sqlite3.Row]:
        """The user's usage rows, oldest first (reading the account API first flushes the
        write-behind)."""
        self.call(user.secret, "GET", "/api/v1/me")
        path = self.server.data_dir / "modelport.db"
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            sql = "SELECT * FROM usage WHERE account_id = ? ORDER BY created_at"
            return db.execute(sql, (user.id,)).fetchall()

    def generation(self, user: User, request_id: str) -> dict[str, Any]:
        answer = self.call(user.secret, "GET", f"/api/v1/generation?id={request_id}")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()["data"]
        return data

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """The prompt of an OpenAI-door `body` as the gateway counts it (Qwen3's tokenizer,
        thinking on as OpenAI clients get it), from the count_tokens endpoint."""
        counted = self.http.post(
            "/v1/messages/count_tokens",
            json={
                "model": body["model"],
                "messages": body["messages"],
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            headers={"x-api-key": self.server.admin_key, "anthropic-version": "2023-06-01"},
        )
        assert counted.status_code == 200, counted.text
        counted_tokens: int = counted.json()["input_tokens"]
        return counted_tokens

    def hold_of(self, body: dict[str, Any], path: str = "/v1/chat/completions") -> int:
        """The hold of exactly this request, from the refusal of a user with nothing."""
        probe = self.new_user(0)
        headers = {"Authorization": f"Bearer {probe.secret}", "x-api-key": probe.secret}
        refused = self.http.post(path, json=body, headers=headers)
        assert refused.status_code == 402, refused.text
        return refused_amount(refused)

    def assert_books_balance(self, user: User) -> None:
        """docs/billing.md: ledger charges == the usage rows' costs, the ledger sums to the
        balance, and a prepaid balance is never below zero."""
        ledger = self.ledger(user)
        charges = sum(e["amount_nano"] for e in ledger if e["kind"] == "charge")
        assert charges == -sum(row["cost_nano"] for row in self.rows(user))
        balance = self.balance(user)
        assert sum(e["amount_nano"] for e in ledger) == balance >= 0


def refused_amount(refused: httpx.Response) -> int:
    message = json.dumps(refused.json())
    found = re.search(r"may cost up to ([0-9.]+) CNY", message)
    assert found is not None, message
    return int(Decimal(found.group(1)) * NANO)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstream = HostileUpstream(models=("Qwen/Qwen3-8B", "Qwen/Qwen3-Coder-30B-A3B-Instruct"))
    upstream.start_in_thread()
    try:
        data_dir: Path = tmp_path_factory.mktemp("metering")
        entries = ENTRY.format(model=MODEL, url=upstream.base_url, upstream_model="Qwen/Qwen3-8B")
        entries += ENTRY.format(
            model=CODER, url=upstream.base_url, upstream_model="Qwen/Qwen3-Coder-30B-A3B-Instruct"
        )
        config = data_dir / "modelport.toml"
        config.write_text(CONFIG.format(entries=entries))
        with (
            RunningServer(data_dir, config=config) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as http,
        ):
            yield Gateway(server, upstream, http)
    finally:
        upstream.stop_thread()


def chat_body(marker: str, max_tokens: int, *, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"{marker}: say something"}],
        "max_tokens": max_tokens,
        **extra,
    }


def post(gateway: Gateway, user: User, body: dict[str, Any]) -> httpx.Response:
    return gateway.call(user.secret, "POST", "/v1/chat/completions", body)


def sse_events(text: str) -> list[Any]:
    events = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line.removeprefix("data: ")))
    return events


def streamed(gateway: Gateway, user: User, body: dict[str, Any]) -> tuple[str, str | None, Any]:
    """Stream `body` (with usage): the relayed content, the finish reason, the usage."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    answer = post(gateway, user, body)
    assert answer.status_code == 200, answer.text
    chunks = sse_events(answer.text)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    usage = next((c["usage"] for c in chunks if c.get("usage")), None)
    return content, next((f for f in finishes if f), None), usage


def complete(
    gateway: Gateway, user: User, body: dict[str, Any], stream: bool
) -> tuple[str, str | None, Any]:
    """One answer, streamed or whole: the content, the finish reason, the usage."""
    if stream:
        return streamed(gateway, user, body)
    answer = post(gateway, user, body)
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    return choice["message"]["content"] or "", choice["finish_reason"], answer.json()["usage"]


# --------------------------------------------------------------------------- 1. failures settle

FAILURES = {
    "unknown-tool": Script(tool_calls=[ToolCallScript("launch_rockets", ['{"n": 1}'], id="c1")]),
    "bad-arguments": Script(
        tool_calls=[ToolCallScript("get_weather", ['{"town": "Oslo"}'], id="c1")]
    ),
    "dropped-stream": Hostile(text=[f" word{i}" for i in range(20)], drop_after=6, as_stream=True),
    "error-chunk": Hostile(text=[f" word{i}" for i in range(20)], error_after=6, as_stream=True),
    "malformed-sse": Hostile(
        text=[f" word{i}" for i in range(20)],
        error_after=6,
        stream_error="{not json",
        as_stream=True,
    ),
    "truncated-json": Hostile(text=["Hello", " there"], usage=(20, 2), truncate_json=True),
}


@pytest.mark.parametrize(
    ("failure", "model"),
    [(name, MODEL) for name in FAILURES] + [("unknown-tool", CODER), ("bad-arguments", CODER)],
)
def test_a_whole_request_that_fails_is_settled_before_its_error_response(
    gateway: Gateway, failure: str, model: str
) -> None:
    marker = gateway.script(FAILURES[failure])
    body = chat_body(marker, 64, model=model, tools=[WEATHER])
    hold = gateway.hold_of(body)
    user = gateway.new_user(hold)  # exactly one request's worth
    opening = hold
    for attempt in (1, 2):  # a stuck hold would refuse the second attempt (402)
        failed = post(gateway, user, body)
        assert failed.status_code >= 500, failed.text
        if failure in ("unknown-tool", "bad-arguments"):
            assert (failed.status_code, failed.json()["error"]["code"]) == (
                502,
                "malformed_tool_call",
            )
        # Right after the error response: the row is there, and the balance is final.
        rows = gateway.rows(user)
        assert len(rows) == attempt
        row = rows[-1]
        assert (row["status"], row["streamed"], row["cancelled"]) == ("error", 0, 0)
        assert row["error_code"] is not None
        charged = cost_of(row["prompt_tokens"], row["completion_tokens"], model)
        assert row["cost_nano"] == (charged if row["completion_tokens"] else 0)
        assert gateway.generation(user, row["request_id"])["status"] == "error"
        assert gateway.balance(user) == opening - sum(r["cost_nano"] for r in rows)
        gateway.topup(user, row["cost_nano"])  # back to exactly one request's worth
        opening += row["cost_nano"]
    gateway.upstream.on(marker, Script(text=["fine"], usage=(20, 3)))
    answered = post(gateway, user, body)
    assert answered.status_code == 200, answered.text
    assert gateway.balance(user) == opening - sum(r["cost_nano"] for r in gateway.rows(user))
    gateway.assert_books_balance(user)


@pytest.mark.parametrize("failure", ["dropped-stream", "error-chunk", "malformed-sse"])
def test_a_stream_that_fails_is_settled_before_it_ends(gateway: Gateway, failure: str) -> None:
    marker = gateway.script(FAILURES[failure])
    body = chat_body(marker, 64)
    hold = gateway.hold_of({**body, "stream": True})
    user = gateway.new_user(hold)
    opening = hold
    for attempt in (1, 2):
        content, finish, _ = streamed(gateway, user, body)
        assert content.startswith(" word0") and finish != "stop"
        rows = gateway.rows(user)
        assert len(rows) == attempt
        row = rows[-1]
        assert (row["status"], row["streamed"]) == ("error", 1)
        assert row["completion_tokens"] == tokens(content)
        assert row["cost_nano"] == cost_of(row["prompt_tokens"], row["completion_tokens"]) > 0
        assert gateway.balance(user) == opening - sum(r["cost_nano"] for r in rows)
        gateway.topup(user, row["cost_nano"])
        opening += row["cost_nano"]
    gateway.assert_books_balance(user)


# --------------------------------------------------------------------------- 2. the clamped hold


def test_a_huge_max_tokens_holds_only_what_the_context_leaves(gateway: Gateway) -> None:
    [card] = [m for m in gateway.http.get("/v1/models").json()["data"] if m["id"] == MODEL]
    context = card["context_length"]
    marker = gateway.script(Script(text=["Hello", " there"], usage=(40, 7)))
    body = chat_body(marker, 1_000_000_000)
    prompt = gateway.prompt_tokens(body)
    worst = cost_of(prompt, context - prompt)

    poor = gateway.new_user(worst - 1)  # short by one nano-yuan of the clamped worst case
    refused = post(gateway, poor, body)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "insufficient_balance"
    assert refused_amount(refused) == worst
    assert gateway.rows(poor) == [] and gateway.balance(poor) == worst - 1

    for opening in (worst, 100 * NANO):  # just enough, and plenty
        user = gateway.new_user(opening)
        answered = post(gateway, user, body)
        assert answered.status_code == 200, answered.text
        usage = answered.json()["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (40, 7)
        assert gateway.balance(user) == opening - cost_of(40, 7)
        gateway.assert_books_balance(user)


# --------------------------------------------------------------------------- 3. hostile upstreams


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_upstream_that_overshoots_max_tokens_is_cut_there(
    gateway: Gateway, stream: bool
) -> None:
    user = gateway.new_user(NANO)
    marker = gateway.script(Script(text=THE, usage=(20, 200), finish_reason="length"))
    body = chat_body(marker, 1)
    content, finish, usage = complete(gateway, user, body, stream)
    assert tokens(content) <= 1
    assert finish == "length"
    assert usage["completion_tokens"] <= 1
    [row] = gateway.rows(user)
    assert row["completion_tokens"] <= 1 and row["finish_reason"] == "length"
    assert row["cost_nano"] == cost_of(row["prompt_tokens"], row["completion_tokens"])
    assert "output_cut_at_limit" in (row["anomaly"] or "")
    gateway.assert_books_balance(user)


def test_inflated_usage_is_billed_from_the_gateways_own_count(gateway: Gateway) -> None:
    user = gateway.new_user(NANO)
    marker = gateway.script(Script(text=["Hello", " there", "!"], usage=(1_000_000, 1_000_000)))
    body = chat_body(marker, 64)
    prompt = gateway.prompt_tokens(body)
    answer = post(gateway, user, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Hello there!"
    [row] = gateway.rows(user)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, tokens("Hello there!"))
    assert row["cost_nano"] == cost_of(prompt, tokens("Hello there!"))
    assert row["estimated"] == 0
    assert "prompt_implausible" in row["anomaly"] and "completion_above_limit" in row["anomaly"]
    data = gateway.generation(user, row["request_id"])
    assert data["anomaly"] == row["anomaly"] and data["estimated"] is False
    assert gateway.balance(user) == NANO - row["cost_nano"]
    gateway.assert_books_balance(user)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_zero_completion_usage_is_billed_for_the_relayed_text(
    gateway: Gateway, stream: bool
) -> None:
    user = gateway.new_user(NANO)
    words = [f" word{i}" for i in range(50)]
    marker = gateway.script(Script(text=words))
    body = chat_body(marker, 200)
    prompt = gateway.prompt_tokens(body)
    gateway.upstream.on(marker, Script(text=words, usage=(prompt, 0)))
    content, _, usage = complete(gateway, user, body, stream)
    assert content == "".join(words)
    assert usage["completion_tokens"] == tokens(content)
    [row] = gateway.rows(user)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, tokens(content))
    assert row["cost_nano"] == cost_of(prompt, tokens(content))
    assert "completion_implausible" in row["anomaly"]
    gateway.assert_books_balance(user)


@pytest.mark.parametrize(
    "usage", [(-5, 3), (20, -3), (-5, -3)], ids=["prompt", "completion", "both"]
)
def test_negative_usage_is_settled_from_the_gateways_counts(
    gateway: Gateway, usage: tuple[int, int]
) -> None:
    user = gateway.new_user(NANO)
    marker = gateway.script(Script(text=["Hello", " there"], usage=usage))
    body = chat_body(marker, 64)
    prompt = gateway.prompt_tokens(body)
    answer = post(gateway, user, body)
    assert answer.status_code == 200, answer.text
    [row] = gateway.rows(user)
    expected = (
        prompt if usage[0] < 0 else usage[0],
        tokens("Hello there") if usage[1] < 0 else usage[1],
    )
    assert (row["prompt_tokens"], row["completion_tokens"]) == expected
    assert answer.json()["usage"]["prompt_tokens"] == expected[0]
    assert row["cost_nano"] == cost_of(*expected)
    assert row["anomaly"]
    # The credit is released: the user can spend the rest of the balance.
    assert (
        post(
            gateway, user, chat_body(gateway.script(Script(text=["ok"], usage=(9, 1))), 8)
        ).status_code
        == 200
    )
    gateway.assert_books_balance(user)


def test_a_tiny_balance_is_charged_at_most_the_hold(gateway: Gateway) -> None:
    marker = gateway.script(Script(text=["x"]))
    body = chat_body(marker, 10)
    hold = gateway.hold_of(body)
    prompt = gateway.prompt_tokens(body)
    # Believable but above the hold: a prompt count the bounds allow, the whole limit used.
    gateway.upstream.on(marker, Script(text=["x"], usage=(prompt + 100, 10)))
    user = gateway.new_user(hold)
    answer = post(gateway, user, body)
    assert answer.status_code == 200, answer.text
    [row] = gateway.rows(user)
    assert row["cost_nano"] == hold < cost_of(prompt + 100, 10)
    assert "capped_at_hold" in row["anomaly"]
    assert gateway.balance(user) == 0
    gateway.assert_books_balance(user)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_tiny_balance_and_a_lying_upstream_never_go_below_zero(
    gateway: Gateway, stream: bool
) -> None:
    marker = gateway.script(Script(text=THE[:3], usage=(5_000_000, 5_000_000)))
    body = chat_body(marker, 4)
    hold = gateway.hold_of(body)
    user = gateway.new_user(hold)
    complete(gateway, user, body, stream)
    [row] = gateway.rows(user)
    assert 0 < row["cost_nano"] <= hold
    assert gateway.balance(user) == hold - row["cost_nano"] >= 0
    gateway.assert_books_balance(user)


# --------------------------------------------------------------------------- 4. no usage at all


def test_a_stream_without_usage_is_billed_exactly(gateway: Gateway) -> None:
    user = gateway.new_user(NANO)
    words = [f" word{i}" for i in range(30)]
    marker = gateway.script(Script(text=words, send_usage=False))
    body = chat_body(marker, 100)
    prompt = gateway.prompt_tokens(body)
    content, finish, usage = streamed(gateway, user, body)
    assert (content, finish) == ("".join(words), "stop")
    [row] = gateway.rows(user)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, tokens(content))
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, tokens(content))
    assert row["cost_nano"] == cost_of(prompt, tokens(content))
    assert row["estimated"] == 0
    gateway.assert_books_balance(user)


def test_a_long_stream_without_usage_is_cut_and_billed_at_max_tokens(gateway: Gateway) -> None:
    user = gateway.new_user(NANO)
    words = [f" word{i}" for i in range(60)]
    marker = gateway.script(Script(text=words, send_usage=False))
    body = chat_body(marker, 5)
    prompt = gateway.prompt_tokens(body)
    content, finish, usage = streamed(gateway, user, body)
    assert finish == "length"
    assert 0 < tokens(content) <= 5
    [row] = gateway.rows(user)
    assert row["prompt_tokens"] == prompt
    assert tokens(content) <= row["completion_tokens"] <= 5
    assert usage["completion_tokens"] == row["completion_tokens"]
    assert row["cost_nano"] == cost_of(prompt, row["completion_tokens"])
    gateway.assert_books_balance(user)


# --------------------------------------------------------------------------- 5. the Anthropic door


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_anthropic_door_cuts_an_overshooting_upstream(gateway: Gateway, stream: bool) -> None:
    user = gateway.new_user(NANO)
    marker = gateway.script(Script(text=THE, usage=(20, 200), finish_reason="length"))
    body = {
        "model": MODEL,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": f"{marker}: say something"}],
        "stream": stream,
    }
    headers = {"x-api-key": user.secret, "anthropic-version": "2023-06-01"}
    answer = gateway.http.post("/v1/messages", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    if stream:
        events = sse_events(answer.text)
        text = "".join(
            e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta"
        )
        delta = [e for e in events if e["type"] == "message_delta"][-1]
        stop, output = delta["delta"]["stop_reason"], delta["usage"]["output_tokens"]
    else:
        message = answer.json()
        text = "".join(b.get("text", "") for b in message["content"] if b["type"] == "text")
        stop, output = message["stop_reason"], message["usage"]["output_tokens"]
    assert tokens(text) <= 1
    assert stop == "max_tokens"
    assert output <= 1
    [row] = gateway.rows(user)
    assert row["completion_tokens"] <= 1
    assert row["cost_nano"] == cost_of(row["prompt_tokens"], row["completion_tokens"])
    gateway.assert_books_balance(user)


@pytest.mark.parametrize(
    ("stream", "pieces"),
    [(False, THE), (True, [" the" * 10] * 20)],
    ids=["whole", "stream-of-10-token-chunks"],
)
def test_an_overshooting_answer_keeps_the_part_that_was_allowed(
    gateway: Gateway, stream: bool, pieces: list[str]
) -> None:
    """docs/billing.md: "the client gets what was allowed". An upstream that ignores
    max_tokens 15 and sends 200 tokens in one JSON body (or in chunks of 10 tokens) must
    still give the client its 15 tokens, billed as 15."""
    user = gateway.new_user(NANO)
    marker = gateway.script(Script(text=pieces, usage=(20, 200), finish_reason="length"))
    body = chat_body(marker, 15)
    content, finish, usage = complete(gateway, user, body, stream)
    assert finish == "length"
    [row] = gateway.rows(user)
    assert row["completion_tokens"] == usage["completion_tokens"]
    gateway.assert_books_balance(user)
    assert content == " the" * 15
    assert usage["completion_tokens"] == 15


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("usage", [(20.0, 2.0), (20.5, 3.5)], ids=["integral", "fractional"])
def test_usage_with_non_integer_counts_does_not_fail_the_answer(
    gateway: Gateway, stream: bool, usage: tuple[float, float]
) -> None:
    """A count that is not an integer is implausible usage to recount (usage_check's
    `_within` is written for it), not a broken answer."""
    user = gateway.new_user(NANO)
    marker = gateway.script(Script(text=["Hello", " there"], usage=usage))  # type: ignore[arg-type]
    body = chat_body(marker, 64)
    content, finish, _ = complete(gateway, user, body, stream)
    assert (content, finish) == ("Hello there", "stop")
    [row] = gateway.rows(user)
    assert row["status"] == "ok"
    assert row["cost_nano"] == cost_of(row["prompt_tokens"], row["completion_tokens"])
    gateway.assert_books_balance(user)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_finished_answer_returns_its_upstream_connection_to_the_pool(
    gateway: Gateway, stream: bool
) -> None:
    # Metering once closed the stream at its last event, so the upstream connection was
    # dropped rather than reused: a new TCP connection for every request.
    user = gateway.new_user(10**9)
    peers = []
    for _ in range(3):
        marker = gateway.script(Script(text=[" ok"], usage=(20, 1)))
        body = chat_body(marker, 16, stream=stream)
        answer = post(gateway, user, body)
        assert answer.status_code == 200, answer.text
        [sent] = [r for r in gateway.upstream.requests if marker in str(r.body)]
        peers.append(sent.peer)
    assert peers[1] == peers[2]
