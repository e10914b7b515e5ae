"""Slow and idle clients against the real server, over raw sockets (docs/configuration.md,
"Slow and idle clients").

One server runs with second-long timeouts: a connection that sends nothing, headers trickled
a byte at a time (slowloris) and an idle keep-alive connection are all closed by granian once
`MODELPORT_HEADER_TIMEOUT` has passed; a body trickled a byte at a time gets 408 in the
door's error shape once `MODELPORT_BODY_TIMEOUT` has, while a body that keeps coming at the
minimum rate is read whole. Another runs with a cap of two requests in flight per address.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator

import pytest
from tests.e2e.server import RunningServer

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
BODY_MIN_RATE = 2000  # bytes per second
# A cut comes at most a quarter of the timeout late (the body sweep's tick); the rest is room
# for a loaded test machine.
MARGIN = 1.5
MAX_CONNECTIONS = 4


@pytest.fixture(scope="module")
def timeouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "MODELPORT_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "MODELPORT_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "MODELPORT_BODY_MIN_RATE": str(BODY_MIN_RATE),
        "MODELPORT_KEY_CACHE_TTL": "0",
    }
    with RunningServer(tmp_path_factory.mktemp("slow-clients"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "MODELPORT_MAX_REQUESTS_PER_CLIENT": "2",
        "MODELPORT_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "MODELPORT_KEY_CACHE_TTL": "0",
    }
    with RunningServer(tmp_path_factory.mktemp("per-client-cap"), env=env) as running:
        yield running


def connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def wait_closed(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes `sock` (reading what it sends); fails past `limit`."""
    start = time.monotonic()
    received = b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {limit} s (got {received[:80]!r})")
    return time.monotonic() - start, received


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a content-length, read off `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, value in (line.split(":", 1) for line in lines)
    }
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def post_head(server: RunningServer, path: str, length: int, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: test",
        f"Authorization: Bearer {server.admin_key}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def trickle_until_answered(
    sock: socket.socket, data: bytes, every: float, limit: float
) -> tuple[float, bytes]:
    """Send `data` a byte every `every` seconds until the server answers or closes; the
    seconds it took and what came back."""
    start = time.monotonic()
    sock.settimeout(every)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start, b""
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            if time.monotonic() - start > limit:
                pytest.fail(f"still reading after {limit} s")
            continue
        return time.monotonic() - start, answer
    pytest.fail("the whole message went through without an answer")


# ----------------------------------------------------------------------------- granian


def test_a_connection_that_sends_nothing_is_closed(timeouts: RunningServer) -> None:
    with connect(timeouts) as sock:
        elapsed, received = wait_closed(sock, HEADER_TIMEOUT + MARGIN)
    assert received == b""
    assert elapsed >= HEADER_TIMEOUT - 0.2


def test_headers_trickled_a_byte_at_a_time_are_cut_off(timeouts: RunningServer) -> None:
    """Slowloris: many connections, each sending a header byte every 0.2 s, never finishing.
    Every one is closed, unanswered, once the header timeout has passed."""
    head = b"GET /health HTTP/1.1\r\nHost: test\r\n" + b"X-Padding: slowloris\r\n" * 50
    socks = [connect(timeouts) for _ in range(20)]
    sent = dict.fromkeys(socks, 0)
    start = time.monotonic()
    closed_after: list[float] = []
    try:
        while sent and time.monotonic() - start < HEADER_TIMEOUT + MARGIN:
            for sock in list(sent):
                with contextlib.suppress(OSError):  # closed: seen by select below
                    sock.sendall(head[sent[sock] : sent[sock] + 1])
                    sent[sock] += 1
            readable, _, _ = select.select(list(sent), [], [], 0.2)
            for sock in readable:
                try:
                    answer = sock.recv(65536)
                except ConnectionResetError:
                    answer = b""
                assert answer == b"", f"trickled headers got an answer: {answer[:80]!r}"
                closed_after.append(time.monotonic() - start)
                del sent[sock]
    finally:
        for sock in socks:
            sock.close()
    assert not sent, f"{len(sent)} of {len(socks)} trickling connections stayed open"
    assert min(closed_after) >= HEADER_TIMEOUT - 0.2


def test_an_idle_keep_alive_connection_is_closed(timeouts: RunningServer) -> None:
    with connect(timeouts) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        # Kept alive: a second request a moment later is answered on the same connection.
        time.sleep(HEADER_TIMEOUT / 4)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert read_response(sock)[0] == 200
        elapsed, received = wait_closed(sock, HEADER_TIMEOUT + MARGIN)
    assert received == b""
    assert elapsed >= HEADER_TIMEOUT - 0.2


# ----------------------------------------------------------------------------- the app


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")],
)
def test_a_body_trickled_a_byte_at_a_time_gets_408(
    timeouts: RunningServer, path: str, shape: str
) -> None:
    body = json.dumps({"model": "local/smollm2-135m-instruct", "messages": []}).encode()
    with connect(timeouts) as sock:
        extra = ("anthropic-version: 2023-06-01",) if shape == "anthropic" else ()
        sock.sendall(post_head(timeouts, path, len(body), *extra))
        elapsed, answer = trickle_until_answered(sock, body, every=0.3, limit=10)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert elapsed <= BODY_TIMEOUT + MARGIN
        data = answer
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        # The rest of the body is never read, so the connection ends with the answer (not
        # kept alive until the header timeout).
        closed_after, rest = wait_closed(sock, 5)
    assert closed_after < HEADER_TIMEOUT / 2
    error = json.loads((data + rest).partition(b"\r\n\r\n")[2])
    if shape == "openai":
        assert error["error"]["code"] == "request_timeout"
        assert error["error"]["type"] == "invalid_request_error"
    else:
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert "did not arrive in time" in error["error"]["message"]


def test_a_body_that_keeps_coming_is_read_whole(timeouts: RunningServer) -> None:
    """Past the body timeout, but at more than the minimum rate: every byte buys time."""
    pad = "x" * BODY_MIN_RATE
    body = json.dumps({"model": "no/such-model", "messages": [], "pad": pad * 3}).encode()
    pieces = [body[i : i + BODY_MIN_RATE] for i in range(0, len(body), BODY_MIN_RATE)]
    with connect(timeouts) as sock:
        sock.sendall(post_head(timeouts, "/v1/chat/completions", len(body)))
        start = time.monotonic()
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(BODY_TIMEOUT * 0.6)
        status, _, answer = read_response(sock)
    assert time.monotonic() - start > BODY_TIMEOUT * 1.5  # longer than the bare timeout
    assert status != 408, answer
    assert status in (400, 404), answer


def test_requests_in_flight_per_address_are_capped(capped: RunningServer) -> None:
    """Two requests hold their slots while their bodies are still coming; a third from the
    same address is refused at once with 429 and Retry-After, and served once one ends."""
    message = {"role": "user", "content": "hi"}
    body = json.dumps({"model": "no/such-model", "messages": [message]}).encode()
    holders = [connect(capped) for _ in range(2)]
    try:
        for sock in holders:
            sock.sendall(post_head(capped, "/v1/chat/completions", len(body)) + body[:5])
        time.sleep(0.5)  # both are being read by the app now
        with connect(capped) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: test\r\n\r\n")
            status, headers, answer = read_response(sock)
        assert status == 429, answer
        assert headers["retry-after"] == "1"
        assert json.loads(answer)["error"]["code"] == "too_many_concurrent_requests"
        # One holder finishes its body: its request ends (404, unknown model), a slot frees.
        holders[0].sendall(body[5:])
        assert read_response(holders[0])[0] == 404
        with connect(capped) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            assert read_response(sock)[0] == 200
    finally:
        for sock in holders:
            sock.close()


def test_connections_beyond_the_cap_wait_for_a_free_slot(capped: RunningServer) -> None:
    """granian serves `MODELPORT_MAX_CONNECTIONS` at once; the next one is not refused but
    waits, unanswered, until one of them closes."""
    idle = [connect(capped) for _ in range(MAX_CONNECTIONS)]
    try:
        with connect(capped) as waiting:
            waiting.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            waiting.settimeout(1.0)
            with pytest.raises(TimeoutError):
                waiting.recv(65536)
            idle.pop().close()
            waiting.settimeout(10)
            assert read_response(waiting)[0] == 200
    finally:
        for sock in idle:
            sock.close()
