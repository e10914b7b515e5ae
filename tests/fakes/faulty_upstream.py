"""An OpenAI-compatible upstream that fails on purpose: raw asyncio over real TCP on 127.0.0.1,
one listening socket per scripted fault, so that where each byte goes (and when the connection
ends) is exactly what the test scripted, which an HTTP framework would not let it say.

    fake = FaultyUpstream()
    fake.start_in_thread()
    url = fake.serve("stall_mid_stream", "stall-1")  # a base URL ending in /v1, a port of its own
    ... the gateway calls it ...
    fake.exchanges("stall-1")                # what each connection saw: bytes sent, peer gone

Each fault answers `POST …/chat/completions` in the form it was asked for: an SSE stream when
the body says `"stream": true`, else one JSON body (`Content-Type: application/json`), with
the fault applied to that form (a JSON body cut in the middle, a JSON body that never ends).
Streams carry `TEXT` as content pieces (each one token for Qwen3's tokenizer), then what the
fault says. `FAULTS` lists them.

`blackhole()` is a port that accepts no connection in time (its accept queue is full), for
connect timeouts; `refused()` a port nothing listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# The content pieces a stream relays before a mid-stream fault: one Qwen3 token each.
TEXT = ("Hello", " there", ",", " my", " friend")
HUGE_LIMIT = 128 * 1024 * 1024  # the most a huge line or body sends before it stalls
HUGE_BLOCK = 64 * 1024
KEEPALIVE_EVERY = 0.2  # seconds between keep-alive comments

FAULTS = {
    "none": "a whole, well-formed answer with usage: the control",
    "http_500": "HTTP 500 with a JSON error body",
    "http_429": "HTTP 429 with Retry-After: 7",
    "reset_before_head": "the request is read, then the connection is reset (RST), no byte sent",
    "reset_mid_stream": "the head and part of the body (TEXT / half the JSON), then a reset",
    "stall_before_head": "the request is read, then nothing: the connection stays open",
    "stall_mid_stream": "the head and part of the body, then nothing: the connection stays open",
    "stall_after_finish": "TEXT and the finish reason, then nothing (no usage, no [DONE], no end "
    "of the body; JSON: the whole answer, short of its Content-Length)",
    "malformed_first": "a stream whose first event is not JSON (a JSON body that is not JSON)",
    "malformed_mid": "TEXT, then an event that is not JSON, then nothing",
    "no_usage": "a whole, well-formed answer without any usage",
    "huge_line": "TEXT, then one line that never ends (a JSON body that never ends)",
    "endless_event": "TEXT, then `data:` lines without end and never a blank line: one event "
    "that never ends (JSON: a body declared 1 GiB long)",
    "never_closes": "a whole answer with usage and [DONE] whose body never ends (JSON: framed "
    "by the end of the connection, which never comes)",
    "keepalive_forever": "TEXT, then SSE comments forever (JSON: whitespace forever)",
}


@dataclass
class Exchange:
    """One connection as the fake saw it."""

    fault: str
    label: str  # the listener's
    stream: bool | None = None  # what the request asked for (None: no request read)
    sent: int = 0  # bytes written, head included
    opened_at: float = field(default_factory=time.monotonic)
    peer_closed_at: float | None = None  # when the gateway closed its side


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _chunk_payload(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-faulty",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "faulty",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _usage_payload(usage: tuple[int, int]) -> dict[str, Any]:
    prompt, completion = usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def stream_events(*, finish: bool, usage: tuple[int, int] | None = None) -> list[bytes]:
    """The SSE events of an answer made of TEXT: the role, the pieces, then (when `finish`)
    the finish chunk, the usage chunk (unless `usage` is None) and [DONE]."""
    events = [_sse(_chunk_payload({"role": "assistant", "content": ""}))]
    events += [_sse(_chunk_payload({"content": piece})) for piece in TEXT]
    if finish:
        events.append(_sse(_chunk_payload({}, "stop")))
        if usage is not None:
            last = _chunk_payload({})
            last["choices"] = []
            last["usage"] = _usage_payload(usage)
            events.append(_sse(last))
        events.append(b"data: [DONE]\n\n")
    return events


def json_answer(usage: tuple[int, int] | None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-faulty",
        "object": "chat.completion",
        "created": 1,
        "model": "faulty",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(TEXT)},
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        body["usage"] = _usage_payload(usage)
    return json.dumps(body).encode()


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def json_head(length: int | None) -> bytes:
    """A 200 head for a JSON body: with a Content-Length, or (None) framed by the end of the
    connection."""
    framing = b"content-length: %d\r\n" % length if length is not None else b"connection: close\r\n"
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + framing + b"\r\n"


def error_answer(status: int, reason: str, headers: bytes = b"") -> bytes:
    body = json.dumps(
        {"error": {"message": f"scripted {status}", "type": "server_error", "code": status}}
    ).encode()
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        reason.encode(),
        len(body),
        headers,
        body,
    )


class _Peer:
    """One accepted connection: the request reader, and a writer that counts what it sends."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: Exchange
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.record = record
        self.gone = asyncio.Event()

    async def request(self) -> dict[str, Any] | None:
        """The next request's JSON body, or None when the gateway closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        try:
            raw = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        # Anything but a JSON object (a GET without a body: a probe) is played the fault too.
        return body if isinstance(body, dict) else {}

    async def send(self, data: bytes) -> bool:
        """Writes `data`; False once the gateway has gone."""
        if self.gone.is_set() or self.writer.is_closing():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError:  # the gateway closed its side (a reset: it left bytes unread)
            self._peer_gone()
            return False
        self.record.sent += len(data)
        return True

    async def watch(self) -> None:
        """Reads until the gateway closes its side (after the request: nothing else comes)."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self._peer_gone()

    def _peer_gone(self) -> None:
        if self.record.peer_closed_at is None:
            self.record.peer_closed_at = time.monotonic()
        self.gone.set()

    async def trickle(self, data: bytes) -> None:
        """Sends `data` every KEEPALIVE_EVERY seconds until the gateway goes away."""
        while await self.send(data):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), KEEPALIVE_EVERY)

    async def hold(self) -> None:
        """Sends nothing more and keeps the connection open until the gateway closes it."""
        await self.gone.wait()

    def reset(self) -> None:
        """Ends the connection with a TCP reset (SO_LINGER 0), not a FIN."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class FaultyUpstream:
    """Serves faults of `FAULTS`, each listener on a port of its own; records every
    connection."""

    def __init__(self) -> None:
        self._servers: dict[str, asyncio.Server] = {}
        self._records: list[Exchange] = []
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._held: list[socket.socket] = []  # blackhole listeners and the connections filling them
        # The usage reported where an answer carries any (prompt, completion): set the prompt to
        # what the gateway counts for an answer it is to believe.
        self.usage = (11, len(TEXT))

    # ------------------------------------------------------------------ running

    def start_in_thread(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="faulty-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the faulty upstream did not start")

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None
        for sock in self._held:
            sock.close()
        self._held.clear()

    async def _close(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def serve(self, fault: str, label: str) -> str:
        """A base URL (…/v1) on a port of its own where `fault` is played to every request;
        `exchanges(label)` lists its connections."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if label in self._servers:
            raise ValueError(f"label {label!r} is taken")
        assert self._loop is not None, "start_in_thread() first"
        future = asyncio.run_coroutine_threadsafe(self._listen(fault, label), self._loop)
        port = future.result(10)
        return f"http://127.0.0.1:{port}/v1"

    async def _listen(self, fault: str, label: str) -> int:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await self._connection(fault, label, reader, writer)
            finally:
                self._tasks.discard(task)

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self._servers[label] = server
        port: int = server.sockets[0].getsockname()[1]
        return port

    def exchanges(self, label: str) -> list[Exchange]:
        """The connections the listener `label` accepted, oldest first."""
        with self._lock:
            return [record for record in self._records if record.label == label]

    def blackhole(self) -> str:
        """A base URL whose port accepts no connection: a listener with a backlog of 0 whose
        accept queue is filled (and never accepted) here, so that the kernel drops every
        further SYN and a connect waits until its timeout."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        self._held.append(listener)
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            self._held.append(filler)
        # Until one has been taken into the queue: the queue is then full.
        fillers = self._held[-4:]
        _, connected, _ = select.select([], fillers, [], 2.0)
        if not connected:
            raise RuntimeError("could not fill the blackhole's accept queue")
        return f"http://127.0.0.1:{port}/v1"

    @staticmethod
    def refused() -> str:
        """A base URL where nothing listens (a connection there is refused at once)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    # ------------------------------------------------------------------ the faults

    async def _connection(
        self, fault: str, label: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        record = Exchange(fault, label)
        with self._lock:
            self._records.append(record)
        peer = _Peer(reader, writer, record)
        try:
            while True:  # keep-alive: the answers that end cleanly wait for the next request
                body = await peer.request()
                if body is None:
                    record.peer_closed_at = time.monotonic()
                    return
                record.stream = bool(body.get("stream"))
                answer = self._whole_answer(fault, record.stream)
                if answer is not None:
                    if not await peer.send(answer):
                        return
                    continue
                if fault == "reset_before_head":
                    peer.reset()
                    return
                watcher = asyncio.create_task(peer.watch())
                try:
                    if record.stream:
                        await self._stream_fault(fault, peer)
                    else:
                        await self._json_fault(fault, peer)
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                return
        finally:
            if not writer.is_closing():
                writer.close()

    def _whole_answer(self, fault: str, stream: bool) -> bytes | None:
        """The whole response of a fault that answers completely (the connection stays
        usable), or None."""
        if fault == "none":
            if stream:
                events = stream_events(finish=True, usage=self.usage)
                return SSE_HEAD + b"".join(_chunk(e) for e in events) + b"0\r\n\r\n"
            whole = json_answer(self.usage)
            return json_head(len(whole)) + whole
        if fault == "http_500":
            return error_answer(500, "Internal Server Error")
        if fault == "http_429":
            return error_answer(429, "Too Many Requests", b"retry-after: 7\r\n")
        if fault == "no_usage":
            if stream:
                body = b"".join(_chunk(e) for e in stream_events(finish=True))
                return SSE_HEAD + body + b"0\r\n\r\n"
            whole = json_answer(None)
            return json_head(len(whole)) + whole
        return None

    async def _stream_fault(self, fault: str, peer: _Peer) -> None:
        if fault == "stall_before_head":
            await peer.hold()
            return
        if fault == "never_closes":
            events = stream_events(finish=True, usage=self.usage)
            await peer.send(SSE_HEAD + b"".join(_chunk(e) for e in events))
            await peer.hold()  # no last chunk: the body never ends
            return
        if fault == "stall_after_finish":
            events = stream_events(finish=True)[:-1]  # without [DONE]
            await peer.send(SSE_HEAD + b"".join(_chunk(e) for e in events))
            await peer.hold()
            return
        if fault == "malformed_first":
            await peer.send(SSE_HEAD + _chunk(b"data: {not json at all\n\n"))
            await peer.hold()
            return
        # The rest relay TEXT first, one write per event.
        if not await peer.send(SSE_HEAD):
            return
        for event in stream_events(finish=False):
            if not await peer.send(_chunk(event)):
                return
        await asyncio.sleep(0.05)  # the gateway has relayed the text before the fault
        if fault == "reset_mid_stream":
            peer.reset()
        elif fault == "stall_mid_stream":
            await peer.hold()
        elif fault == "malformed_mid":
            await peer.send(_chunk(b'data: {"choices": [{"delta": {"content": "x"}\n\n'))
            await peer.hold()
        elif fault == "huge_line":
            await self._endless(peer, b'data: {"choices": [{"delta": {"content": "', chunked=True)
        elif fault == "endless_event":
            line = b"data: " + b"x" * 1018 + b"\n"  # 1 KiB
            await self._endless(peer, b"", chunked=True, block=line * (HUGE_BLOCK // len(line)))
        elif fault == "keepalive_forever":
            await peer.trickle(_chunk(b": keepalive\n\n"))
        else:
            raise AssertionError(f"no stream form for {fault}")

    async def _json_fault(self, fault: str, peer: _Peer) -> None:
        whole = json_answer(self.usage)
        if fault == "stall_before_head":
            await peer.hold()
        elif fault == "reset_mid_stream":
            await peer.send(json_head(len(whole)) + whole[: len(whole) // 2])
            await asyncio.sleep(0.05)
            peer.reset()
        elif fault == "stall_mid_stream":
            await peer.send(json_head(len(whole)) + whole[: len(whole) // 2])
            await peer.hold()
        elif fault == "stall_after_finish":
            await peer.send(json_head(len(whole) + 10) + whole)
            await peer.hold()
        elif fault in ("malformed_first", "malformed_mid"):
            broken = b'{"choices": [{"message": {"content": "Hel'
            await peer.send(json_head(len(broken)) + broken)
            await peer.hold()
        elif fault == "huge_line":
            await self._endless(peer, json_head(None) + b'{"choices": [{"message": {"content": "')
        elif fault == "endless_event":
            declared = json_head(1 << 30)  # a Content-Length of 1 GiB
            await self._endless(peer, declared + b'{"choices": [{"message": {"content": "')
        elif fault == "never_closes":
            await peer.send(json_head(None) + whole)  # complete, but framed by a close
            await peer.hold()
        elif fault == "keepalive_forever":
            await peer.send(json_head(None) + b"{")
            await peer.trickle(b" ")
        else:
            raise AssertionError(f"no JSON form for {fault}")

    async def _endless(
        self, peer: _Peer, opening: bytes, *, chunked: bool = False, block: bytes = b""
    ) -> None:
        """`opening`, then `block` (by default HUGE_BLOCK bytes of `x`) without end (up to
        HUGE_LIMIT, then nothing) until the gateway goes away."""
        block = block or b"x" * HUGE_BLOCK
        if opening and not await peer.send(_chunk(opening) if chunked else opening):
            return
        while peer.record.sent < HUGE_LIMIT:
            if not await peer.send(_chunk(block) if chunked else block):
                return
        await peer.hold()
