"""The RSGI adapter (granian's native interface): an `Exchange` over granian's scope and
protocol objects. Fewer Python objects per request than ASGI's message dicts."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, TypeVar

from modelport.http.exchange import JSON, SSE_HEADERS, pump, read_limited

T = TypeVar("T")
_SSE = list(SSE_HEADERS)


class RSGIExchange:
    __slots__ = ("_protocol", "_responded", "_scope", "method", "path")

    def __init__(self, scope: Any, protocol: Any) -> None:
        self._scope = scope
        self._protocol = protocol
        self.method: str = scope.method
        self.path: str = scope.path
        self._responded = False

    @property
    def query(self) -> str:
        return str(self._scope.query_string)

    @property
    def responded(self) -> bool:
        return self._responded

    def header(self, name: str) -> str | None:
        value: str | None = self._scope.headers.get(name)
        return value

    async def body(self, limit: int) -> bytes:
        return await read_limited(self._protocol, limit)

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = JSON,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._responded = True
        self._protocol.response_bytes(status, [("content-type", content_type), *headers], body)

    async def stream(self, items: AsyncGenerator[T, None], encode: Callable[[T], bytes]) -> bool:
        self._responded = True
        transport = self._protocol.response_stream(200, _SSE)

        async def finish() -> None:
            return None  # the response ends when the handler returns

        return await pump(items, encode, transport.send_bytes, finish, self.disconnected)

    async def disconnected(self) -> None:
        await self._protocol.client_disconnect()
