"""Time to first token: a lean client on raw asyncio streams that sends one paced streaming
request at a time over a kept-alive connection and timestamps the arrival of the first SSE
data line that carries content (wrk cannot see inside a response).

It reads HTTP/1.1 responses with chunked or Content-Length bodies, and reads every answer to
its end so the connection can carry the next request.
"""

from __future__ import annotations

import asyncio
import re
import time

from benchmarks.procs import BenchError

# A delta with non-empty content; role-only and empty-content chunks do not count.
_CONTENT = re.compile(rb'"content":\s*"[^"]')


class TTFTClient:
    """One keep-alive connection to one target."""

    def __init__(self, name: str, port: int, key: str | None) -> None:
        self.name = name
        self._port = port
        self._key = key
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
            self._reader = self._writer = None

    def _request(self, body: bytes) -> bytes:
        auth = f"Authorization: Bearer {self._key}\r\n" if self._key else ""
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\n{auth}Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def measure(self, body: bytes) -> float:
        """Seconds from sending the request to the first content; reads the whole answer."""
        reader, writer = await self._connect()
        first: float | None = None
        started = time.perf_counter()
        writer.write(self._request(body))
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        status = status_line.split(b" ", 2)[1]
        headers = header_block.lower()
        if status != b"200":
            raise BenchError(f"{self.name}: TTFT request got {status_line.decode()}")
        if b"transfer-encoding: chunked" in headers:
            buffered = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if first is None:
                    buffered += data
                    if _CONTENT.search(buffered):
                        first = time.perf_counter()
                if size == 0:
                    break
        else:
            length = re.search(rb"content-length:\s*(\d+)", headers)
            if length is None:
                raise BenchError(f"{self.name}: answer has neither chunks nor a length")
            remaining = int(length.group(1))
            buffered = b""
            while remaining:
                data = await reader.read(remaining)
                if not data:
                    raise BenchError(f"{self.name}: connection closed mid-answer")
                remaining -= len(data)
                if first is None:
                    buffered += data
                    if _CONTENT.search(buffered):
                        first = time.perf_counter()
        if first is None:
            raise BenchError(f"{self.name}: the answer carried no content")
        if b"connection: close" in headers:
            await self.close()
        return first - started


async def measure_interleaved(
    clients: list[TTFTClient], body: bytes, count: int
) -> dict[str, list[float]]:
    """`count` TTFT samples per client, taken one request at a time, alternating targets."""
    samples: dict[str, list[float]] = {client.name: [] for client in clients}
    try:
        for client in clients:
            await client.measure(body)  # unrecorded: opens the connection
        for index in range(count):
            # Rotate the order so no target always runs right after the same other one.
            shift = index % len(clients)
            for client in clients[shift:] + clients[:shift]:
                samples[client.name].append(await client.measure(body))
    finally:
        for client in clients:
            await client.close()
    return samples
