"""An OpenAI-compatible upstream that sends each streamed answer in one write (a busy
engine's socket: many SSE events in one read on the other side), or one event per write with
a pause between them. Raw asyncio over real TCP, so where the reads fall is known, unlike
with aiohttp's writer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

MODEL = "burst"


def sse_stream(
    texts: list[str], *, usage: tuple[int, int] | None = (5, 7), error: bool = False
) -> list[bytes]:
    """The SSE events of a streamed answer: one content chunk per text, the finish (or an
    in-stream error instead), the usage chunk, `[DONE]`."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": text}) for text in texts]
    if error:
        events.append({"error": {"message": "the engine crashed", "code": 500}})
    else:
        events.append(chunk({}, "stop"))
        if usage is not None:
            events.append(
                {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": MODEL,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": usage[0],
                        "completion_tokens": usage[1],
                        "total_tokens": usage[0] + usage[1],
                    },
                }
            )
    out = [b"data: " + json.dumps(event).encode() + b"\n\n" for event in events]
    if not error:
        out.append(b"data: [DONE]\n\n")
    return out


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class BurstUpstream:
    """Answers every POST with `events` (set per test), in one write when `pause` is None,
    else one write per event `pause` seconds apart. Records the bodies it was sent."""

    def __init__(self) -> None:
        self.events: list[bytes] = sse_stream(["a", "b"])
        self.pause: float | None = None
        self.bodies: list[Any] = []
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aenter__(self) -> BurstUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.bodies.append(json.loads(await reader.readexactly(length)))
                start = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                if self.pause is None:
                    body = b"".join(_chunked(event) for event in self.events)
                    writer.write(start + body + b"0\r\n\r\n")
                else:
                    writer.write(start)
                    for event in self.events:
                        await asyncio.sleep(self.pause)
                        writer.write(_chunked(event))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
