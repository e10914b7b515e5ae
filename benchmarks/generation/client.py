"""A lean streaming client for the server side: one kept-alive HTTP/1.1 connection on raw
asyncio streams, timestamping each chunk of the SSE answer as it arrives.

While the answer streams it only reads chunks and looks for a non-empty `content` in each (a
regular expression, microseconds); the events are decoded after the stream has ended, so the
client's own cost stays out of the figures as far as it can.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from benchmarks.generation.timing import Stream
from benchmarks.procs import BenchError

CHAT_PATH = "/v1/chat/completions"
# A delta with non-empty content: the role-only first chunk does not count.
_CONTENT = re.compile(rb'"content":\s*"[^"]')
# The server (granian, on hyper) closes a kept-alive connection that sends no request for
# 30 s; one idle longer than this is replaced before the clock starts, not found dead after.
_MAX_IDLE_S = 10.0


class GenerationClient:
    def __init__(self, port: int, key: str) -> None:
        self._port = port
        self._key = key
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._idle_since = 0.0

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
        self._reader = self._writer = None

    async def stream(self, body: bytes) -> Stream:
        """Send one streaming chat request and read its answer to the end."""
        if time.monotonic() - self._idle_since > _MAX_IDLE_S:
            await self.close()
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        reader, writer = self._reader, self._writer
        head = (
            f"POST {CHAT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {self._key}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        first = last = None
        received = bytearray()
        started = time.perf_counter()
        writer.write(head + body)
        status_line, _, headers = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        if b"transfer-encoding: chunked" not in headers.lower():
            # Errors come whole, with a length: read it for the message.
            length = re.search(rb"content-length:\s*(\d+)", headers.lower())
            detail = await reader.readexactly(int(length.group(1))) if length else b""
            await self.close()
            raise BenchError(f"server: {status_line.decode()}: {detail[:500]!r}")
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            if _CONTENT.search(data):
                last = time.perf_counter()
                if first is None:
                    first = last
            received += data[:-2]
        self._idle_since = time.monotonic()
        if status_line.split(b" ", 2)[1] != b"200":
            raise BenchError(f"server: {status_line.decode()}: {bytes(received[:500])!r}")
        if first is None or last is None:
            raise BenchError(f"server: the answer carried no content: {bytes(received[:500])!r}")
        return _decode(bytes(received), started, first, last)


def _decode(answer: bytes, started: float, first: float, last: float) -> Stream:
    """The text, finish reason and usage of a whole SSE answer; BenchError if it is broken."""
    payloads = [line[6:] for line in answer.split(b"\n") if line.startswith(b"data: ")]
    if not payloads or payloads[-1] != b"[DONE]":
        raise BenchError(f"server: the stream does not end with [DONE]: {answer[-300:]!r}")
    events = [json.loads(payload) for payload in payloads[:-1]]
    pieces: list[str] = []
    finish: str | None = None
    usage: dict[str, Any] | None = None
    for event in events:
        if "error" in event:
            raise BenchError(f"server: error in the stream: {event['error']}")
        usage = event.get("usage") or usage
        for choice in event.get("choices") or []:
            finish = choice.get("finish_reason") or finish
            content = (choice.get("delta") or {}).get("content")
            if content:
                pieces.append(content)
    if finish not in ("length", "stop"):
        raise BenchError(f"server: the stream finished with {finish!r}")
    if usage is None:
        raise BenchError("server: no usage chunk in the stream")
    return Stream(
        started=started,
        first=first,
        last=last,
        completion_tokens=int(usage["completion_tokens"]),
        finish_reason=finish,
        prompt_tokens=int(usage["prompt_tokens"]),
        text="".join(pieces),
    )


async def concurrent(clients: list[GenerationClient], body: bytes) -> list[Stream]:
    """One request per client, all sent at once."""
    return list(await asyncio.gather(*(client.stream(body) for client in clients)))
