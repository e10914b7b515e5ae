"""The RSGI adapter (granian's native interface): an `Exchange` over granian's scope and
protocol objects. Fewer Python objects per request than ASGI's message dicts."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, TypeVar

from modelport.http.client_limits import BodyDeadlines
from modelport.http.exchange import JSON, SSE_HEADERS, pump, read_limited
from modelport.http.headers import Headers, response_head

T = TypeVar("T")
_SSE = list(SSE_HEADERS)


class RSGIExchange:
    __slots__ = (
        "_deadlines",
        "_protocol",
        "_responded",
        "_scope",
        "extra_headers",
        "method",
        "path",
        "status",
    )

    def __init__(self, scope: Any, protocol: Any, deadlines: BodyDeadlines | None = None) -> None:
        self._scope = scope
        self._protocol = protocol
        self._deadlines = deadlines
        self.method: str = scope.method
        self.path: str = scope.path
        self._responded = False
        self.extra_headers: Headers = ()
        self.status = 0  # the response's status once it began

    @property
    def query(self) -> str:
        return str(self._scope.query_string)

    @property
    def client(self) -> str:
        return peer_address(self._scope.client)

    @property
    def responded(self) -> bool:
        return self._responded

    def header(self, name: str) -> str | None:
        value: str | None = self._scope.headers.get(name)
        return value

    async def body(self, limit: int) -> bytes:
        return await read_limited(self._protocol, limit, self._deadlines)

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = JSON,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._responded = True
        self.status = status
        head = response_head(content_type)  # shared: extended as a copy, never in place
        if headers or self.extra_headers:
            head = [*head, *headers, *self.extra_headers]
        self._protocol.response_bytes(status, head, body)

    async def stream(self, items: AsyncGenerator[T, None], encode: Callable[[T], bytes]) -> bool:
        self._responded = True
        self.status = 200
        head = [*_SSE, *self.extra_headers] if self.extra_headers else _SSE
        transport = self._protocol.response_stream(200, head)

        async def finish() -> None:
            return None  # the response ends when the handler returns

        return await pump(items, encode, transport.send_bytes, finish, self.disconnected)

    async def disconnected(self) -> None:
        await self._protocol.client_disconnect()


def peer_address(client: str) -> str:
    """The IP address in granian's "ADDRESS:PORT" (IPv6 in brackets: "[::1]:PORT")."""
    host, colon, port = client.rpartition(":")
    if not colon or not port.isdigit():
        return client
    return host[1:-1] if host.startswith("[") else host
