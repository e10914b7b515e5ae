"""An incremental server-sent-events parser for upstream streams: bytes in as they arrive,
complete `(event name, data payload)` pairs out. Pure: no I/O.

What the payloads mean is `upstream_stream.py`'s job.
"""

from __future__ import annotations

from modelport.core.errors import UpstreamError

# An upstream line longer than this, or an event whose data lines add up to more, is a broken
# upstream: what one event holds is buffered until the event ends.
MAX_SSE_LINE = 16 * 1024 * 1024

SSEEvent = tuple[str | None, bytes]  # (event name or None, data payload)


class SSEParser:
    """Incremental server-sent-events parser: feed bytes as they arrive, get complete events.

    Lines end in LF or CRLF; `data:` lines of one event are joined with LF; comment lines
    (`: keepalive`) and `id:`/`retry:` fields are skipped. `[DONE]` comes out as a payload like
    any other. Feeding a stream in any split gives the same events as feeding it whole. A line,
    or the data of one event, longer than MAX_SSE_LINE raises UpstreamError: what is buffered
    stays bounded whatever the upstream sends.
    """

    __slots__ = ("_buffer", "_data", "_event", "_size")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._size = 0  # bytes in `_data`
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._buffer:
            chunk = self._buffer + chunk
        out: list[SSEEvent] = []
        if not self._data and self._event is None and b"\r" not in chunk:
            # The usual stream: LF line ends, one `data: ` line per event. Whole events are
            # taken a block at a time; anything else in a block goes line by line.
            blocks = chunk.split(b"\n\n")
            chunk = blocks.pop()  # after the last blank line: lines of an unfinished event
            for block in blocks:
                if block[:6] == b"data: " and b"\n" not in block:
                    out.append((None, block[6:]))
                else:
                    for line in block.split(b"\n"):
                        self._line(line, out)
                    self._line(b"", out)
        lines = chunk.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_SSE_LINE:
            raise UpstreamError("upstream sent a stream line longer than 16 MiB")
        for line in lines:
            self._line(line, out)
        return out

    def close(self) -> list[SSEEvent]:
        """End of input: an event not followed by a blank line still counts."""
        out: list[SSEEvent] = []
        if self._buffer:
            self._line(self._buffer, out)
            self._buffer = b""
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                out.append((self._event, data))
                self._data = []
                self._size = 0
            self._event = None
            return
        if line[0] == 0x3A:  # ":" starts a comment (keepalives)
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._size += len(value)
            if self._size > MAX_SSE_LINE:
                raise UpstreamError("upstream sent a stream event larger than 16 MiB")
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
