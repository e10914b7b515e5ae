"""Upstream faults end to end: what a client sees, and what it is billed, when the upstream
fails in each way a real one does (docs/backends.md, docs/billing.md).

One real server (SQLite) in a subprocess, in front of `tests/fakes/faulty_upstream.py`: raw
asyncio over real TCP on 127.0.0.1, each fault on a listening socket of its own. Every case runs
through both doors (OpenAI chat completions, Anthropic messages), streamed and whole, and each
of those combinations is a model of its own with a backend of its own, so that nothing one
case does to a backend (its pool, its failure count) reaches another. Each test makes its own
user.

What a client must see:

- a failure before the answer started: the HTTP status and the door's error shape, OpenAI
  `{"error": {"message", "type", "param", "code"}}`, Anthropic
  `{"type": "error", "error": {"type", "message"}}`, and never the upstream's address;
- a failure after the stream started: the text relayed so far, then the door's in-stream
  error (OpenAI: a chunk with `finish_reason: "error"` and an `error` object, then
  `data: [DONE]`; Anthropic: `event: error`), and the end of the response;
- every time: an answer within the backend's timeouts (no hang), and the upstream connection
  closed by the gateway where the upstream would hold it forever.

What it must be billed: nothing for a failure before any output (one usage row, status
"error", cost 0); the prompt and the relayed tokens for output relayed before a failure; and
for an answer without usage, the gateway's own count. Rows are read through the admin API
(`GET /api/v1/generation?id=…`, `GET /api/v1/admin/usage`), balances through `/api/v1/me`.

The models are Qwen3-format cards, so the gateway counts exactly with Qwen3's tokenizer: the
relayed text (`TEXT`) is 5 tokens; 500 nano-yuan per prompt token and 1,750 per completion
token.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from tests.e2e.server import RunningServer
from tests.fakes.faulty_upstream import HUGE_LIMIT, TEXT, FaultyUpstream

pytestmark = pytest.mark.e2e

INPUT_NANO = 500
OUTPUT_NANO = 1750
NANO = 10**9
RELAYED = "".join(TEXT)
RELAYED_TOKENS = 5  # Qwen3's count of RELAYED (one token a piece)
PROMPT = "Tell me something nice, please."
MAX_TOKENS = 64

Door = Literal["openai", "anthropic"]
Mode = Literal["stream", "whole"]
DOORS: tuple[Door, ...] = ("openai", "anthropic")
MODES: tuple[Mode, ...] = ("stream", "whole")

# The most an upstream may send into one unfinished SSE line or event (a stream), or into one
# JSON body (a whole answer), before the gateway gives up on it: modelport's limits
# (protocols/openai/sse.MAX_SSE_LINE, 16 MiB; backends/openai_compat.MAX_JSON_BODY, 64 MiB),
# plus what socket buffers take in before the gateway stops reading.
BOUNDED: dict[Mode, int] = {"stream": 40 * 1024 * 1024, "whole": 88 * 1024 * 1024}


@dataclass(frozen=True)
class Failure:
    """A failure as a client is told it: the HTTP status, the OpenAI door's error code (also
    the usage row's `error_code`) and the Anthropic door's error type."""

    status: int
    code: str
    anthropic: str


BAD_GATEWAY = Failure(502, "upstream_error", "api_error")
TIMED_OUT = Failure(504, "upstream_timeout", "timeout_error")
RATE_LIMITED = Failure(429, "rate_limit_exceeded", "rate_limit_error")


@dataclass(frozen=True)
class Outcome:
    """How one request must end.

    `refused`: an error response (status and shape) before any answer; `broken`: a 200
    stream that ends with the door's in-stream error; `answered`: a complete answer (RELAYED).
    `relayed`: RELAYED reached the client first (and so is billed, with the prompt).
    `seconds`: how long it may take: at least the timeout that must end it, at most that and
    some slack (a hang fails here, or at the client's own timeout)."""

    kind: Literal["refused", "broken", "answered"]
    failure: Failure | None = None
    relayed: bool = False
    seconds: tuple[float, float] = (0.0, 6.0)
    retry_after: str | None = None


def refused(failure: Failure, seconds: tuple[float, float] = (0.0, 6.0)) -> Outcome:
    return Outcome("refused", failure, seconds=seconds)


def broken(
    failure: Failure, *, relayed: bool = True, seconds: tuple[float, float] = (0.0, 6.0)
) -> Outcome:
    return Outcome("broken", failure, relayed=relayed, seconds=seconds)


ANSWERED = Outcome("answered", relayed=True)


@dataclass(frozen=True)
class Case:
    """One upstream fault: the outcome for a streaming and for a whole-answer client, the
    backend's timeouts, and whether the gateway must close the upstream's connection itself
    (the upstream would hold it open forever)."""

    stream: Outcome
    whole: Outcome
    backend: dict[str, float] = field(default_factory=dict)
    closes_upstream: bool = False
    bounded_bytes: bool = False  # the upstream sends without end: the gateway must stop it


# Backends answer within these unless a case says otherwise: a hang fails within seconds.
DEFAULT_TIMEOUTS = {"timeout": 10.0, "read_timeout": 5.0, "connect_timeout": 2.0}

# The faults (tests/fakes/faulty_upstream.FAULTS says what each sends), and how each ends.
CASES: dict[str, Case] = {
    "http_500": Case(refused(BAD_GATEWAY), refused(BAD_GATEWAY)),
    "http_429": Case(
        Outcome("refused", RATE_LIMITED, retry_after="7"),
        Outcome("refused", RATE_LIMITED, retry_after="7"),
    ),
    # Nothing listens: refused at once. A listener whose accept queue is full: the connect
    # waits for its timeout.
    "connection_refused": Case(refused(BAD_GATEWAY), refused(BAD_GATEWAY)),
    "connect_timeout": Case(
        refused(TIMED_OUT, (0.9, 4.0)),
        refused(TIMED_OUT, (0.9, 4.0)),
        backend={"connect_timeout": 1.0},
    ),
    "reset_before_head": Case(refused(BAD_GATEWAY), refused(BAD_GATEWAY)),
    "stall_before_head": Case(
        refused(TIMED_OUT, (0.9, 4.0)),
        refused(TIMED_OUT, (0.9, 4.0)),
        backend={"read_timeout": 1.0},
        closes_upstream=True,
    ),
    "reset_mid_stream": Case(broken(BAD_GATEWAY), refused(BAD_GATEWAY)),
    "stall_mid_stream": Case(
        broken(TIMED_OUT, seconds=(0.9, 4.0)),
        refused(TIMED_OUT, (0.9, 4.0)),
        backend={"read_timeout": 1.0},
        closes_upstream=True,
    ),
    # The answer is complete once its finish reason has come: an upstream that then stalls
    # (no usage, no [DONE], the body never ends) has lost only its usage, which the gateway
    # counts itself, once the read timeout says nothing more is coming.
    "stall_after_finish": Case(
        Outcome("answered", relayed=True, seconds=(0.9, 4.0)),
        refused(TIMED_OUT, (0.9, 4.0)),
        backend={"read_timeout": 1.0},
        closes_upstream=True,
    ),
    "malformed_first": Case(
        broken(BAD_GATEWAY, relayed=False), refused(BAD_GATEWAY), closes_upstream=True
    ),
    "malformed_mid": Case(broken(BAD_GATEWAY), refused(BAD_GATEWAY), closes_upstream=True),
    "no_usage": Case(ANSWERED, ANSWERED),
    "huge_line": Case(
        broken(BAD_GATEWAY),
        refused(BAD_GATEWAY),
        backend={"read_timeout": 3.0},
        closes_upstream=True,
        bounded_bytes=True,
    ),
    "endless_event": Case(
        broken(BAD_GATEWAY),
        refused(BAD_GATEWAY),
        backend={"read_timeout": 3.0},
        closes_upstream=True,
        bounded_bytes=True,
    ),
    # A stream: [DONE] ends the answer at once and the connection is dropped soon after, long
    # before the whole-response timeout. A JSON body framed by the end of the connection is
    # not complete until it ends: the read timeout ends it once the bytes stop.
    "never_closes": Case(
        Outcome("answered", relayed=True, seconds=(0.0, 2.0)),
        refused(TIMED_OUT, (0.9, 4.0)),
        backend={"timeout": 2.5, "read_timeout": 1.0},
        closes_upstream=True,
    ),
    # Bytes keep coming (SSE comments, JSON whitespace): no read timeout, the whole-response
    # timeout ends it.
    "keepalive_forever": Case(
        broken(TIMED_OUT, seconds=(1.9, 5.0)),
        refused(TIMED_OUT, (1.9, 5.0)),
        backend={"timeout": 2.0, "read_timeout": 1.0},
        closes_upstream=True,
    ),
}


CONTROL = "faults/control"  # a healthy upstream


def label_of(fault: str, door: Door, mode: Mode) -> str:
    return f"{fault}-{door}-{mode}".replace("_", "-")


def model_of(fault: str, door: Door, mode: Mode) -> str:
    return f"faults/{label_of(fault, door, mode)}"


MODEL_ENTRY = """
[[models]]
id = "{model}"
name = "Faulty upstream: {label}"
description = "A scripted upstream that fails on purpose (tests/fakes/faulty_upstream.py)."
context_length = 32768
pricing = {{ input_per_1k = "0.0005", output_per_1k = "0.00175" }}
thinking = "none"
tool_format = "qwen3_json"
  [[models.backends]]
  kind = "openai_compat"
  name = "fault-{label}"
  url = "{url}"
  dialect = "generic"
  upstream_model = "faulty"
{timeouts}
"""


def config_text(fake: FaultyUpstream) -> str:
    entries = ['[[models]]\nid = "local/smollm2-135m-instruct"\nbackends = []\n']
    lines = "\n".join(f"  {name} = {value}" for name, value in DEFAULT_TIMEOUTS.items())
    control = fake.serve("none", "control")
    entries.append(MODEL_ENTRY.format(model=CONTROL, label="control", url=control, timeouts=lines))
    for fault, case in CASES.items():
        for door in DOORS:
            for mode in MODES:
                label = label_of(fault, door, mode)
                if fault == "connection_refused":
                    url = fake.refused()
                elif fault == "connect_timeout":
                    url = fake.blackhole()
                else:
                    url = fake.serve(fault, label)
                timeouts = {**DEFAULT_TIMEOUTS, **case.backend}
                lines = "\n".join(f"  {name} = {value}" for name, value in timeouts.items())
                entries.append(
                    MODEL_ENTRY.format(
                        model=model_of(fault, door, mode), label=label, url=url, timeouts=lines
                    )
                )
    return "".join(entries)


@dataclass(frozen=True)
class User:
    name: str
    secret: str


@dataclass
class Gateway:
    server: RunningServer
    upstream: FaultyUpstream
    http: httpx.Client
    prompt_tokens: int = 0  # PROMPT as the gateway counts it
    holds: dict[tuple[Door, Mode], int] = field(default_factory=dict)

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.server.admin_key}"}
        return self.http.request(method, path, json=body, headers=headers)

    def new_user(self, balance_nano: int) -> User:
        name = f"faults-{uuid.uuid4().hex[:10]}"
        balance = str(Decimal(balance_nano) / NANO)
        created = self.admin("POST", "/api/v1/admin/users", {"name": name, "balance": balance})
        assert created.status_code == 201, created.text
        issued = self.admin("POST", "/api/v1/admin/keys", {"name": f"{name}-key", "user": name})
        assert issued.status_code == 201, issued.text
        return User(name, issued.json()["secret"])

    def topup(self, user: User, nano: int) -> None:
        if nano:
            body = {"amount": str(Decimal(nano) / NANO), "reason": "refund of a test request"}
            answer = self.admin("POST", f"/api/v1/admin/users/{user.name}/topup", body)
            assert answer.status_code == 200, answer.text

    def hold(self, door: Door, mode: Mode) -> int:
        """What admitting one test request holds (the same for every model here), read from
        the refusal of a user with nothing."""
        if (door, mode) not in self.holds:
            poor = self.new_user(0)
            refused = ask(self, poor, door, CONTROL, stream=mode == "stream")
            assert refused.status_code == 402, refused.text
            found = re.search(r"may cost up to ([0-9.]+) CNY", refused.text)
            assert found is not None, refused.text
            self.holds[door, mode] = int(Decimal(found.group(1)) * NANO)
        return self.holds[door, mode]

    def balance(self, user: User) -> int:
        me = self.http.get("/api/v1/me", headers={"Authorization": f"Bearer {user.secret}"})
        assert me.status_code == 200, me.text
        nano: int = me.json()["balance_nano"]
        return nano

    def generation(self, request_id: str) -> dict[str, Any]:
        answer = self.admin("GET", f"/api/v1/generation?id={request_id}")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()["data"]
        return data

    def usage_totals(self, user: User) -> list[dict[str, Any]]:
        answer = self.admin("GET", f"/api/v1/admin/usage?by=model&user={user.name}")
        assert answer.status_code == 200, answer.text
        totals: list[dict[str, Any]] = answer.json()["data"]
        return totals

    def charges(self, user: User) -> int:
        answer = self.admin("GET", f"/api/v1/admin/users/{user.name}/ledger")
        assert answer.status_code == 200, answer.text
        return sum(e["amount_nano"] for e in answer.json()["data"] if e["kind"] == "charge")

    def count_prompt(self, model: str) -> int:
        counted = self.http.post(
            "/v1/messages/count_tokens",
            json={"model": model, "messages": [{"role": "user", "content": PROMPT}]},
            headers={"x-api-key": self.server.admin_key, "anthropic-version": "2023-06-01"},
        )
        assert counted.status_code == 200, counted.text
        tokens: int = counted.json()["input_tokens"]
        return tokens


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    fake = FaultyUpstream()
    fake.start_in_thread()
    try:
        data_dir: Path = tmp_path_factory.mktemp("faults")
        config = data_dir / "modelport.toml"
        config.write_text(config_text(fake))
        with (
            RunningServer(data_dir, config=config) as server,
            httpx.Client(base_url=server.base_url, timeout=30) as http,
        ):
            gateway = Gateway(server, fake, http)
            gateway.prompt_tokens = gateway.count_prompt(CONTROL)
            fake.usage = (gateway.prompt_tokens, RELAYED_TOKENS)  # usage the gateway believes
            yield gateway
    finally:
        fake.stop_thread()


# --------------------------------------------------------------------------- what a client got


@dataclass
class Seen:
    """What the client got, in door-independent terms."""

    status: int
    request_id: str | None  # the id the usage row is found by
    text: str = ""  # the answer's text (streamed or whole)
    error: dict[str, Any] | None = None  # the door's error object (response or in-stream)
    finish: str | None = None  # the finish / stop reason of a complete answer
    usage: tuple[int, int] | None = None  # (prompt, completion) the client was told
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


def ask(gateway: Gateway, user: User, door: Door, model: str, stream: bool) -> httpx.Response:
    messages = [{"role": "user", "content": PROMPT}]
    if door == "openai":
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        headers = {"Authorization": f"Bearer {user.secret}"}
        return gateway.http.post("/v1/chat/completions", json=body, headers=headers, timeout=20)
    body = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "stream": stream}
    headers = {"x-api-key": user.secret, "anthropic-version": "2023-06-01"}
    return gateway.http.post("/v1/messages", json=body, headers=headers, timeout=20)


_REQUEST_ID = re.compile(r"\(request id ([^)\s]+)\)")


def error_request_id(response: httpx.Response, body: dict[str, Any]) -> str | None:
    """The request id of an error response: the Anthropic body's `request_id`, the one the
    message quotes, or the X-Request-Id header."""
    if isinstance(body.get("request_id"), str):
        return str(body["request_id"])
    found = _REQUEST_ID.search(json.dumps(body))
    if found:
        return found.group(1)
    header: str | None = response.headers.get("x-request-id")
    return header


def read_openai(response: httpx.Response, stream: bool) -> Seen:
    seen = Seen(response.status_code, None, headers=dict(response.headers), body=response.text)
    if response.status_code != 200 or not stream:
        body = response.json()
        if response.status_code != 200:
            assert set(body) == {"error"}, body
            seen.error = body["error"]
            seen.request_id = error_request_id(response, body)
            return seen
        seen.request_id = body["id"]
        seen.text = body["choices"][0]["message"]["content"] or ""
        seen.finish = body["choices"][0]["finish_reason"]
        seen.usage = (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
        return seen
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in response.text.split("\n\n") if block.strip()]
    assert blocks and blocks[-1] == "data: [DONE]", f"the stream does not end with [DONE]: {blocks}"
    chunks = [json.loads(block.removeprefix("data: ")) for block in blocks[:-1]]
    assert all(block.startswith("data: {") for block in blocks[:-1]), blocks
    seen.request_id = chunks[0]["id"]
    for position, chunk in enumerate(chunks):
        if "error" in chunk:
            # The error chunk ends the answer: at most a usage chunk may follow it.
            assert all(not later["choices"] for later in chunks[position + 1 :]), chunks
            assert chunk["choices"][0]["finish_reason"] == "error", chunk
            seen.error = chunk["error"]
        for choice in chunk["choices"]:
            seen.text += choice["delta"].get("content") or ""
            if choice["finish_reason"] and choice["finish_reason"] != "error":
                seen.finish = choice["finish_reason"]
        if chunk.get("usage"):
            seen.usage = (chunk["usage"]["prompt_tokens"], chunk["usage"]["completion_tokens"])
    return seen


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def read_anthropic(response: httpx.Response, stream: bool) -> Seen:
    seen = Seen(response.status_code, None, headers=dict(response.headers), body=response.text)
    if response.status_code != 200 or not stream:
        body = response.json()
        if response.status_code != 200:
            assert body["type"] == "error" and set(body) <= {"type", "error", "request_id"}, body
            seen.error = body["error"]
            seen.request_id = error_request_id(response, body)
            return seen
        assert body["type"] == "message", body
        seen.request_id = body["id"]
        seen.text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
        seen.finish = body["stop_reason"]
        seen.usage = (body["usage"]["input_tokens"], body["usage"]["output_tokens"])
        return seen
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events and events[0][0] == "message_start", events
    seen.request_id = events[0][1]["message"]["id"]
    prompt = events[0][1]["message"]["usage"]["input_tokens"]
    for position, (name, data) in enumerate(events):
        assert name == data["type"], (name, data)
        if name == "error":
            assert position == len(events) - 1, f"events after the error: {events}"
            assert set(data) <= {"type", "error", "request_id"}, data
            seen.error = data["error"]
        elif name == "content_block_delta" and data["delta"]["type"] == "text_delta":
            seen.text += data["delta"]["text"]
        elif name == "message_delta":
            seen.finish = data["delta"]["stop_reason"]
            seen.usage = (prompt, data["usage"]["output_tokens"])
    if seen.error is None:
        assert events[-1][0] == "message_stop", events
    return seen


# --------------------------------------------------------------------------- the cases


def cost_of(prompt: int, completion: int) -> int:
    return prompt * INPUT_NANO + completion * OUTPUT_NANO


def wait_closed(gateway: Gateway, label: str, within: float = 4.0) -> list[float | None]:
    """When the gateway closed each connection of `label`'s listener (None: still open after
    `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        closes = [e.peer_closed_at for e in gateway.upstream.exchanges(label)]
        if all(closes) or time.monotonic() > deadline:
            return closes
        time.sleep(0.02)


PARAMS = [
    pytest.param(fault, door, mode, id=f"{fault}-{door}-{mode}")
    for fault in CASES
    for door in DOORS
    for mode in MODES
]


@pytest.mark.parametrize(("fault", "door", "mode"), PARAMS)
def test_an_upstream_fault(gateway: Gateway, fault: str, door: Door, mode: Mode) -> None:
    case = CASES[fault]
    outcome = case.stream if mode == "stream" else case.whole
    model = model_of(fault, door, mode)
    label = label_of(fault, door, mode)
    user = gateway.new_user(gateway.hold(door, mode))  # exactly one request's worth
    opening = gateway.balance(user)

    began = time.monotonic()
    response = ask(gateway, user, door, model, stream=mode == "stream")
    elapsed = time.monotonic() - began
    read = read_openai if door == "openai" else read_anthropic
    seen = read(response, mode == "stream")

    # ---- the upstream: what it sends without end is cut short, what it would hold forever is
    # closed by the gateway
    if case.bounded_bytes:
        sent = [e.sent for e in gateway.upstream.exchanges(label)]
        assert sent and max(sent) <= BOUNDED[mode] < HUGE_LIMIT, (
            f"the gateway read {max(sent) / 2**20:.0f} MiB of one unfinished line or body"
        )
    if case.closes_upstream:
        closes = wait_closed(gateway, label)
        assert closes and all(closes), f"the gateway left the upstream connection open: {closes}"

    # ---- what the client sees
    low, high = outcome.seconds
    assert low <= elapsed <= high, f"answered in {elapsed:.2f}s, not within {outcome.seconds}"
    assert "127.0.0.1" not in seen.body, "the upstream's address reached the client"
    if outcome.kind == "refused":
        assert outcome.failure is not None
        assert seen.status == outcome.failure.status, seen.body
        assert seen.headers["content-type"].startswith("application/json"), seen.headers
        assert seen.error is not None
        assert isinstance(seen.error["message"], str) and seen.error["message"]
        if door == "openai":
            assert seen.error["code"] == outcome.failure.code, seen.error
            assert set(seen.error) == {"message", "type", "param", "code"}, seen.error
        else:
            assert seen.error["type"] == outcome.failure.anthropic, seen.error
        if outcome.retry_after is not None:
            assert seen.headers.get("retry-after") == outcome.retry_after, seen.headers
    else:
        assert seen.status == 200, seen.body
        assert seen.text == (RELAYED if outcome.relayed else ""), seen.body
        if outcome.kind == "broken":
            assert outcome.failure is not None
            assert seen.error is not None, f"no in-stream error: {seen.body}"
            if door == "openai":
                assert seen.error["code"] == outcome.failure.code, seen.error
            else:
                assert seen.error["type"] == outcome.failure.anthropic, seen.error
        else:
            assert seen.error is None, seen.body
            assert seen.finish == ("stop" if door == "openai" else "end_turn"), seen.body
            assert seen.usage == (gateway.prompt_tokens, RELAYED_TOKENS), seen.body

    # ---- what is billed
    assert seen.request_id, f"no request id to find the usage row by: {seen.body}"
    row = gateway.generation(seen.request_id)
    completion = RELAYED_TOKENS if outcome.relayed else 0
    cost = cost_of(gateway.prompt_tokens, completion) if outcome.relayed else 0
    assert (row["model"], row["streamed"]) == (model, mode == "stream"), row
    assert row["status"] == ("ok" if outcome.kind == "answered" else "error"), row
    assert row["error_code"] == (outcome.failure.code if outcome.failure else None), row
    assert (row["tokens_prompt"], row["tokens_completion"]) == (gateway.prompt_tokens, completion)
    assert row["cost_nano"] == cost, row
    assert row["estimated"] is False, row
    assert row["finish_reason"] == ("stop" if outcome.kind == "answered" else None), row
    assert gateway.balance(user) == opening - cost
    [total] = gateway.usage_totals(user)
    assert (total["group"], total["requests"], total["cost_nano"]) == (model, 1, cost), total
    assert gateway.charges(user) == -cost

    # ---- and nothing stays held: given back what it paid, the user has exactly one request's
    # worth again, and the next request is admitted
    gateway.topup(user, cost)
    again = ask(gateway, user, door, CONTROL, stream=mode == "stream")
    assert again.status_code == 200, f"the failed request's hold was not released: {again.text}"
