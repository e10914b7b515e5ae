"""The ASGI application: lifespan, the route table, and error rendering per protocol."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from modelport.core.errors import (
    InternalError,
    MethodNotAllowed,
    ModelportError,
    NotFound,
)
from modelport.http import openai_routes
from modelport.http.asgi import Message, Receive, Request, Scope, Send, send_body
from modelport.http.state import AppState
from modelport.protocols.openai.errors import error_body
from modelport.settings import Settings

log = logging.getLogger("modelport.http")

Handler = Callable[[AppState, Request, Send], Awaitable[None]]

OPENAI_PREFIXES = ("/v1", "/api/gpt/v1")


def _route_table() -> dict[str, dict[str, Handler]]:
    table: dict[str, dict[str, Handler]] = {}
    for prefix in OPENAI_PREFIXES:
        table[prefix + "/chat/completions"] = {"POST": openai_routes.chat_completions}
        table[prefix + "/models"] = {"GET": openai_routes.list_models}
    table["/health"] = {"GET": _health}
    return table


async def _health(state: AppState, request: Request, send: Send) -> None:
    await send_body(send, 200, b'{"status":"ok"}')


class App:
    """The ASGI callable. State is built in the lifespan start-up from `settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state: AppState | None = None
        self._routes = _route_table()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.state = await AppState.build(self.settings)
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.state is not None:
                    await self.state.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            methods = self._routes.get(request.path)
            if methods is None:
                raise NotFound(f"No route for {request.method} {request.path}.")
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(sorted(methods))
                raise MethodNotAllowed(f"{request.method} is not allowed here; use {allowed}.")
            if self.state is None:
                raise InternalError("The server is still starting.")
            await handler(self.state, request, tracking_send)
        except ModelportError as error:
            if not started:
                await self._send_error(send, error)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            if not started:
                await self._send_error(send, InternalError("Internal server error."))

    @staticmethod
    async def _send_error(send: Send, error: ModelportError) -> None:
        headers = []
        if error.retry_after is not None:
            headers.append((b"retry-after", b"%d" % max(1, round(error.retry_after))))
        await send_body(send, error.status, error_body(error), headers=headers)
