"""One connection: an asyncio `Protocol` that writes requests and parses responses (head,
Content-Length, chunked, until-close bodies) as bytes arrive, waking the waiting reader."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from modelport.backends.http1.errors import (
    ConnectionClosed,
    HTTPClientError,
    ProtocolError,
    ReadTimeout,
    TotalTimeout,
)
from modelport.backends.http1.response import Headers, Response
from modelport.core.alarms import alarms_for

if TYPE_CHECKING:
    from modelport.backends.http1.client import Pool

MAX_HEAD = 64 * 1024  # status line and headers of one response
MAX_LINE = 8 * 1024  # a chunk-size or trailer line

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


def _chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (`1a`, `1a;name=value`); ProtocolError if there is none."""
    try:
        size = int(line.partition(b";")[0].strip(), 16)
    except ValueError:
        raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
    if size < 0:
        raise ProtocolError(f"bad chunk size line {line[:40]!r}")
    return size


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: writes requests, parses responses as bytes arrive."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._alarms = alarms_for(self._loop)
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
            if state == _CHUNK_SIZE:
                # The usual case of a stream: whole chunks (an SSE event each), many per read.
                pos = self._whole_chunks(data, pos, end, pieces)
                if pos == end or self._state != _CHUNK_SIZE:
                    continue
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
                    size = _chunk_size(line)
                    self._remaining = size
                    self._state = _CHUNK_DATA if size else _TRAILERS
                elif state == _CHUNK_END:
                    if line:
                        raise ProtocolError("chunk data longer than its size")
                    self._state = _CHUNK_SIZE
                elif not line:  # _TRAILERS: an empty line ends them
                    self._finish(response)
        return pieces

    def _whole_chunks(self, data: bytes, pos: int, end: int, pieces: list[bytes]) -> int:
        """Takes the chunks at `pos` that are whole in `data` (size line, data and CRLF) in
        one pass; returns where it stopped: at the end, at the last chunk (size 0, state set
        to _TRAILERS), or at a chunk that is not whole, which the state machine takes on."""
        find = data.find
        while True:
            line_end = find(b"\r\n", pos)
            if line_end < 0 or line_end - pos > MAX_LINE:
                return pos
            line = data[pos:line_end]
            try:
                size = int(line, 16)
            except ValueError:
                size = _chunk_size(line)  # with an extension, or not a size
            if size <= 0:
                if size < 0:
                    raise ProtocolError(f"bad chunk size line {line[:40]!r}")
                self._state = _TRAILERS
                return line_end + 2
            start = line_end + 2
            stop = start + size
            if stop + 2 > end:
                return pos
            if data[stop : stop + 2] != b"\r\n":
                raise ProtocolError("chunk data longer than its size")
            pieces.append(data[start:stop])
            pos = stop + 2
            if pos == end:
                return pos

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
        if timeout_at is not None:
            # Bytes nearly always come first: an alarm, not a loop timer of its own.
            self._alarms.set(waiter, timeout_at, _expire, waiter, error)
        try:
            await waiter
        finally:
            self._waiter = None
            self._alarms.clear(waiter)

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


def _expire(waiter: asyncio.Future[None], error: type[HTTPClientError]) -> None:
    if not waiter.done():
        waiter.set_exception(error())
