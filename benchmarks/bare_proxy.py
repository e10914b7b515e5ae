"""The Python ceiling: a bare passthrough proxy on the gateway's own stack.

granian (ASGI, one worker, uvloop) + one pooled aiohttp `ClientSession`. Per request it does the
least any gateway must: check the Authorization header against one fixed key, read the body and
parse it as JSON (msgspec), forward the same bytes to the upstream, and relay the answer, whole
or as the upstream's SSE stream piece by piece. No routing, no metering, no re-encoding: what the
gateway spends beyond this is the price of its features.

Run: `python -m benchmarks.bare_proxy --port 9200 --upstream http://127.0.0.1:9100/v1 --key K`.
The worker process reads its configuration from `BENCH_PROXY_UPSTREAM` and `BENCH_PROXY_KEY`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import msgspec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class BareProxy:
    """The ASGI app. The client session is made in the worker's lifespan start-up."""

    def __init__(self, upstream: str, key: str) -> None:
        self._endpoint = upstream.rstrip("/") + "/chat/completions"
        self._authorization = b"Bearer " + key.encode()
        self._session: aiohttp.ClientSession | None = None
        self._decoder = msgspec.json.Decoder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0),
                    timeout=aiohttp.ClientTimeout(total=600),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorized = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorized = value == self._authorization
                break
        if not authorized:
            await _reply(send, 401, b'{"error":{"message":"invalid api key"}}')
            return
        body = await _read_body(receive)
        try:
            request = self._decoder.decode(body)
        except msgspec.DecodeError:
            await _reply(send, 400, b'{"error":{"message":"body is not JSON"}}')
            return
        stream = isinstance(request, dict) and request.get("stream") is True
        session = self._session
        assert session is not None, "lifespan start-up did not run"
        headers = {"Content-Type": "application/json"}
        async with session.post(self._endpoint, data=body, headers=headers) as response:
            if not stream:
                await _reply(send, response.status, await response.read())
                return
            await send({"type": "http.response.start", "status": response.status, "headers": _SSE})
            async for piece in response.content.iter_any():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while message.get("more_body", False):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _reply(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def app_from_environment() -> BareProxy:
    """granian's factory target, called in the worker process."""
    return BareProxy(os.environ["BENCH_PROXY_UPSTREAM"], os.environ["BENCH_PROXY_KEY"])


def main() -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    parser = argparse.ArgumentParser(description="bare passthrough proxy (the Python ceiling)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", required=True, help="base URL including /v1")
    parser.add_argument("--key", required=True, help="the one API key accepted")
    args = parser.parse_args()
    os.environ["BENCH_PROXY_UPSTREAM"] = args.upstream
    os.environ["BENCH_PROXY_KEY"] = args.key
    Granian(
        "benchmarks.bare_proxy:app_from_environment",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        factory=True,
        log_level=LogLevels.warning,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    main()
