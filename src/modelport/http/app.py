"""The application: the route table, error rendering, and start-up/shutdown, served through
RSGI (granian's native interface) or ASGI (any ASGI server)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from modelport.core.errors import InternalError, MethodNotAllowed, ModelportError, NotFound
from modelport.http import openai_routes
from modelport.http.asgi import ASGIExchange, Receive, Scope, Send
from modelport.http.exchange import Exchange
from modelport.http.rsgi import RSGIExchange
from modelport.http.state import AppState
from modelport.protocols.openai.errors import error_body
from modelport.settings import Settings

log = logging.getLogger("modelport.http")

Handler = Callable[[AppState, Exchange], Awaitable[None]]

OPENAI_PREFIXES = ("/v1", "/api/gpt/v1")


def _route_table() -> dict[str, dict[str, Handler]]:
    table: dict[str, dict[str, Handler]] = {}
    for prefix in OPENAI_PREFIXES:
        table[prefix + "/chat/completions"] = {"POST": openai_routes.chat_completions}
        table[prefix + "/models"] = {"GET": openai_routes.list_models}
    table["/health"] = {"GET": _health}
    return table


def _model_path(path: str) -> str | None:
    """The model id in `/v1/models/{id}` (under either prefix), or None."""
    for prefix in OPENAI_PREFIXES:
        head = prefix + "/models/"
        if path.startswith(head) and len(path) > len(head):
            return path[len(head) :]
    return None


async def _health(state: AppState, exchange: Exchange) -> None:
    await exchange.respond(200, b'{"status":"ok"}')


def _tune_gc() -> None:
    """Move everything alive after start-up out of the collector's way, and collect the young
    generation less often: a request allocates many short-lived objects, and full collections
    over the long-lived ones showed up as latency spikes. Done only in granian's worker (the
    RSGI hook): the ASGI entry point also runs inside test processes and servers that may
    manage the collector themselves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


class App:
    """Callable as an ASGI app; also an RSGI app (`__rsgi__` and its init/del hooks).

    State is built at start-up (the ASGI lifespan, or RSGI's init hook) from `settings`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state: AppState | None = None
        self._routes = _route_table()

    async def handle(self, exchange: Exchange) -> None:
        """Route one exchange and render any error in the OpenAI error shape."""
        try:
            methods = self._routes.get(exchange.path)
            if methods is None:
                if self.state is not None and exchange.method == "GET":
                    model_id = _model_path(exchange.path)
                    if model_id:
                        await openai_routes.get_model(self.state, exchange, model_id)
                        return
                raise NotFound(f"No route for {exchange.method} {exchange.path}.")
            handler = methods.get(exchange.method)
            if handler is None:
                allowed = ", ".join(sorted(methods))
                raise MethodNotAllowed(f"{exchange.method} is not allowed here; use {allowed}.")
            if self.state is None:
                raise InternalError("The server is still starting.")
            await handler(self.state, exchange)
        except ModelportError as error:
            if not exchange.responded:
                await self._respond_error(exchange, error)
        except Exception:
            log.exception("unhandled error on %s %s", exchange.method, exchange.path)
            if not exchange.responded:
                await self._respond_error(exchange, InternalError("Internal server error."))

    @staticmethod
    async def _respond_error(exchange: Exchange, error: ModelportError) -> None:
        headers = []
        if error.retry_after is not None:
            headers.append(("retry-after", str(max(1, round(error.retry_after)))))
        await exchange.respond(error.status, error_body(error), headers=headers)

    # ---------------------------------------------------------------- RSGI (granian)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto == "http":
            await self.handle(RSGIExchange(scope, protocol))

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Called in the worker before its loop runs: build the state on that loop.
        self.state = loop.run_until_complete(AppState.build(self.settings))
        _tune_gc()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.state is not None:
            loop.run_until_complete(self.state.aclose())
            self.state = None

    # ---------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(ASGIExchange(scope, receive, send))
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
