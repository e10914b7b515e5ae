"""A mock OpenAI-compatible upstream that must never be the bottleneck.

A hand-written asyncio `Protocol` HTTP/1.1 server on uvloop: keep-alive, Content-Length request
bodies, and just enough parsing to answer `POST /v1/chat/completions` (and `GET /health`).

What it answers is chosen by markers anywhere in the request body (the benchmark puts them in
the last user message, so they survive the gateway's re-encoding of the request), or by the
`x-mock-chunks` / `x-mock-pace` headers or `?chunks=` query parameter:

- `"stream": true` -> an SSE stream (chunked transfer encoding) of N content chunks, a finish
  chunk, a usage chunk and `data: [DONE]`; otherwise one `chat.completion` JSON body with usage.
- `chunks=N` -> N content chunks (default 1).
- `pace=FIRST,EVERY` -> the first content chunk after FIRST ms, then one every EVERY ms.

Unpaced answers are pre-rendered once per chunk count and written with one `write()`.

Run: `python -m benchmarks.mock_upstream --port 9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from functools import lru_cache
from typing import cast

import uvloop

TOKEN = " hello"
PROMPT_TOKENS = 12
MAX_CHUNKS = 100_000

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_CHUNKS = re.compile(rb"chunks=(\d+)")
_PACE = re.compile(rb"pace=(\d+),(\d+)")

_COMPLETION_ID = "chatcmpl-mock"
_CREATED = 1_700_000_000
_MODEL = "mock"


def _chunk_json(delta: str, finish: str | None = None) -> bytes:
    finish_json = "null" if finish is None else f'"{finish}"'
    return (
        f'{{"id":"{_COMPLETION_ID}","object":"chat.completion.chunk","created":{_CREATED},'
        f'"model":"{_MODEL}","choices":[{{"index":0,"delta":{delta},'
        f'"finish_reason":{finish_json}}}]}}'
    ).encode()


def _usage_json(completion_tokens: int) -> str:
    total = PROMPT_TOKENS + completion_tokens
    return (
        f'{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{completion_tokens},'
        f'"total_tokens":{total}}}'
    )


def _http_chunk(payload: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%b\r\n" % (len(event), event)


def sse_events(chunks: int) -> list[bytes]:
    """The HTTP chunks of a whole streamed answer, in order, the terminating chunk last."""
    events = [_http_chunk(_chunk_json(f'{{"role":"assistant","content":"{TOKEN}"}}'))]
    events += [_http_chunk(_chunk_json(f'{{"content":"{TOKEN}"}}')) for _ in range(chunks - 1)]
    events.append(_http_chunk(_chunk_json("{}", "stop")))
    usage = (
        f'{{"id":"{_COMPLETION_ID}","object":"chat.completion.chunk","created":{_CREATED},'
        f'"model":"{_MODEL}","choices":[],"usage":{_usage_json(chunks)}}}'
    ).encode()
    events.append(_http_chunk(usage))
    events.append(_http_chunk(b"[DONE]"))
    events.append(b"0\r\n\r\n")
    return events


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


@lru_cache(maxsize=64)
def stream_response(chunks: int) -> bytes:
    return STREAM_HEAD + b"".join(sse_events(chunks))


@lru_cache(maxsize=64)
def json_response(chunks: int) -> bytes:
    body = (
        f'{{"id":"{_COMPLETION_ID}","object":"chat.completion","created":{_CREATED},'
        f'"model":"{_MODEL}","choices":[{{"index":0,"message":{{"role":"assistant",'
        f'"content":"{TOKEN * chunks}"}},"finish_reason":"stop"}}],'
        f'"usage":{_usage_json(chunks)}}}'
    ).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


def _simple(status: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %b\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b" % (
        status,
        len(body),
        body,
    )


HEALTH = _simple(b"200 OK", b"ok")
NOT_FOUND = _simple(b"404 Not Found", b"not found")
BAD_REQUEST = _simple(b"400 Bad Request", b"bad request")


def _header(lowered_head: bytes, name: bytes) -> bytes | None:
    start = lowered_head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = lowered_head.find(b"\r\n", start)
    return lowered_head[start : end if end >= 0 else None].strip()


def _choose(lowered_head: bytes, target: bytes, body: bytes) -> tuple[int, tuple[int, int] | None]:
    """(chunk count, pace in ms or None) from the header, the query string or the body."""
    found = _header(lowered_head, b"x-mock-chunks")
    if found is None:
        match = _CHUNKS.search(target) or _CHUNKS.search(body)
        found = match.group(1) if match else None
    chunks = min(max(int(found), 1), MAX_CHUNKS) if found else 1
    pace_value = _header(lowered_head, b"x-mock-pace")
    pace_match = _PACE.search(b"pace=" + pace_value) if pace_value else _PACE.search(body)
    pace = (int(pace_match.group(1)), int(pace_match.group(2))) if pace_match else None
    return chunks, pace


class MockProtocol(asyncio.Protocol):
    """One connection: requests are answered in order; a paced stream holds the ones behind."""

    __slots__ = ("_buffer", "_busy", "_closed", "_loop", "_transport")

    def __init__(self) -> None:
        self._buffer = b""
        self._busy = False
        self._closed = False
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        if not self._busy:
            self._serve()

    def _serve(self) -> None:
        transport = self._transport
        assert transport is not None
        while not self._busy and not self._closed:
            buffer = self._buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lowered = buffer[:end].lower()
            length_value = _header(lowered, b"content-length")
            length = int(length_value) if length_value else 0
            body_end = end + 4 + length
            if len(buffer) < body_end:
                return
            body = buffer[end + 4 : body_end]
            self._buffer = buffer[body_end:]
            line_end = lowered.find(b"\r\n")
            parts = lowered[: line_end if line_end >= 0 else None].split(b" ")
            if len(parts) != 3:
                transport.write(BAD_REQUEST)
                transport.close()
                return
            method, target = parts[0], parts[1]
            path = target.partition(b"?")[0]
            if method == b"post" and path == b"/v1/chat/completions":
                self._completion(lowered, target, body)
            elif method == b"get" and path == b"/health":
                transport.write(HEALTH)
            else:
                transport.write(NOT_FOUND)
            if _header(lowered, b"connection") == b"close":
                transport.close()
                return

    def _completion(self, lowered: bytes, target: bytes, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        chunks, pace = _choose(lowered, target, body)
        if _STREAM_TRUE.search(body) is None:
            transport.write(json_response(chunks))
        elif pace is None:
            transport.write(stream_response(chunks))
        else:
            self._busy = True
            transport.write(STREAM_HEAD)
            self._loop.call_later(pace[0] / 1000, self._paced, sse_events(chunks), 0, pace[1])

    def _paced(self, events: list[bytes], index: int, every_ms: int) -> None:
        if self._closed:
            return
        transport = self._transport
        assert transport is not None
        transport.write(events[index])
        index += 1
        # Content chunks are paced; the finish, usage, [DONE] and terminator follow at once.
        content_left = len(events) - 4 - index
        if content_left > 0:
            self._loop.call_later(every_ms / 1000, self._paced, events, index, every_ms)
            return
        transport.write(b"".join(events[index:]))
        self._busy = False
        if self._buffer:
            self._serve()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="mock OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
