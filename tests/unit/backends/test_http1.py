"""The lean HTTP/1.1 client against tiny real servers on 127.0.0.1 (and ::1), scripted per test.

Each server writes raw bytes, so framing (Content-Length, chunked, until-close), splits across
packets, keep-alive and the ways a server can hang up are all exercised over real sockets.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from modelport.backends.http1 import (
    HIGH_WATER,
    Client,
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    ProtocolError,
    ReadTimeout,
    TotalTimeout,
)


@dataclass
class Received:
    line: str
    headers: dict[str, str]
    body: bytes

    @property
    def target(self) -> str:
        return self.line.split(" ")[1]


@dataclass
class ServerConn:
    """The server's end of one connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Received] = field(default_factory=list)
    saw_eof: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def peer_port(self) -> int:
        port: int = self.writer.get_extra_info("peername")[1]
        return port

    async def read_request(self) -> Received | None:
        """The next request, or None once the client has closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.saw_eof.set()
            return None
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name] = value.strip()
        lowered = {name.lower(): value for name, value in headers.items()}
        body = await self.reader.readexactly(int(lowered.get("content-length", "0")))
        received = Received(lines[0], headers, body)
        self.requests.append(received)
        return received

    async def send(self, *pieces: bytes, gap: float = 0.002) -> None:
        """Writes each piece separately, pausing between them so they arrive as separate reads."""
        for number, piece in enumerate(pieces):
            if number and gap:
                await asyncio.sleep(gap)
            self.writer.write(piece)
            await self.writer.drain()

    async def closed_by_client(self, within: float = 2.0) -> bool:
        """Whether `saw_eof` is set within `within` seconds (while `serve` is reading)."""
        try:
            async with asyncio.timeout(within):
                await self.saw_eof.wait()
        except TimeoutError:
            return False
        return True

    async def wait_eof(self, within: float = 2.0) -> bool:
        """Reads until the client closes the connection; whether it did within `within` s."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        self.saw_eof.set()
        return True


Serve = Callable[[ServerConn], Awaitable[None]]


class RawServer:
    """Runs `serve` for every accepted connection; remembers the connections in order."""

    def __init__(
        self, serve: Serve, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> None:
        self._serve = serve
        self._host = host
        self._tls = tls
        self.conns: list[ServerConn] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = ServerConn(reader, writer)
        self.conns.append(conn)
        try:
            await self._serve(conn)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the test is over, or the client went away
        finally:
            writer.close()
            self._tasks.discard(task)

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, self._host, 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[Client]:
    made = Client(connect_timeout=2.0, read_timeout=2.0, total_timeout=10.0)
    yield made
    await made.aclose()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


async def answer_each(conn: ServerConn, raw: bytes) -> None:
    while await conn.read_request() is not None:
        await conn.send(raw)


# --------------------------------------------------------------------------- framing

CL_RESPONSE = ok(b'{"answer": "hello, world"}')
CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n"
    b"1A\r\n" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n"
    b"2 ; ext\r\n\r\n\r\n"  # a chunk whose data is itself CRLF
    b"0\r\nX-Trailer: ignored\r\nX-Other: too\r\n\r\n"
)
CHUNKED_BODY = b"hello" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n"


async def serve_splits(raw: bytes, conn: ServerConn) -> None:
    """`/split/N` answers `raw` in two writes cut at byte N; `/bytes` one byte per write."""
    while (request := await conn.read_request()) is not None:
        if request.target == "/bytes":
            await conn.send(*(raw[i : i + 1] for i in range(len(raw))), gap=0.0005)
        else:
            cut = int(request.target.rsplit("/", 1)[1])
            await conn.send(raw[:cut], raw[cut:])


@pytest.mark.parametrize(
    ("raw", "body"),
    [(CL_RESPONSE, b'{"answer": "hello, world"}'), (CHUNKED_RESPONSE, CHUNKED_BODY)],
    ids=["content-length", "chunked"],
)
@pytest.mark.asyncio
async def test_a_body_split_at_every_byte_boundary_reads_the_same(
    client: Client, raw: bytes, body: bytes
) -> None:
    async with RawServer(lambda conn: serve_splits(raw, conn)) as server:
        targets = [f"/split/{cut}" for cut in range(1, len(raw))] + ["/bytes"]
        for target in targets:
            response = await client.request("POST", server.url + target, b"{}")
            assert response.status == 200, target
            assert await response.read() == body, target
            assert response.complete
            response.release()
        # Every answer was framed exactly: all of them came over the one kept-alive connection.
        assert len(server.conns) == 1
        assert len(server.conns[0].requests) == len(targets)


@pytest.mark.asyncio
async def test_body_chunks_arrive_as_they_are_sent(client: Client) -> None:
    reached_client = asyncio.Event()

    async def serve(conn: ServerConn) -> None:
        await conn.read_request()
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        await conn.send(head + b"6\r\nfirst \r\n")
        await reached_client.wait()  # the rest only once the client has the first part
        await conn.send(b"6\r\nsecond\r\n0\r\n\r\n")

    async with RawServer(serve) as server:
        response = await client.request("POST", server.url + "/", b"")
        async with asyncio.timeout(2):
            assert await response.next_chunk() == b"first "
            reached_client.set()
            assert [chunk async for chunk in response] == [b"second"]
        response.release()


@pytest.mark.asyncio
async def test_interim_responses_are_skipped(client: Client) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    async with RawServer(lambda conn: answer_each(conn, interim + ok(b"done"))) as server:
        response = await client.request("POST", server.url + "/", b"x")
        assert (response.status, await response.read()) == (200, b"done")
        response.release()


@pytest.mark.asyncio
async def test_a_body_without_framing_lasts_until_the_server_closes(client: Client) -> None:
    async def serve(conn: ServerConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ", b"two")
        conn.writer.close()

    async with RawServer(serve) as server:
        response = await client.request("POST", server.url + "/", b"")
        assert await response.read() == b"part one, two"
        assert not response.keep_alive
        response.release()
        response = await client.request("POST", server.url + "/", b"")
        response.release()
        assert len(server.conns) == 2


@pytest.mark.asyncio
async def test_head_and_204_have_no_body_and_keep_the_connection(client: Client) -> None:
    async def serve(conn: ServerConn) -> None:
        while (request := await conn.read_request()) is not None:
            if request.line.startswith("HEAD"):
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            else:
                await conn.send(b"HTTP/1.1 204 No Content\r\n\r\n")

    async with RawServer(serve) as server:
        for method in ("HEAD", "POST", "HEAD"):
            response = await client.request(method, server.url + "/", b"")
            assert await response.read() == b""
            response.release()
        assert len(server.conns) == 1


@pytest.mark.asyncio
async def test_headers_are_case_insensitive_and_content_type_has_no_parameters(
    client: Client,
) -> None:
    raw = ok(b"{}", b"RETRY-AFTER: 3", b"x-multi: a", b"X-Multi: b").replace(
        b"Content-Type: text/plain", b"content-type: Application/JSON; charset=utf-8"
    )
    async with RawServer(lambda conn: answer_each(conn, raw)) as server:
        response = await client.request("POST", server.url + "/", b"")
        assert response.headers.get("Retry-After") == "3"
        assert response.headers["retry-after"] == "3"
        assert response.headers.get("X-MULTI") == "a, b"
        assert "Content-Length" in response.headers
        assert response.headers.get("absent") is None
        assert response.content_type == "application/json"
        response.release()


@pytest.mark.asyncio
async def test_a_malformed_status_line_is_a_protocol_error(client: Client) -> None:
    async with RawServer(lambda conn: answer_each(conn, b"HTTP/1.1 OK maybe\r\n\r\n")) as server:
        with pytest.raises(ProtocolError, match="status line"):
            await client.request("POST", server.url + "/", b"")


@pytest.mark.parametrize(
    ("chunks", "error"),
    [
        (b"zz\r\nhello\r\n0\r\n\r\n", "chunk size"),
        (b"-5\r\nhello\r\n0\r\n\r\n", "chunk size"),
        (b"3\r\nabc\r\n3\r\nhello\r\n0\r\n\r\n", "longer than its size"),
    ],
    ids=["not-hex", "negative", "data-longer-than-size"],
)
@pytest.mark.asyncio
async def test_a_bad_chunk_is_a_protocol_error(client: Client, chunks: bytes, error: str) -> None:
    # Whole in one read (the parser's fast path) and one byte per read (its state machine).
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    for target in (f"/split/{len(raw)}", "/bytes"):
        async with RawServer(lambda conn: serve_splits(raw, conn)) as server:
            response = await client.request("POST", server.url + target, b"")
            with pytest.raises(ProtocolError, match=error):
                await response.read()
            response.release()


# --------------------------------------------------------------------------- the request


@pytest.mark.asyncio
async def test_the_request_carries_host_length_identity_and_custom_headers() -> None:
    made = Client(headers={"User-Agent": "modelport", "X-Default": "d"})
    async with RawServer(lambda conn: answer_each(conn, ok(b"ok"))) as server:
        response = await made.request(
            "POST",
            server.url + "/v1/chat/completions?x=1",
            b'{"a": 1}',
            headers={"x-default": "mine", "Authorization": "Bearer k"},
        )
        response.release()
        await made.aclose()
        [received] = server.conns[0].requests
    assert received.line == "POST /v1/chat/completions?x=1 HTTP/1.1"
    assert received.body == b'{"a": 1}'
    assert received.headers["Host"] == f"127.0.0.1:{server.port}"
    assert received.headers["Content-Length"] == "8"
    assert received.headers["Accept-Encoding"] == "identity"
    assert received.headers["User-Agent"] == "modelport"
    assert received.headers["Authorization"] == "Bearer k"
    assert received.headers["x-default"] == "mine"  # a request's header replaces the default
    assert "X-Default" not in received.headers


def test_a_header_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="forbidden"):
        Client().prepare("POST", "http://127.0.0.1/", {"X-Evil": "a\r\nInjected: 1"})


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Client().prepare("POST", "ftp://example.com/")


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@pytest.mark.asyncio
async def test_an_ipv6_literal(client: Client) -> None:
    async with RawServer(lambda conn: answer_each(conn, ok(b"six")), host="::1") as server:
        response = await client.request("POST", server.url + "/", b"")
        assert await response.read() == b"six"
        response.release()
        assert server.conns[0].requests[0].headers["Host"] == f"[::1]:{server.port}"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.asyncio
async def test_https_verifies_the_server_and_speaks_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with RawServer(lambda conn: answer_each(conn, ok(b"secret")), tls=server_tls) as server:
        assert server.url.startswith("https://")
        made = Client(tls=trusting)
        response = await made.request("POST", server.url + "/", b"")
        assert await response.read() == b"secret"
        response.release()
        await made.aclose()
        # The default trust store does not know this self-signed certificate.
        default = Client(connect_timeout=2.0)
        with pytest.raises(ConnectError, match="(?i)certificate"):
            await default.request("POST", server.url + "/", b"")
        await default.aclose()


# --------------------------------------------------------------------------- the pool


@pytest.mark.asyncio
async def test_keep_alive_reuses_the_newest_idle_connection(client: Client) -> None:
    async with RawServer(lambda conn: answer_each(conn, ok(b"ok"))) as server:
        first = await client.request("POST", server.url + "/", b"")
        await first.read()
        first.release()
        second = await client.request("POST", server.url + "/", b"")
        await second.read()
        second.release()
        assert len(server.conns) == 1
        # Two at once need two connections; the one released last is used next (LIFO).
        a = await client.request("POST", server.url + "/", b"")
        b = await client.request("POST", server.url + "/", b"")
        await a.read()
        await b.read()
        a.release()
        b.release()
        assert len(server.conns) == 2
        third = await client.request("POST", server.url + "/", b"")
        await third.read()
        third.release()
        b_conn = server.conns[1] if len(server.conns[1].requests) == 2 else server.conns[0]
        assert [len(conn.requests) for conn in server.conns].count(2) == 1
        assert len(b_conn.requests) == 2


@pytest.mark.parametrize(
    "raw",
    [
        ok(b"bye", b"Connection: close"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye",
    ],
    ids=["connection-close", "http-1.0"],
)
@pytest.mark.asyncio
async def test_a_connection_the_server_says_it_closes_is_not_reused(
    client: Client, raw: bytes
) -> None:
    # This server keeps serving anyway: only the client's choice decides.
    async with RawServer(lambda conn: answer_each(conn, raw)) as server:
        for _ in range(2):
            response = await client.request("POST", server.url + "/", b"")
            assert await response.read() == b"bye"
            assert not response.keep_alive
            response.release()
        assert len(server.conns) == 2
        assert await server.conns[0].closed_by_client()


@pytest.mark.asyncio
async def test_a_pooled_connection_closed_while_idle_is_retried_on_a_fresh_one(
    client: Client,
) -> None:
    async def serve(conn: ServerConn) -> None:
        await conn.read_request()
        if len(server.conns) == 1:
            await conn.send(ok(b"one"))
            # The next request arrives just as this server gives up on the idle connection.
            await conn.read_request()
            return
        await conn.send(ok(b"fresh"))
        await answer_each(conn, ok(b"fresh"))

    async with RawServer(serve) as server:
        first = await client.request("POST", server.url + "/", b"1")
        assert await first.read() == b"one"
        first.release()
        second = await client.request("POST", server.url + "/", b"2")
        assert await second.read() == b"fresh"
        second.release()
        assert [len(conn.requests) for conn in server.conns] == [2, 1]


@pytest.mark.asyncio
async def test_a_pooled_connection_the_server_already_closed_is_not_used(client: Client) -> None:
    async def serve(conn: ServerConn) -> None:
        await conn.read_request()
        await conn.send(ok(b"once"))

    async with RawServer(serve) as server:
        for _ in range(2):
            response = await client.request("POST", server.url + "/", b"")
            assert await response.read() == b"once"
            response.release()
            await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
        assert [len(conn.requests) for conn in server.conns] == [1, 1]


@pytest.mark.asyncio
async def test_a_fresh_connection_closed_before_answering_is_not_retried(client: Client) -> None:
    async def serve(conn: ServerConn) -> None:
        await conn.read_request()

    async with RawServer(serve) as server:
        with pytest.raises(ConnectionClosed) as info:
            await client.request("POST", server.url + "/", b"")
        assert not info.value.answered
        assert len(server.conns) == 1


@pytest.mark.asyncio
async def test_idle_connections_are_closed_after_the_keepalive_time() -> None:
    made = Client(keepalive=0.1)
    async with RawServer(lambda conn: answer_each(conn, ok(b"ok"))) as server:
        response = await made.request("POST", server.url + "/", b"")
        await response.read()
        response.release()
        assert await server.conns[0].closed_by_client(within=1.0)
        response = await made.request("POST", server.url + "/", b"")
        await response.read()
        response.release()
        assert len(server.conns) == 2
        await made.aclose()


# --------------------------------------------------------------------------- ending early


@pytest.mark.asyncio
async def test_abandoning_a_response_mid_body_closes_the_connection(client: Client) -> None:
    async def serve(conn: ServerConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await conn.wait_eof()

    async with RawServer(serve) as server:
        for finish in ("close", "release"):  # releasing an unfinished body closes it too
            response = await client.request("POST", server.url + "/", b"")
            assert await response.next_chunk() == b"x" * 10
            getattr(response, finish)()
            conn = server.conns[-1]
            async with asyncio.timeout(2):
                await conn.saw_eof.wait()
        assert len(server.conns) == 2


@pytest.mark.asyncio
async def test_a_cut_body_is_closed_mid_response(client: Client) -> None:
    async def serve(conn: ServerConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 10)

    async with RawServer(serve) as server:
        response = await client.request("POST", server.url + "/", b"")
        assert await response.next_chunk() == b"y" * 10
        with pytest.raises(ConnectionClosed) as info:
            await response.next_chunk()
        assert info.value.answered
        response.release()


@pytest.mark.asyncio
async def test_a_large_body_pauses_reading_until_it_is_consumed(client: Client) -> None:
    size = 32 * 1024 * 1024  # far beyond what the kernel's socket buffers hold
    body = bytes(range(256)) * (size // 256)
    drained = asyncio.Event()

    async def serve(conn: ServerConn) -> None:
        await conn.read_request()
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body)
        await conn.writer.drain()
        drained.set()
        await answer_each(conn, ok(b"next"))

    async with RawServer(serve) as server:
        response = await client.request("POST", server.url + "/", b"")
        first = await response.next_chunk()
        await asyncio.sleep(0.3)  # a slow consumer
        # The client holds about the high-water mark, not the body; the server is held back.
        assert response.buffered <= HIGH_WATER + 512 * 1024
        assert not drained.is_set()
        rest = await response.read()
        assert first + rest == body
        async with asyncio.timeout(2):
            await drained.wait()
        response.release()
        # Reading resumed for good: the connection serves the next request.
        response = await client.request("POST", server.url + "/", b"")
        assert await response.read() == b"next"
        response.release()
        assert len(server.conns) == 1


# --------------------------------------------------------------------------- timeouts


@pytest.mark.asyncio
async def test_read_timeout_waiting_for_the_head_and_for_the_body() -> None:
    made = Client(read_timeout=0.2, total_timeout=10.0)

    async def serve(conn: ServerConn) -> None:
        request = await conn.read_request()
        assert request is not None
        if request.target == "/body":
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await conn.wait_eof(within=5.0)

    async with RawServer(serve) as server:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(ReadTimeout):
            await made.request("POST", server.url + "/head", b"")
        assert 0.15 < loop.time() - began < 1.0
        response = await made.request("POST", server.url + "/body", b"")
        assert await response.next_chunk() == b"abc"
        with pytest.raises(ReadTimeout):
            await response.next_chunk()
        response.close()
        await made.aclose()


@pytest.mark.asyncio
async def test_the_total_deadline_bounds_a_response_that_keeps_trickling() -> None:
    made = Client(read_timeout=1.0, total_timeout=0.4)

    async def serve(conn: ServerConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):
            await conn.send(b"1\r\n.\r\n")
            await asyncio.sleep(0.05)

    async with RawServer(serve) as server:
        loop = asyncio.get_running_loop()
        began = loop.time()
        response = await made.request("POST", server.url + "/", b"")
        with pytest.raises(TotalTimeout):
            await response.read()
        assert loop.time() - began < 1.0
        response.close()
        await made.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.asyncio
async def test_a_refused_connection_says_why(client: Client) -> None:
    with pytest.raises(ConnectError, match="Connection refused") as info:
        await client.request("POST", f"http://127.0.0.1:{_closed_port()}/", b"")
    assert info.value.reason == "Connection refused"


@pytest.mark.asyncio
async def test_an_unknown_host_says_why(client: Client) -> None:
    with pytest.raises(ConnectError):
        await client.request("POST", "http://no-such-host.invalid/", b"")


@pytest.mark.asyncio
async def test_a_connection_not_accepted_in_time_is_a_connect_timeout() -> None:
    # A zero connect timeout expires before any handshake can finish, even on loopback.
    made = Client(connect_timeout=0.0, total_timeout=10.0)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(ConnectTimeout):
            await made.request("POST", f"http://127.0.0.1:{port}/", b"")
    await made.aclose()


@pytest.mark.asyncio
async def test_aclose_closes_connections_in_use(client: Client) -> None:
    async def serve(conn: ServerConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await conn.wait_eof()

    async with RawServer(serve) as server:
        response = await client.request("POST", server.url + "/", b"")
        await client.aclose()
        async with asyncio.timeout(2):
            await server.conns[0].saw_eof.wait()
        with pytest.raises(ConnectionClosed):
            await response.read()
        response.close()
