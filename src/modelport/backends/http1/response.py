"""A response as the caller sees it: status, headers, and the body as it arrives."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from modelport.backends.http1.errors import HTTPClientError

if TYPE_CHECKING:
    from modelport.backends.http1.connection import Connection

HIGH_WATER = 1024 * 1024  # unread body bytes before the socket stops being read
LOW_WATER = 256 * 1024  # ... and when it is read again


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

    def __init__(self, conn: Connection, deadline: float | None) -> None:
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
            chunks = self._chunks
            if chunks:
                if len(chunks) == 1:
                    chunk = chunks.popleft()
                else:  # several reads arrived while the consumer was busy: one piece
                    chunk = b"".join(chunks)
                    chunks.clear()
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
