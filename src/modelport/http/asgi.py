"""The ASGI adapter: an `Exchange` over ASGI's scope, receive and send.

Granian serves modelport through RSGI (`rsgi.py`), which costs less per request; this adapter
keeps the app usable under any ASGI server (uvicorn, hypercorn) and in-process tests.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping, Sequence
from typing import Any, TypeVar

from modelport.http.client_limits import BodyDeadlines
from modelport.http.exchange import JSON, SSE_HEADERS, pump, read_limited
from modelport.http.headers import Headers, security_headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")


def _encode_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


_SSE = _encode_headers(SSE_HEADERS)


class ASGIExchange:
    __slots__ = (
        "_deadlines",
        "_headers",
        "_receive",
        "_responded",
        "_scope",
        "_send",
        "extra_headers",
        "method",
        "path",
        "status",
    )

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, deadlines: BodyDeadlines | None = None
    ) -> None:
        self._scope = scope
        self._deadlines = deadlines
        self._receive = receive
        self._send = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self._headers: dict[str, str] | None = None
        self._responded = False
        self.extra_headers: Headers = ()
        self.status = 0  # the response's status once it began

    @property
    def query(self) -> str:
        raw = self._scope.get("query_string", b"")
        return raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)

    @property
    def client(self) -> str:
        client = self._scope.get("client")  # (host, port), or None when unknown
        return str(client[0]) if client else ""

    @property
    def responded(self) -> bool:
        return self._responded

    def header(self, name: str) -> str | None:
        if self._headers is None:
            self._headers = {
                key.decode("latin-1").lower(): value.decode("latin-1")
                for key, value in self._scope["headers"]
            }
        return self._headers.get(name)

    async def body(self, limit: int) -> bytes:
        return await read_limited(self._body_chunks(), limit, self._deadlines)

    async def _body_chunks(self) -> AsyncGenerator[bytes, None]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = JSON,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._responded = True
        self.status = status
        raw = [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", b"%d" % len(body)),
            *_encode_headers(security_headers(content_type)),
            *_encode_headers(headers),
            *_encode_headers(self.extra_headers),
        ]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})
        await self._send({"type": "http.response.body", "body": body})

    async def stream(self, items: AsyncGenerator[T, None], encode: Callable[[T], bytes]) -> bool:
        self._responded = True
        self.status = 200
        send = self._send
        head = [*_SSE, *_encode_headers(self.extra_headers)]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": head})
        except BaseException:
            await items.aclose()  # the client is gone before the headers: stop and settle
            raise

        async def write(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async def finish() -> None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        return await pump(items, encode, write, finish, self.disconnected)

    async def disconnected(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
