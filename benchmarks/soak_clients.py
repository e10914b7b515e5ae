"""The soak's clients (`benchmarks.soak`): the request mix, each request sent and its answer
checked whole (status, content, usage, the stream's end), the ids the server must have billed,
and what went wrong. aiohttp; one session per phase, so every connection closes with it."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks.mock_upstream import TOKEN
from benchmarks.targets import MODEL

# The random requests, by weight (per cent). The model list and the wrong key are periodic.
MIX = {
    "chat": 28,
    "chat_stream": 30,
    "chat_abandoned": 6,
    "messages": 5,
    "messages_stream": 20,
    "messages_abandoned": 6,
    "bad_body": 5,
}
KINDS = (*MIX, "models", "bad_key")
MODELS_EVERY_S = 2.0
BAD_KEY_EVERY_S = 6.0  # 10 a minute: the server throttles a client address after 20
STREAM_CHUNKS = (20, 50)
PACE_MS = (10, 20)
WHOLE_CHUNKS = (1, 50)
# A client that leaves does so with at least this many pieces to come: leaving before the
# last one races the server's final write (a write to a closed connection succeeds, so a
# stream whose end went out before the server saw the close is a whole answer, "ok").
LEFT_AT_LEAST = 3
MAX_TOKENS = 256  # the Anthropic door needs one; above any answer here
MESSAGES_KEPT = 50  # unexpected answers kept for the report (all are counted)
# A request the server refuses: (path, body). Each is a 400 before anything is admitted.
BAD_BODIES = (
    ("/v1/chat/completions", b'{"model": "' + MODEL.encode() + b'", "messages": ['),
    ("/v1/chat/completions", b'{"model": "' + MODEL.encode() + b'"}'),
    ("/v1/messages", b'{"model": "' + MODEL.encode() + b'", "max_tokens": 16}'),
    ("/v1/messages", b'{"model": "' + MODEL.encode() + b'", "messages": "hi"'),
)


@dataclass(frozen=True)
class Expect:
    """What the usage row of a request whose id the client saw must say."""

    kind: str
    # "ok" (a whole answer), "cancelled" (the client left), None (an unexpected answer: any)
    status: str | None
    chunks: int  # the mock's whole answer, in pieces (one token each)
    received: int  # pieces the client read
    trace: str  # the X-Request-Id it was sent with


@dataclass
class _Stream:
    """What a client read of one SSE answer, either door."""

    id: str | None = None
    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    done: bool = False
    error: str | None = None


def _openai_event(seen: _Stream, payload: bytes) -> None:
    if payload == b"[DONE]":
        seen.done = True
        return
    chunk = json.loads(payload)
    seen.id = seen.id or chunk.get("id")
    if chunk.get("error"):
        seen.error = json.dumps(chunk["error"])[:300]
    if chunk.get("usage"):
        seen.usage = chunk["usage"]
    for choice in chunk.get("choices") or ():
        if choice.get("finish_reason") == "error":
            seen.error = "a finish_reason error chunk"
        content = (choice.get("delta") or {}).get("content")
        if content:
            seen.text.append(content)


def _anthropic_event(seen: _Stream, payload: bytes) -> None:
    event = json.loads(payload)
    kind = event.get("type")
    if kind == "message_start":
        seen.id = event["message"]["id"]
    elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
        seen.text.append(event["delta"]["text"])
    elif kind == "message_delta":
        seen.usage = event.get("usage")
    elif kind == "message_stop":
        seen.done = True
    elif kind == "error":
        seen.error = json.dumps(event.get("error"))[:300]


def _request_id(answer_id: str | None) -> str | None:
    """The usage row's id: the response's without its door's prefix."""
    if not answer_id:
        return None
    return answer_id.removeprefix("chatcmpl-").removeprefix("msg_")


class _Unexpected(Exception):
    """An answer the soak did not expect; the message says what came."""


class Load:
    """The clients: their counts, the ids the server must have billed, what went wrong."""

    def __init__(self, port: int, key: str, rng: random.Random) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.key = key
        self.rng = rng
        self.tally: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
        self.expect: dict[str, Expect] = {}
        self.messages: list[str] = []
        self.latencies: list[float] = []  # whole chat answers since the last reading
        self.begun = time.monotonic()
        self.halted: str | None = None  # why the load stopped early (the server exited)
        self._traces = itertools.count(1)

    @property
    def outcomes(self) -> Counter[str]:
        """Answers so far by outcome: ok, abandoned, refused (the expected 400 and 401),
        unexpected."""
        return sum(self.tally.values(), Counter())

    @property
    def answered(self) -> int:
        return self.outcomes.total()

    @property
    def unexpected(self) -> int:
        return self.outcomes["unexpected"]

    async def run(self, seconds: float, concurrency: int) -> None:
        """`concurrency` clients back to back, and the periodic requests, for `seconds`; every
        connection is closed when it returns."""
        deadline = time.monotonic() + seconds
        connector = aiohttp.TCPConnector(limit=concurrency + 2)
        timeout = aiohttp.ClientTimeout(total=60, sock_read=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            clients = [self._client(session, deadline) for _ in range(concurrency)]
            await asyncio.gather(*clients, self._periodic(session, deadline))

    async def _client(self, session: aiohttp.ClientSession, deadline: float) -> None:
        kinds, weights = list(MIX), list(MIX.values())
        while time.monotonic() < deadline and self.halted is None:
            await self._one(session, self.rng.choices(kinds, weights)[0])

    async def _periodic(self, session: aiohttp.ClientSession, deadline: float) -> None:
        next_bad_key = time.monotonic() + BAD_KEY_EVERY_S / 2
        while time.monotonic() < deadline and self.halted is None:
            await self._one(session, "models")
            if time.monotonic() >= next_bad_key:
                next_bad_key += BAD_KEY_EVERY_S
                await self._one(session, "bad_key")
            await asyncio.sleep(MODELS_EVERY_S)

    async def _one(self, session: aiohttp.ClientSession, kind: str) -> None:
        try:
            outcome = await self._send(session, kind)
        except (_Unexpected, aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            outcome = "unexpected"
            message = f"{time.monotonic() - self.begun:7.1f}s {kind}: {type(exc).__name__}: {exc}"
            if len(self.messages) < MESSAGES_KEPT:
                self.messages.append(message)
            if len(self.messages) <= 10:
                print(f"  UNEXPECTED {message}", file=sys.stderr)
        self.tally[kind][outcome] += 1

    def _headers(self, trace: str, key: str | None = None) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {key or self.key}",
            "X-Request-Id": trace,
        }

    def _trace(self) -> str:
        """A request's own X-Request-Id: the server keeps it, on the answer and the usage row."""
        return f"soak-{next(self._traces)}"

    @staticmethod
    def _traced(reply: aiohttp.ClientResponse, trace: str) -> None:
        echoed = reply.headers.get("x-request-id")
        if echoed != trace:
            raise _Unexpected(f"X-Request-Id {trace!r} came back as {echoed!r}")

    async def _send(self, session: aiohttp.ClientSession, kind: str) -> str:
        """One request of `kind`; its outcome ("ok", "abandoned", "refused"), or _Unexpected."""
        if kind == "models":
            trace = self._trace()
            url = f"{self.base}/v1/models"
            async with session.get(url, headers=self._headers(trace)) as reply:
                body = await reply.read()
                if reply.status != 200 or MODEL.encode() not in body:
                    raise _Unexpected(f"status {reply.status}, {body[:200]!r}")
                self._traced(reply, trace)
                return "ok"
        if kind in ("bad_body", "bad_key"):
            return await self._refused(session, kind)
        door = "messages" if kind.startswith("messages") else "chat"
        if kind in ("chat", "messages"):
            return await self._whole(session, door)
        return await self._stream(session, door, abandon=kind.endswith("abandoned"), kind=kind)

    async def _refused(self, session: aiohttp.ClientSession, kind: str) -> str:
        trace = self._trace()
        if kind == "bad_key":
            path, body, want = "/v1/chat/completions", _body("chat", 1, None, stream=False), 401
            headers = self._headers(trace, f"mp-soak-wrong-{self.rng.getrandbits(64):016x}")
        else:
            path, body = self.rng.choice(BAD_BODIES)
            headers, want = self._headers(trace), 400
        async with session.post(self.base + path, data=body, headers=headers) as reply:
            answer = await reply.read()
            if reply.status != want or not answer.startswith(b"{"):
                raise _Unexpected(f"{path}: status {reply.status} (want {want}), {answer[:200]!r}")
            self._traced(reply, trace)
        return "refused"

    async def _whole(self, session: aiohttp.ClientSession, door: str) -> str:
        chunks = self.rng.randint(*WHOLE_CHUNKS)
        path = "/v1/messages" if door == "messages" else "/v1/chat/completions"
        started, trace = time.monotonic(), self._trace()
        body = _body(door, chunks, None, stream=False)
        async with session.post(self.base + path, data=body, headers=self._headers(trace)) as reply:
            raw = await reply.read()
            if reply.status != 200:
                raise _Unexpected(f"{path}: status {reply.status}, {raw[:300]!r}")
        if door == "chat":
            self.latencies.append(time.monotonic() - started)
        answer = json.loads(raw)
        try:
            if door == "chat":
                text, tokens = answer["choices"][0]["message"]["content"], answer["usage"]
                completion = tokens["completion_tokens"]
            else:
                text, completion = answer["content"][0]["text"], answer["usage"]["output_tokens"]
            if text != TOKEN * chunks or completion != chunks:
                raise _Unexpected(f"{path}: {completion} tokens, content {text[:80]!r}…")
            self._traced(reply, trace)
            self._billed(answer.get("id"), Expect(door, "ok", chunks, chunks, trace))
        finally:
            self._seen(answer.get("id"), Expect(door, None, chunks, 0, trace))
        return "ok"

    async def _stream(
        self, session: aiohttp.ClientSession, door: str, *, abandon: bool, kind: str
    ) -> str:
        chunks = self.rng.randint(*STREAM_CHUNKS)
        pace = (self.rng.randint(*PACE_MS), self.rng.randint(*PACE_MS))
        leave_after = self.rng.randint(1, chunks - LEFT_AT_LEAST) if abandon else None
        path = "/v1/messages" if door == "messages" else "/v1/chat/completions"
        parse = _anthropic_event if door == "messages" else _openai_event
        seen, trace = _Stream(), self._trace()
        body = _body(door, chunks, pace, stream=True)
        headers = self._headers(trace)
        try:
            async with session.post(self.base + path, data=body, headers=headers) as reply:
                if reply.status != 200:
                    raw = await reply.read()
                    raise _Unexpected(f"{path}: status {reply.status}, {raw[:300]!r}")
                self._traced(reply, trace)
                async for line in reply.content:
                    if line.startswith(b"data: "):
                        parse(seen, line[6:].rstrip())
                    if seen.error:
                        raise _Unexpected(f"{path}: error event {seen.error}")
                    if leave_after is not None and len(seen.text) >= leave_after:
                        reply.close()  # the client goes away part-way
                        received = len(seen.text)
                        self._billed(seen.id, Expect(kind, "cancelled", chunks, received, trace))
                        return "abandoned"
            usage = seen.usage or {}
            completion = usage.get("completion_tokens", usage.get("output_tokens"))
            if not seen.done or "".join(seen.text) != TOKEN * chunks or completion != chunks:
                raise _Unexpected(
                    f"{path}: done={seen.done}, {len(seen.text)} of {chunks} pieces, usage {usage}"
                )
            self._billed(seen.id, Expect(kind, "ok", chunks, chunks, trace))
        finally:
            self._seen(seen.id, Expect(kind, None, chunks, len(seen.text), trace))
        return "ok"

    def _billed(self, answer_id: str | None, expect: Expect) -> None:
        """Note the row an answer's id must have; _Unexpected if it has no id, or one seen
        before."""
        request_id = _request_id(answer_id)
        if request_id is None:
            raise _Unexpected(f"{expect.kind}: the answer has no id")
        if request_id in self.expect:
            raise _Unexpected(f"{expect.kind}: id {request_id} was given twice")
        self.expect[request_id] = expect

    def _seen(self, answer_id: str | None, expect: Expect) -> None:
        """An id from an answer that went wrong after it came: the server admitted the request,
        so it must have a row (of any status)."""
        request_id = _request_id(answer_id)
        if request_id is not None and request_id not in self.expect:
            self.expect[request_id] = expect


def _body(door: str, chunks: int, pace: tuple[int, int] | None, *, stream: bool) -> bytes:
    """A request for `chunks` pieces of the mock's answer (paced), markers in the message."""
    text = f"soak: say hello. chunks={chunks}" + (f" pace={pace[0]},{pace[1]}" if pace else "")
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    if door == "messages":
        body["max_tokens"] = MAX_TOKENS
    elif stream:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()
