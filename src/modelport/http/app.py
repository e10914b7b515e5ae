"""The application: the route table, error rendering, and start-up/shutdown, served through
RSGI (granian's native interface) or ASGI (any ASGI server)."""

from __future__ import annotations

import asyncio
import gc
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from modelport.core.errors import (
    AuthenticationFailed,
    InternalError,
    MethodNotAllowed,
    ModelportError,
    NotFound,
    PermissionDenied,
    RateLimited,
)
from modelport.core.ids import request_id as new_request_id
from modelport.core.trace import CURRENT, Trace, valid_request_id
from modelport.http import (
    account_routes,
    anthropic_routes,
    console_routes,
    openai_routes,
    openapi,
    responses_routes,
    web_routes,
)
from modelport.http.asgi import ASGIExchange, Receive, Scope, Send
from modelport.http.client_address import ClientAddresses
from modelport.http.client_limits import BodyDeadlines, RequestsPerClient
from modelport.http.exchange import Exchange
from modelport.http.headers import Cors
from modelport.http.logs import AccessLog
from modelport.http.rsgi import RSGIExchange
from modelport.http.state import AppState
from modelport.protocols.anthropic import errors as anthropic_errors
from modelport.protocols.openai.errors import error_body
from modelport.services import metrics
from modelport.services.auth_throttle import AuthThrottle
from modelport.settings import Settings

log = logging.getLogger("modelport.http")

Handler = Callable[[AppState, Exchange], Awaitable[None]]

OPENAI_PREFIXES = ("/v1", "/api/gpt/v1")
# Anthropic clients take a base URL without /v1 (ANTHROPIC_BASE_URL=http://host/api/anthropic);
# one given with /v1 sends /v1/v1/messages, which is served as well.
ANTHROPIC_PREFIXES = ("/v1", "/api/anthropic/v1", "/v1/v1", "/api/anthropic/v1/v1")
MODEL_PREFIXES = (*OPENAI_PREFIXES, *ANTHROPIC_PREFIXES[1:])


def _route_table() -> dict[str, dict[str, Handler]]:
    table: dict[str, dict[str, Handler]] = {}
    for prefix in OPENAI_PREFIXES:
        table[prefix + "/chat/completions"] = {"POST": openai_routes.chat_completions}
        table[prefix + "/responses"] = {"POST": responses_routes.create}
        table[prefix + "/models"] = {"GET": _list_models}
    for prefix in ANTHROPIC_PREFIXES:
        table[prefix + "/messages"] = {"POST": anthropic_routes.messages}
        table[prefix + "/messages/count_tokens"] = {"POST": anthropic_routes.count_tokens}
    for prefix in ANTHROPIC_PREFIXES[1:]:
        table[prefix + "/models"] = {"GET": anthropic_routes.list_models}
    table["/health"] = {"GET": _health}
    table["/healthz"] = {"GET": _health, "HEAD": _health}
    table["/readyz"] = {"GET": _ready, "HEAD": _ready}
    table["/metrics"] = {"GET": _metrics}
    for path in web_routes.PAGES:
        table[path] = {"GET": web_routes.page, "HEAD": web_routes.page}
    table[openapi.DOCUMENT_PATH] = {"GET": openapi.handler(table)}  # no key needed
    return table


def _speaks_anthropic(exchange: Exchange) -> bool:
    """Whether the client speaks Anthropic's API: its paths, or its version header (which
    every Anthropic client sends; /v1/models serves both kinds of client)."""
    path = exchange.path
    return (
        path.startswith("/api/anthropic/")
        or "/messages" in path
        or exchange.header("anthropic-version") is not None
    )


async def _list_models(state: AppState, exchange: Exchange) -> None:
    if exchange.header("anthropic-version") is not None:
        await anthropic_routes.list_models(state, exchange)
    else:
        await openai_routes.list_models(state, exchange)


# Paths that are probed every few seconds: their access lines are written only for failures.
PROBES = frozenset(("/health", "/healthz", "/readyz", "/metrics"))


def door_of(path: str) -> str:
    """The part of the server a path belongs to, for logs and metrics (a bounded set)."""
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith(("/messages", "/count_tokens")):
        return "anthropic"
    if "/responses" in path:
        return "responses"
    if "/models" in path and not path.startswith("/models"):
        return "models"
    if path.startswith(account_routes.PREFIX):
        return "account"
    if path.startswith(console_routes.PREFIX):
        return "console"
    if path in PROBES:
        return "ops"
    return "web"


def _model_path(path: str) -> str | None:
    """The model id in `/v1/models/{id}` (under any prefix), or None."""
    for prefix in MODEL_PREFIXES:
        head = prefix + "/models/"
        if path.startswith(head) and len(path) > len(head):
            return path[len(head) :]
    return None


async def _health(state: AppState, exchange: Exchange) -> None:
    """/health and /healthz: the process is alive and answers (nothing else is checked)."""
    await exchange.respond(200, b'{"status":"ok"}')


async def _ready(state: AppState, exchange: Exchange) -> None:
    """/readyz: the database answers and every configured model has a backend whose circuit
    is not open (503 otherwise, with what failed)."""
    ready, report = await state.readiness()
    await exchange.respond(200 if ready else 503, msgspec.json.encode(report))


async def _metrics(state: AppState, exchange: Exchange) -> None:
    """/metrics in Prometheus' text format: for the configured token's bearer, or (without a
    token) for loopback clients."""
    token = state.settings.metrics_token
    if token is not None:
        scheme, _, given = (exchange.header("authorization") or "").partition(" ")
        # The scheme in any case (RFC 9110: it is case-insensitive), the token exactly.
        bearer = scheme.lower() == "bearer"
        if not (hmac.compare_digest(given.strip().encode(), token.encode()) and bearer):
            raise PermissionDenied("/metrics needs the metrics token (MODELPORT_METRICS_TOKEN).")
    elif not _loopback(exchange.client) or exchange.header("x-forwarded-for") is not None:
        # The peer itself on loopback, and no proxy in between (a proxy on the same machine
        # would make every client look local).
        raise PermissionDenied(
            "/metrics answers loopback clients only; set MODELPORT_METRICS_TOKEN to serve it "
            "to others."
        )
    state.sample_gauges()
    if metrics.multiprocess_dir() is None:
        body = metrics.exposition()  # in memory: quick
    else:
        body = await asyncio.to_thread(metrics.exposition)  # every worker's files
    await exchange.respond(200, body, metrics.CONTENT_TYPE)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _traced_error(error: ModelportError) -> None:
    trace = CURRENT.get()
    if trace is not None:
        trace.fail(error.code or type(error).__name__, error.status)


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
        self._cors = Cors(settings.cors_origins)
        self._cors_open = not self._cors.closed
        self._addresses = ClientAddresses(settings.trusted_proxies)
        self._auth_throttle = (
            AuthThrottle(settings.auth_failure_limit, settings.auth_failure_window)
            if settings.auth_failure_limit
            else None
        )
        self._deadlines = (
            BodyDeadlines(settings.body_timeout, settings.body_min_rate)
            if settings.body_timeout
            else None
        )
        limit = settings.max_requests_per_client
        self._per_client = RequestsPerClient(limit) if limit else None
        # Access lines at info on "modelport.access" (http/logs.py writes them itself).
        self._access: AccessLog | None = None
        if settings.access_log and logging.getLogger("modelport.access").isEnabledFor(logging.INFO):
            self._access = AccessLog(settings.log_format)
        # modelport_requests_total's series by (door, model, backend, status).
        self._request_counters: dict[tuple[str, str, str, int], metrics.CounterSeries] = {}

    async def serve(self, exchange: Exchange) -> None:
        """One request, traced: its id (a valid X-Request-Id kept, else a new one) on the
        response and every log line written for it, then its access line and its count."""
        incoming = exchange.header("x-request-id")
        supplied = valid_request_id(incoming)
        request_id = incoming if supplied else new_request_id()
        assert request_id is not None
        trace = Trace(request_id, supplied=supplied, door=door_of(exchange.path))
        token = CURRENT.set(trace)
        exchange.extra_headers = (("x-request-id", request_id),)
        started = time.monotonic()
        try:
            await self.handle_counted(exchange)
        finally:
            try:
                seconds = time.monotonic() - started
                settling = trace.settling
                if settling is not None and not settling.done():
                    # Its client left mid-answer: what was relayed is being counted. Account
                    # for the request once that is known (nothing waits for it).
                    settling.add_done_callback(lambda _: self._account(exchange, trace, seconds))
                else:
                    self._account(exchange, trace, seconds)
            finally:
                CURRENT.reset(token)

    def _account(self, exchange: Exchange, trace: Trace, seconds: float) -> None:
        """The request's count in `modelport_requests_total` and its access line."""
        status = exchange.status or 499  # 499: the client left before any answer
        if status == 200 and trace.error_status is not None:
            status = trace.error_status  # a stream that failed after its 200
        key = (trace.door, trace.model or "", trace.backend or "", status)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = metrics.counter_series(
                metrics.requests, trace.door, key[1], key[2], str(status)
            )
        counter.inc()
        if self._access is not None and (status >= 400 or exchange.path not in PROBES):
            self._access.log(
                trace,
                exchange.method,
                exchange.path,
                exchange.status or 499,
                seconds,
                self._addresses.of(exchange),
            )

    async def handle_counted(self, exchange: Exchange) -> None:
        """`handle` within the cap on requests in flight per client address: one over it is
        refused (429, Retry-After) before its body is read."""
        per_client = self._per_client
        if per_client is None:
            await self.handle(exchange)
            return
        address = self._addresses.of(exchange)
        try:
            per_client.enter(address)
        except RateLimited as error:
            if self._cors_open:  # a browser reads the 429 only with these
                exchange.extra_headers = (
                    *self._cors.response_headers(exchange.header("origin")),
                    *exchange.extra_headers,
                )
            _traced_error(error)
            await self._respond_error(exchange, error)
            return
        try:
            await self.handle(exchange)
        finally:
            per_client.leave(address)

    async def handle(self, exchange: Exchange) -> None:
        """Route one exchange and render any error in the shape of the client's protocol."""
        if self._cors_open:
            exchange.extra_headers = (
                *self._cors.response_headers(exchange.header("origin")),
                *exchange.extra_headers,
            )
        throttle = self._auth_throttle
        try:
            if exchange.method == "OPTIONS" and exchange.header("access-control-request-method"):
                await self._preflight(exchange)
                return
            if throttle is not None and throttle.active and exchange.path != "/health":
                throttle.check(self._addresses.of(exchange))  # 429 before any key lookup
            methods = self._routes.get(exchange.path)
            if (
                methods is None
                and self.state is not None
                and exchange.path.startswith(console_routes.PREFIX)
                and await console_routes.route(self.state, exchange)
            ):
                return
            if methods is None and exchange.path.startswith(account_routes.PREFIX):
                if self.state is None:
                    raise InternalError("The server is still starting.")
                await account_routes.handle(self.state, exchange)
                return
            if methods is None and exchange.method in ("GET", "HEAD") and self.state is not None:
                path = exchange.path
                if path.startswith(web_routes.MODEL_PAGES):
                    await web_routes.page(self.state, exchange)
                    return
                if path.startswith(web_routes.STATIC):
                    await web_routes.static(self.state, exchange)
                    return
            if methods is None and self.state is not None and exchange.method in ("GET", "DELETE"):
                for prefix in OPENAI_PREFIXES:
                    head = prefix + "/responses/"
                    if exchange.path.startswith(head) and len(exchange.path) > len(head):
                        await responses_routes.by_id(
                            self.state, exchange, exchange.path[len(head) :]
                        )
                        return
            if methods is None:
                if self.state is not None and exchange.method == "GET":
                    model_id = _model_path(exchange.path)
                    if model_id and _speaks_anthropic(exchange):
                        await anthropic_routes.get_model(self.state, exchange, model_id)
                        return
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
            if throttle is not None and isinstance(error, AuthenticationFailed):
                throttle.failed(self._addresses.of(exchange))
            _traced_error(error)
            if not exchange.responded:
                await self._respond_error(exchange, error)
        except Exception:
            log.exception("unhandled error on %s %s", exchange.method, exchange.path)
            internal = InternalError("Internal server error.")
            _traced_error(internal)
            if not exchange.responded:
                await self._respond_error(exchange, internal)

    async def _preflight(self, exchange: Exchange) -> None:
        """A CORS preflight: what the origin may send, or (origin not allowed, or CORS closed)
        an answer that allows nothing. No key is needed and none is looked at."""
        exchange.extra_headers = tuple(
            (name, value) for name, value in exchange.extra_headers if name == "x-request-id"
        )
        headers = self._cors.preflight_headers(
            exchange.header("origin"), exchange.header("access-control-request-headers")
        )
        await exchange.respond(204, b"", "text/plain; charset=utf-8", headers)

    @staticmethod
    async def _respond_error(exchange: Exchange, error: ModelportError) -> None:
        """The error in the shape of the client's protocol: Anthropic's for its paths and
        clients, OpenAI's otherwise."""
        headers = []
        if error.retry_after is not None:
            headers.append(("retry-after", str(max(1, round(error.retry_after)))))
        if _speaks_anthropic(exchange):
            body = anthropic_errors.error_body(error)
        else:
            body = error_body(error)
        await exchange.respond(error.status, body, headers=headers)

    # ---------------------------------------------------------------- RSGI (granian)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto == "http":
            await self.serve(RSGIExchange(scope, protocol, self._deadlines))

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Called in the worker before its loop runs: build the state on that loop.
        self.state = loop.run_until_complete(AppState.build(self.settings))
        _tune_gc()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.state is not None:
            loop.run_until_complete(self.state.aclose())
            self.state = None
        if self._access is not None:
            self._access.flush()

    # ---------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.serve(ASGIExchange(scope, receive, send, self._deadlines))
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
                if self._access is not None:
                    self._access.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return
