"""The client: request heads rendered once, a keep-alive pool per origin, connecting with
timeouts, and the one retry for a pooled connection the server closed while idle."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from urllib.parse import urlsplit

from modelport.backends.http1.connection import Connection
from modelport.backends.http1.errors import (
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    HTTPClientError,
    TotalTimeout,
)
from modelport.backends.http1.response import Response


class Origin:
    """Where connections go: scheme, host and port, and how to open them."""

    __slots__ = ("host", "key", "port", "scheme", "server_hostname", "tls")

    def __init__(self, scheme: str, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.tls = tls
        self.server_hostname = host if tls is not None else None
        self.key = (scheme, host, port)


class Request:
    """A method, target and headers rendered once; `Client.send` adds a body to it."""

    __slots__ = ("bodyless", "head", "origin")

    def __init__(self, origin: Origin, head: bytes, *, bodyless: bool = False) -> None:
        self.origin = origin
        self.head = head  # up to and including the last header line, without Content-Length
        self.bodyless = bodyless  # a HEAD request: the response has no body whatever it says


def _reason(exc: OSError) -> str:
    """Why a connection failed, in words ("Connection refused", "Name or service not known")."""
    if isinstance(exc, ssl.SSLError):
        return str(exc)
    if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        # asyncio's message names the address ("Connect call failed (...)"), not the cause.
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


class Pool:
    """Idle keep-alive connections to one origin, newest last; stale ones are closed."""

    def __init__(self, origin: Origin, client: Client) -> None:
        self.origin = origin
        self.read_timeout = client.read_timeout
        self.keepalive = client.keepalive
        self.idle: deque[Connection] = deque()
        self.live: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def take(self, now: float) -> Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.open and now - conn.idle_since < self.keepalive:
                return conn
            conn.close()
        return None

    def put(self, conn: Connection) -> None:
        self.idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle = self.idle
        while idle and (idle[0].closed or now - idle[0].idle_since >= self.keepalive):
            idle.popleft().close()
        if idle:
            wake = idle[0].idle_since + self.keepalive - now
            self._sweeper = loop.call_later(max(wake, 0.05), self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.idle.clear()
        for conn in list(self.live):
            conn.close()


class Client:
    """Keep-alive HTTP/1.1 to any number of origins; one pool per origin, unbounded in size.

    Timeouts in seconds; None means none. `headers` go with every request (a request's own
    headers replace them by name).
    """

    def __init__(
        self,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        total_timeout: float | None = None,
        keepalive: float = 4.0,
        headers: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.keepalive = keepalive
        self._headers = dict(headers or {})
        self._tls = tls
        self._pools: dict[tuple[str, str, int], Pool] = {}

    def prepare(self, method: str, url: str, headers: dict[str, str] | None = None) -> Request:
        """Renders the request head once, for any number of `send`s."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        origin = Origin(scheme, host, port, self._tls_context() if scheme == "https" else None)
        host_field = f"[{host}]" if ":" in host else host
        if port != default_port:
            host_field = f"{host_field}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = {"host": ("Host", host_field), "accept-encoding": ("Accept-Encoding", "identity")}
        for name, value in (*self._headers.items(), *(headers or {}).items()):
            fields[name.lower()] = (name, value)
        fields.pop("content-length", None)
        lines = [f"{method} {target} HTTP/1.1"]
        for name, value in fields.values():
            if any(c in name or c in value for c in "\r\n\0") or ":" in name:
                raise ValueError(f"header {name!r} has a forbidden character")
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return Request(origin, head, bodyless=method.upper() == "HEAD")

    async def request(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Response:
        return await self.send(self.prepare(method, url, headers), body)

    async def send(self, request: Request, body: bytes = b"", extra: bytes = b"") -> Response:
        """Sends the request; returns once the response head has arrived. `extra`: header
        lines this request adds to the prepared ones ("Name: value\\r\\n" each, checked by
        the caller)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = None if self.total_timeout is None else now + self.total_timeout
        origin = request.origin
        pool = self._pools.get(origin.key)
        if pool is None:
            pool = self._pools[origin.key] = Pool(origin, self)
        data = request.head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
        conn = pool.take(now)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(pool, deadline)
            response = Response(conn, deadline)
            if not conn.closed:
                conn.begin(response, data, bodyless=request.bodyless)
            try:
                while conn.heading and response._error is None:
                    await conn.wait(deadline)
            except BaseException:
                response.close()
                raise
            if response.status:
                return response
            # No head: the connection ended (or broke) first.
            response.close()
            if reused and not conn.received:
                # A pooled connection the server closed while it was idle: nothing was
                # processed, so the request goes again, once, on a fresh connection.
                reused, conn = False, None
                continue
            raise response._error or ConnectionClosed(answered=False)

    async def _connect(self, pool: Pool, deadline: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        origin = pool.origin
        limit = self.connect_timeout
        error: type[HTTPClientError] = ConnectTimeout
        if deadline is not None:
            left = deadline - loop.time()
            if limit is None or left <= limit:
                limit, error = left, TotalTimeout
        try:
            async with asyncio.timeout(limit):
                _, protocol = await loop.create_connection(
                    lambda: Connection(pool),
                    origin.host,
                    origin.port,
                    ssl=origin.tls,
                    server_hostname=origin.server_hostname,
                )
        except TimeoutError as exc:
            if exc.errno is None:  # ours, not the kernel's ETIMEDOUT
                raise error() from None
            raise ConnectError(_reason(exc)) from None
        except OSError as exc:
            raise ConnectError(_reason(exc)) from None
        return protocol

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def aclose(self) -> None:
        """Closes every connection, idle or in use."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
        # Let the transports' close callbacks run, so nothing is reported unclosed.
        await asyncio.sleep(0)
