"""A lean HTTP/1.1 client for upstream servers: an asyncio `Protocol` per connection, a
keep-alive pool per client, and responses whose body arrives as it is received.

What it does: `POST` (or any method) with a bytes body and `Content-Length`; responses framed
by `Content-Length`, chunked transfer encoding (extensions and trailers ignored) or the end of
the connection; `1xx` interim responses skipped; `Connection: close` and HTTP/1.0 honoured;
TLS for `https://` (the system's default trust store, the URL's host as the server name);
IPv6 literals. Timeouts: connect, read (no bytes for N seconds while waiting for the head or
the body) and a total deadline over the whole exchange. A pooled connection that the server
closed while idle is retried once on a fresh connection when it fails before any response byte.

What it does not do, on purpose: proxies, redirects, cookies, compression (it sends
`Accept-Encoding: identity`), `Expect: 100-continue`, pipelining, request-body streaming.
The read timeout starts once the request is handed to the transport, not once it is sent.

Errors are this module's own (`HTTPClientError` and subclasses); `openai_compat` maps them to
`core.errors`. This module knows nothing of modelport beyond that.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from typing import cast
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # status line and headers of one response
MAX_LINE = 8 * 1024  # a chunk-size or trailer line
HIGH_WATER = 1024 * 1024  # unread body bytes before the socket stops being read
LOW_WATER = 256 * 1024  # ... and when it is read again

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class HTTPClientError(Exception):
    """Base of every error this client raises."""


class ConnectError(HTTPClientError):
    """No connection could be made (refused, unreachable, name not found, TLS failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectTimeout(HTTPClientError):
    """The connection was not established within the connect timeout."""


class ReadTimeout(HTTPClientError):
    """No bytes arrived for the read timeout while waiting for the head or the body."""


class TotalTimeout(HTTPClientError):
    """The exchange did not finish before its total deadline."""


class ConnectionClosed(HTTPClientError):
    """The server closed the connection before the response was complete.

    `answered` says whether the response head had arrived (a cut body) or not.
    """

    def __init__(self, *, answered: bool) -> None:
        super().__init__("closed mid-response" if answered else "closed before answering")
        self.answered = answered


class ProtocolError(HTTPClientError):
    """The server sent something that is not valid HTTP/1.x."""


class Headers:
    """Response headers: case-insensitive lookup; repeated fields are joined with ", "."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields  # lower-cased names

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._fields.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields.items())

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


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


class Response:
    """One response: `status`, `headers`, then the body as chunks (`async for`) or `read()`.

    Finish with `release()` (the connection goes back to the pool if the body was received to
    its end) or `close()` (the connection is dropped: the server sees the client go away).
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_deadline",
        "_error",
        "_finished",
        "complete",
        "headers",
        "keep_alive",
        "reason",
        "status",
    )

    def __init__(self, conn: _Connection, deadline: float | None) -> None:
        self._conn = conn
        self._deadline = deadline
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._error: HTTPClientError | None = None
        self._finished = False
        self.status = 0
        self.reason = ""
        self.headers = Headers({})
        self.keep_alive = True
        self.complete = False  # the whole body has been received (not necessarily consumed)

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased ("" when absent)."""
        value = self.headers.get("content-type") or ""
        return value.partition(";")[0].strip().lower()

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet consumed."""
        return self._buffered

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.next_chunk()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def next_chunk(self) -> bytes:
        """The body bytes received since the last call, waiting for some; b"" at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= LOW_WATER:
                    self._conn.resume()
                return chunk
            if self._error is not None:
                raise self._error
            if self.complete or self._finished:
                return b""
            await self._conn.wait(self._deadline)

    async def read(self) -> bytes:
        """The rest of the body."""
        chunks = []
        while chunk := await self.next_chunk():
            chunks.append(chunk)
        return b"".join(chunks)

    def release(self) -> None:
        """Done with the response: reuse its connection if that is safe, else close it."""
        if self._finished:
            return
        self._finished = True
        self._chunks.clear()
        conn = self._conn
        if self.complete and self.keep_alive and self._error is None:
            conn.release()
        else:
            conn.close()

    def close(self) -> None:
        """Done with the response: drop its connection."""
        if self._finished:
            return
        self._finished = True
        self._chunks.clear()
        self._conn.close()

    def _push(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self._conn.pause()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: writes requests, parses responses as bytes arrive."""

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._response: Response | None = None
        self._received = False  # any byte of the current response has arrived
        self._state = _DONE
        self._pending = b""  # an incomplete head or line
        self._remaining = 0  # body or chunk bytes still to come
        self._bodyless = False

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._pool.live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.live.discard(self)
        response = self._response
        if response is not None and not response.complete and response._error is None:
            if self._state == _UNTIL_CLOSE and exc is None:
                response.complete = True
            else:
                response._error = ConnectionClosed(answered=self._state != _HEAD)
        self._wake()

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or self._state == _DONE:
            # Bytes nobody asked for: the connection's framing cannot be trusted any more.
            self._fail(ProtocolError("data received outside a response"))
            return
        self._received = True
        if self._pending:
            data = self._pending + data
            self._pending = b""
        try:
            pieces = self._parse(data, response)
        except ProtocolError as exc:
            self._fail(exc)
            return
        if pieces:
            response._push(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost says what it meant

    # ---------------------------------------------------------------- parsing

    def _parse(self, data: bytes, response: Response) -> list[bytes]:
        """Advances the state machine over `data`; returns the body bytes found in it."""
        pieces: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state in (_LENGTH, _CHUNK_DATA):
                take = min(self._remaining, end - pos)
                pieces.append(data if take == end else data[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if state == _LENGTH:
                        self._finish(response)
                    else:
                        self._state = _CHUNK_END
            elif state == _UNTIL_CLOSE:
                pieces.append(data if pos == 0 else data[pos:])
                pos = end
            elif state == _HEAD:
                head_end = data.find(b"\r\n\r\n", pos)
                if head_end < 0:
                    if end - pos > MAX_HEAD:
                        raise ProtocolError("response head too large")
                    self._pending = data[pos:]
                    break
                self._head(data[pos:head_end], response)
                pos = head_end + 4
            elif state == _DONE:
                raise ProtocolError("data after the end of the response")
            else:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    if end - pos > MAX_LINE:
                        raise ProtocolError("chunk line too long")
                    self._pending = data[pos:]
                    break
                line = data[pos:line_end]
                pos = line_end + 2
                if state == _CHUNK_SIZE:
                    try:
                        size = int(line.partition(b";")[0].strip(), 16)
                    except ValueError:
                        raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
                    if size < 0:
                        raise ProtocolError(f"bad chunk size line {line[:40]!r}")
                    self._remaining = size
                    self._state = _CHUNK_DATA if size else _TRAILERS
                elif state == _CHUNK_END:
                    if line:
                        raise ProtocolError("chunk data longer than its size")
                    self._state = _CHUNK_SIZE
                elif not line:  # _TRAILERS: an empty line ends them
                    self._finish(response)
        return pieces

    def _head(self, head: bytes, response: Response) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200:
            return  # an interim response: the real one follows
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"bad header line {line[:80]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            fields[key] = f"{fields[key]}, {text}" if key in fields else text
        response.status = status
        response.reason = reason.decode("latin-1")
        response.headers = Headers(fields)
        tokens = {t.strip() for t in fields.get("connection", "").lower().split(",")}
        if version == b"HTTP/1.0":
            response.keep_alive = "keep-alive" in tokens
        else:
            response.keep_alive = "close" not in tokens
        encoding = fields.get("transfer-encoding")
        length = fields.get("content-length")
        if status in (204, 304) or self._bodyless:
            self._finish(response)
        elif encoding is not None:
            if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                response.keep_alive = False
                self._state = _UNTIL_CLOSE
            else:
                self._state = _CHUNK_SIZE
        elif length is not None:
            try:
                size = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length!r}") from None
            if size < 0:
                raise ProtocolError(f"bad Content-Length {length!r}")
            self._remaining = size
            self._state = _LENGTH
            if size == 0:
                self._finish(response)
        else:
            response.keep_alive = False
            self._state = _UNTIL_CLOSE

    def _finish(self, response: Response) -> None:
        self._state = _DONE
        response.complete = True

    def _fail(self, exc: HTTPClientError) -> None:
        response = self._response
        if response is not None and response._error is None and not response.complete:
            response._error = exc
        self.close()
        self._wake()

    # ---------------------------------------------------------------- the client's side

    def begin(self, response: Response, data: bytes, *, bodyless: bool) -> None:
        self._response = response
        self._bodyless = bodyless
        self._received = False
        self._state = _HEAD
        self._pending = b""
        transport = self._transport
        assert transport is not None
        transport.write(data)

    @property
    def open(self) -> bool:
        """Neither side has closed it (a FIN from the server closes the transport at once)."""
        transport = self._transport
        return not self.closed and transport is not None and not transport.is_closing()

    @property
    def received(self) -> bool:
        return self._received

    @property
    def heading(self) -> bool:
        """Still waiting for the response head."""
        return self._state == _HEAD and not self.closed

    async def wait(self, deadline: float | None) -> None:
        """Until bytes arrive or the connection ends; raises the timeout that expires first."""
        pool = self._pool
        loop = self._loop
        timeout_at = None if pool.read_timeout is None else loop.time() + pool.read_timeout
        error: type[HTTPClientError] = ReadTimeout
        if deadline is not None and (timeout_at is None or deadline <= timeout_at):
            timeout_at, error = deadline, TotalTimeout
        waiter = loop.create_future()
        self._waiter = waiter
        timer = None if timeout_at is None else loop.call_at(timeout_at, _expire, waiter, error)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause(self) -> None:
        if not self._paused and self._transport is not None and not self.closed:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._transport is not None and not self.closed:
                self._transport.resume_reading()

    def release(self) -> None:
        self._response = None
        self.resume()
        if self.closed:
            return
        self.idle_since = self._loop.time()
        self._pool.put(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()
        response, self._response = self._response, None
        if response is not None and not response.complete and response._error is None:
            response._error = ConnectionClosed(answered=self._state != _HEAD)
        self._wake()


def _reason(exc: OSError) -> str:
    """Why a connection failed, in words ("Connection refused", "Name or service not known")."""
    if isinstance(exc, ssl.SSLError):
        return str(exc)
    if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        # asyncio's message names the address ("Connect call failed (...)"), not the cause.
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


def _expire(waiter: asyncio.Future[None], error: type[HTTPClientError]) -> None:
    if not waiter.done():
        waiter.set_exception(error())


class _Pool:
    """Idle keep-alive connections to one origin, newest last; stale ones are closed."""

    def __init__(self, origin: Origin, client: Client) -> None:
        self.origin = origin
        self.read_timeout = client.read_timeout
        self.keepalive = client.keepalive
        self.idle: deque[_Connection] = deque()
        self.live: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def take(self, now: float) -> _Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.open and now - conn.idle_since < self.keepalive:
                return conn
            conn.close()
        return None

    def put(self, conn: _Connection) -> None:
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
        self._pools: dict[tuple[str, str, int], _Pool] = {}

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

    async def send(self, request: Request, body: bytes = b"") -> Response:
        """Sends the request; returns once the response head has arrived."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = None if self.total_timeout is None else now + self.total_timeout
        origin = request.origin
        pool = self._pools.get(origin.key)
        if pool is None:
            pool = self._pools[origin.key] = _Pool(origin, self)
        data = request.head + b"Content-Length: %d\r\n\r\n" % len(body) + body
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

    async def _connect(self, pool: _Pool, deadline: float | None) -> _Connection:
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
                    lambda: _Connection(pool),
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
