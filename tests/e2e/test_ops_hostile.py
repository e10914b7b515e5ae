"""Hostile input and failures against the operations surfaces: request ids, log lines, the
access line, /metrics, /readyz, circuit breaking and concurrency caps. The real server in a
subprocess, scripted upstreams speaking real HTTP, raw sockets where httpx refuses to send
what is sent (control bytes in headers) or where a client must vanish mid-answer.

Each test asserts what should happen, so a defect shows up as a failing test.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import string
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from tests.e2e.server import RunningServer
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script
from tests.support.ops import (
    BASE,
    DatabaseGate,
    Fakes,
    access_lines,
    backend,
    log_lines,
    model,
    parse_metrics,
    scrape,
    value,
    wait_for_gauge,
)
from tests.support.postgres import postgres_url_or_skip

pytestmark = pytest.mark.e2e

UPSTREAM_KEY = "upstream-SECRET-k3y-7Qz9"  # the steady backend's api_key: never in a log
ANTHROPIC = {"anthropic-version": "2023-06-01"}
CAP = 2  # the capped backend's max_concurrency


class Upstreams(Fakes):
    """One fake per concern, so that each one's request count means one thing."""

    def __init__(self) -> None:
        self.steady = FakeOpenAIUpstream()  # echoes; its backend has an api_key
        self.flaky = FakeOpenAIUpstream()  # the circuit's backend
        self.leaving = FakeOpenAIUpstream()  # a circuit whose probe's client leaves
        self.slow = FakeOpenAIUpstream()  # the capped backend
        self.spare = FakeOpenAIUpstream()  # the capped model's second backend
        self.all = (self.steady, self.flaky, self.leaving, self.slow, self.spare)
        self.start()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    fakes = Upstreams()
    yield fakes
    fakes.stop()


def config_for(upstreams: Upstreams) -> str:
    return (
        BASE
        + model("hp/steady", backend(upstreams.steady.base_url, "steady", api_key=UPSTREAM_KEY))
        + model(
            "hp/circuit",
            backend(upstreams.flaky.base_url, "flaky", circuit_failures=2, circuit_cooldown=1),
        )
        + "".join(
            model(
                f"hp/leaving-{how}",
                backend(
                    upstreams.leaving.base_url,
                    f"leaving-{how}",
                    circuit_failures=1,
                    circuit_cooldown=1,
                ),
            )
            for how in ("streamed", "whole")
        )
        + model(
            "hp/halfopen",
            backend(upstreams.flaky.base_url, "halfopen", circuit_failures=1, circuit_cooldown=1),
        )
        + model("hp/capped", backend(upstreams.slow.base_url, "capped", max_concurrency=CAP))
        + model(
            "hp/overflow",
            backend(upstreams.slow.base_url, "first", priority=0, max_concurrency=1),
            backend(upstreams.spare.base_url, "second", priority=1),
        )
    )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams
) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("ops-hostile")
    config = data_dir / "modelport.toml"
    config.write_text(config_for(upstreams))
    env = {"MODELPORT_LOG_FORMAT": "json", "MODELPORT_LOG_LEVEL": "info"}
    with RunningServer(data_dir, config=config, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        yield client


def make_user(http: httpx.Client, name: str) -> str:
    made = http.post("/api/v1/admin/users", json={"name": name, "balance": "100"})
    assert made.status_code == 201, made.text
    key = http.post("/api/v1/admin/keys", json={"name": "k", "user": name})
    assert key.status_code == 201, key.text
    secret: str = key.json()["secret"]
    return secret


@pytest.fixture(scope="module")
def users(http: httpx.Client) -> tuple[str, str]:
    """Two users' keys, each in an account of its own."""
    return make_user(http, "alice-ops"), make_user(http, "bob-ops")


def body_for(model_id: str, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model_id, "messages": [{"role": "user", "content": text}], **extra}


def chat(
    http: httpx.Client, model_id: str, text: str = "hello there", **extra: Any
) -> httpx.Response:
    headers = extra.pop("headers", {})
    return http.post(
        "/v1/chat/completions", json=body_for(model_id, text, **extra), headers=headers
    )


# ----------------------------------------------------------------------------- helpers


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send `request` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def chat_request(server: RunningServer, payload: dict[str, Any], request_id: bytes) -> bytes:
    """A chat completion request's bytes, with the admin key and this X-Request-Id."""
    data = json.dumps(payload).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        b"Authorization: Bearer " + server.admin_key.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"X-Request-Id: " + request_id + b"\r\n"
        b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data
    )


def raw_chat(server: RunningServer, request_id: bytes) -> bytes:
    return chat_request(server, body_for("hp/steady"), request_id)


def head_of(answer: bytes) -> tuple[int, list[tuple[str, str]]]:
    """The status and headers of a raw HTTP/1.1 answer."""
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return status, headers


class Stream:
    """A chat request on a raw socket (streamed when its payload says so): read a little,
    then dropped (the client leaving mid-answer), or read to its end."""

    def __init__(self, server: RunningServer, payload: dict[str, Any], request_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.sock.sendall(chat_request(server, payload, request_id.encode()))
        self.received = b""

    def read_until(self, marker: bytes, within: float = 10.0) -> bytes:
        deadline = time.monotonic() + within
        while marker not in self.received:
            assert time.monotonic() < deadline, self.received[:500]
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.received += chunk
        return self.received

    def read_all(self) -> bytes:
        while chunk := self.sock.recv(65536):
            self.received += chunk
        self.sock.close()
        return self.received

    def drop(self) -> None:
        """Leave at once: a reset, not a polite half-close."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


# ----------------------------------------------------------------------------- request ids


def test_control_bytes_in_a_request_id_are_refused_and_never_reach_a_log_or_the_upstream(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    seen = upstreams.steady.chat_requests()
    for bad in (
        b"cr\rinjected",
        b"lf\ninjected",
        b"nul\x00injected",
        b"\x7fdel-injected",
        b'x"}\n{"level":"error","msg":"injected"}',
        b"bare-cr\r{injected}",
    ):
        answer = raw_exchange(server.port, raw_chat(server, bad))
        if answer:  # granian refuses the request head, or modelport replaces the id
            status, headers = head_of(answer)
            ids = [v for k, v in headers if k == "x-request-id"]
            assert status == 400 or (status == 200 and ids and "injected" not in ids[0]), answer
    # None of them was relayed with its value, and the server still serves.
    for recorded in upstreams.steady.requests[seen:]:
        assert "injected" not in json.dumps(recorded.headers)
    assert chat(http, "hp/steady").status_code == 200
    assert "injected" not in server.log_path.read_text()
    log_lines(server)  # still one JSON object per line


ODD_IDS: list[tuple[str, bytes]] = [
    ("8 KB", b"a" * 8192),
    ("64 KB", b"b" * 65536),
    ("129 chars", b"c" * 129),
    ("UTF-8", "\u0438\u0434-\u20ac-\U0001f600".encode()),
    ("latin-1", b"caf\xe9"),
    ("json breakout", b'x"}{"level":"error","msg":"forged'),
    ("spaces", b"two words"),
    ("leading dash", b"-leading"),
    ("slash and dots", b"../../etc/passwd"),
    ("percent", b"%0a%0d"),
]


@pytest.mark.parametrize(("what", "bad"), ODD_IDS, ids=[what for what, _ in ODD_IDS])
def test_an_odd_request_id_is_replaced_by_one_of_the_servers_own(
    server: RunningServer, upstreams: Upstreams, what: str, bad: bytes
) -> None:
    answer = raw_exchange(server.port, raw_chat(server, bad))
    status, headers = head_of(answer)
    if status == 431:  # a request head too large is fine to refuse outright
        return
    assert status == 200, answer[:500]
    ids = [v for k, v in headers if k == "x-request-id"]
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{24}", ids[0]), headers
    made = ids[0]
    assert upstreams.steady.requests[-1].headers.get("X-Request-ID") == made
    (access,) = access_lines(server, made)
    assert access["status"] == 200
    # The log holds none of it: neither the id (replaced) nor a forged line.
    if len(bad) > 8:
        assert bad.decode("latin-1") not in server.log_path.read_text()
    assert all(entry.get("msg") != "forged" for entry in log_lines(server))


def test_repeated_request_id_headers_give_one_id_everywhere(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    request = raw_chat(server, b"first-of-two").replace(
        b"X-Request-Id: first-of-two\r\n",
        b"X-Request-Id: first-of-two\r\nX-Request-Id: second-of-two\r\n",
    )
    status, headers = head_of(raw_exchange(server.port, request))
    assert status == 200
    ids = [v for k, v in headers if k == "x-request-id"]
    assert len(ids) == 1, headers
    (kept,) = ids
    assert kept in ("first-of-two", "second-of-two")
    relayed = [
        v for k, v in upstreams.steady.requests[-1].headers.items() if k.lower() == "x-request-id"
    ]
    assert relayed == [kept]
    assert len(access_lines(server, kept)) == 1
    found = http.get("/api/v1/generation", params={"request_id": kept})
    assert found.status_code == 200 and found.json()["data"]["request_id"] == kept


# ----------------------------------------------------------------------------- log lines

FORGED = "2026-01-01 00:00:00.000 [1] ERROR modelport.access: FORGED"
# A path that decodes to a JSON breakout and a whole forged line of either format.
INJECTION_PATH = (
    "/v1/x%22%7D%0A%7B%22level%22%3A%22error%22%2C%22msg%22%3A%22forged%22%7D%0A"
    + FORGED.replace(" ", "%20").replace(":", "%3A")
    + "%0D%0A"
)


def test_a_path_that_decodes_to_a_json_breakout_stays_inside_one_json_line(
    server: RunningServer,
) -> None:
    request = (
        f"GET {INJECTION_PATH} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        "X-Request-Id: json-injection-1\r\n\r\n"
    ).encode()
    status, _ = head_of(raw_exchange(server.port, request))
    assert status == 404
    (line,) = access_lines(server, "json-injection-1")
    assert line["status"] == 404 and "FORGED" in line["path"]  # escaped, inside the string
    lines = log_lines(server)
    assert not any(entry.get("msg") == "forged" for entry in lines)
    assert not any("FORGED" in entry["msg"] and entry.get("request_id") is None for entry in lines)


def test_text_log_lines_cannot_be_forged_through_a_percent_encoded_path(tmp_path: Path) -> None:
    """MODELPORT_LOG_FORMAT=text (the default when stderr is a terminal): a log line must stay
    one line whatever the client sent; the access line writes the percent-decoded path as it
    is, so a %0A in the URL starts a line the client wrote."""
    env = {"MODELPORT_LOG_FORMAT": "text", "MODELPORT_LOG_LEVEL": "info"}
    with RunningServer(tmp_path / "text", env=env) as running:
        request = (
            f"GET {INJECTION_PATH} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
            "X-Request-Id: text-injection-1\r\n\r\n"
        ).encode()
        status, _ = head_of(raw_exchange(running.port, request))
        assert status == 404
        deadline = time.monotonic() + 5
        while "text-injection-1" not in running.log_path.read_text():
            assert time.monotonic() < deadline, running.output()
            time.sleep(0.05)
        # Terminal escapes and NUL: a terminal (or `less -R`) would obey them.
        request = (
            b"GET /v1/%1B%5B2J%1B%5B31mred%00nul HTTP/1.1\r\nHost: gateway\r\n"
            b"Connection: close\r\nX-Request-Id: text-injection-2\r\n\r\n"
        )
        assert head_of(raw_exchange(running.port, request))[0] == 404
        while "text-injection-2" not in running.log_path.read_text():
            assert time.monotonic() < deadline, running.output()
            time.sleep(0.05)
        raw_log = running.log_path.read_bytes()
    lines = raw_log.decode("utf-8", "replace").splitlines()
    problems = []
    forged = [line for line in lines if line.startswith((FORGED, '{"level"'))]
    if forged:
        problems.append("a client wrote its own log lines:\n" + "\n".join(lines[-8:-1]))
    if b"\x1b" in raw_log or b"\x00" in raw_log:
        problems.append("raw ESC or NUL bytes from a URL reached the log")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- /metrics


def test_metrics_without_a_token_answer_only_a_direct_loopback_client(
    server: RunningServer, tmp_path: Path
) -> None:
    """Without a token, /metrics answers the loopback peer itself: a request that carries
    X-Forwarded-For came through a proxy (on this machine, every client would look local), so
    it is refused whatever it claims, with or without trusted proxies."""
    url = server.base_url + "/metrics"
    assert httpx.get(url).status_code == 200
    for claimed in ("203.0.113.9", "127.0.0.1", "::1, 203.0.113.9", "unknown"):
        answer = httpx.get(url, headers={"X-Forwarded-For": claimed})
        assert answer.status_code == 403, claimed
    env = {"MODELPORT_TRUSTED_PROXIES": "127.0.0.1,::1"}
    with RunningServer(tmp_path / "proxied", config=None, env=env) as running:
        url = running.base_url + "/metrics"
        for claimed in (
            "203.0.113.9",
            "127.0.0.1, 203.0.113.9",
            "[::1]:80, 203.0.113.9:4711",
            "127.0.0.1",
            "_hidden",
        ):
            answer = httpx.get(url, headers={"X-Forwarded-For": claimed})
            assert answer.status_code == 403, (claimed, answer.text)
            assert answer.json()["error"]["type"] == "permission_error"
        assert httpx.get(url).status_code == 200


def test_the_metrics_token_is_compared_whole(tmp_path: Path) -> None:
    token = "scrape-" + "x" * 40
    env = {"MODELPORT_METRICS_TOKEN": token}
    with RunningServer(tmp_path / "token", env=env) as running:
        url = running.base_url + "/metrics"
        wrong = [
            "",
            "Bearer",
            "Bearer ",
            f"Bearer {token[:-1]}",  # a prefix
            f"Bearer {token}x",  # an extension
            f"Bearer {token[:-1]}y",  # the last character wrong
            f"Bearer y{token[1:]}",  # the first character wrong
            f"Basic {token}",
            token,
            f"Bearer {token.upper()}",
        ]
        for given in wrong:
            header = f"Authorization: {given}\r\n" if given else ""
            answer = raw_exchange(
                running.port,
                f"GET /metrics HTTP/1.1\r\nHost: g\r\nConnection: close\r\n{header}\r\n".encode(),
            )
            assert head_of(answer)[0] == 403, given
            assert token.encode() not in answer
        # A token holder is served from anywhere; loopback alone is not enough with a token.
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # The scheme is case-insensitive (RFC 9110), as Prometheus' own scrapers may send it.
        assert httpx.get(url, headers={"Authorization": f"bearer {token}"}).status_code == 200
        # Raw bytes that are not ASCII in the header: refused, never a 500.
        request = (
            b"GET /metrics HTTP/1.1\r\nHost: g\r\nConnection: close\r\nAuthorization: Bearer "
            + token.encode()[:-1]
            + b"\xff\r\n\r\n"
        )
        status, _ = head_of(raw_exchange(running.port, request))
        assert status in (400, 403)
        assert token not in running.log_path.read_text()


def test_an_empty_metrics_token_does_not_lock_out_every_scraper(tmp_path: Path) -> None:
    """MODELPORT_METRICS_TOKEN= (set, empty: what `${TOKEN:-}` in a compose file gives) should
    mean "no token" (loopback may scrape) or stop the server at start with a clear error;
    instead the token "" is required, which no header can carry (granian trims "Bearer "),
    so nobody can scrape."""
    env = {"MODELPORT_METRICS_TOKEN": ""}
    running = RunningServer(tmp_path / "empty-token", env=env)
    try:
        running.start(timeout=30)
    except RuntimeError:
        return  # refused at start: acceptable
    try:
        answer = httpx.get(running.base_url + "/metrics")
        assert answer.status_code == 200, answer.text
        # And an empty "Bearer" never opens it to other addresses either.
        forged = raw_exchange(
            running.port,
            b"GET /metrics HTTP/1.1\r\nHost: g\r\nConnection: close\r\n"
            b"Authorization: Bearer \r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
        )
        assert head_of(forged)[0] in (200, 403)
    finally:
        running.stop()


def test_metric_series_stay_bounded_whatever_clients_send(
    server: RunningServer, http: httpx.Client
) -> None:
    def words(n: int) -> str:
        return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))

    before = httpx.get(server.base_url + "/metrics").text
    marker = "zz" + words(6)
    for i in range(2000):
        junk = f"{marker}{i}{words(8)}"
        kind = i % 5
        if kind == 0:
            answer = chat(http, f"{junk}/model", headers={"X-Request-Id": junk})
            assert answer.status_code == 404, answer.text
        elif kind == 1:
            answer = http.post(
                "/api/anthropic/v1/messages",
                json={
                    "model": junk,
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "x"}],
                },
                headers=ANTHROPIC,
            )
            assert answer.status_code == 404, answer.text
        elif kind == 2:
            assert http.get(f"/{junk}/{words(4)}").status_code == 404
        elif kind == 3:
            assert http.get(f"/v1/models/{junk}").status_code == 404
        else:
            method = random.choice(["DELETE", "PUT", "PATCH"])
            assert http.request(method, f"/v1/{junk}").status_code in (404, 405)
    after = httpx.get(server.base_url + "/metrics").text
    assert marker not in after  # no client value became a label
    series_before = len(parse_metrics(before))
    series_after = len(parse_metrics(after))
    assert series_after - series_before <= 60, (series_before, series_after)
    assert len(after) - len(before) < 16_384, (len(before), len(after))


# ----------------------------------------------------------------------------- model list, TLS


def test_the_model_list_flag_takes_odd_queries_without_a_500(http: httpx.Client) -> None:
    configured = {item["id"] for item in http.get("/v1/models").json()["data"]}
    everything = {item["id"] for item in http.get("/v1/models?all=true").json()["data"]}
    assert configured < everything
    for query in ("all=TRUE", "all=yes", "all", "all=", "all[]=true", "x=1&all=0", "%00=1"):
        answer = http.get("/v1/models?" + query)
        assert answer.status_code == 200, (query, answer.text)
        assert {item["id"] for item in answer.json()["data"]} == configured, query
    for query in ("all=1", "all=false&all=true", "a=b&all=true&" + "x" * 4000):
        listed = {item["id"] for item in http.get("/v1/models?" + query).json()["data"]}
        assert listed == everything, query
    anthropic = http.get("/api/anthropic/v1/models?all=1", headers=ANTHROPIC)
    assert {item["id"] for item in anthropic.json()["data"]} >= configured


TLS_CASES = {
    "cert only": ("MODELPORT_TLS_CERT",),
    "key only": ("MODELPORT_TLS_KEY",),
    "not PEM": ("MODELPORT_TLS_CERT", "MODELPORT_TLS_KEY"),
}


@pytest.mark.parametrize("case", list(TLS_CASES))
def test_a_broken_tls_configuration_stops_the_server_with_one_clear_line(
    tmp_path: Path, case: str
) -> None:
    """Half a pair, or files that are not a certificate and key: the server refuses to
    start with one error line naming the setting (as every other configuration error does),
    never a Python traceback."""
    pem = tmp_path / "junk.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n")
    running = RunningServer(tmp_path / "tls", env=dict.fromkeys(TLS_CASES[case], str(pem)))
    with pytest.raises(RuntimeError) as failed:
        running.start(timeout=30)
    running.stop()
    output = str(failed.value)
    assert "Traceback" not in output, output[-1500:]
    assert "tls" in output.lower()


# ----------------------------------------------------------------------------- /api/v1/generation

# Requests sent with one X-Request-Id: 2,000 keeps the module near 45 s; the probe was also run
# with OPS_HOSTILE_REUSES=10000 (about 16 s more), with the same outcome.
REUSES = int(os.environ.get("OPS_HOSTILE_REUSES", "2000"))


def test_a_reused_request_id_finds_the_latest_generation_and_never_another_accounts(
    server: RunningServer, http: httpx.Client, users: tuple[str, str]
) -> None:
    alice_key, bob_key = users
    shared = "shared-" + "".join(random.choices(string.ascii_lowercase, k=10))
    alice = httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {alice_key}"}, timeout=30
    )
    bob = httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {bob_key}"}, timeout=30
    )
    with alice, bob:
        # Bob uses the id first; then Alice, REUSES - 1 times: hers are all newer.
        answer = chat(bob, "hp/steady", headers={"X-Request-Id": shared})
        assert answer.status_code == 200, answer.text
        bobs = answer.json()["id"]
        alices = ""
        for _ in range(REUSES - 1):
            answer = chat(alice, "hp/steady", headers={"X-Request-Id": shared})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-request-id"] == shared
            alices = answer.json()["id"]
        assert bobs != alices

        def lookup(client: httpx.Client, **params: str) -> httpx.Response:
            started = time.monotonic()
            found = client.get("/api/v1/generation", params=params)
            assert time.monotonic() - started < 2.0, "a lookup by request id is slow"
            return found

        # Each account sees its own latest; the admin sees the newest of all.
        mine = lookup(alice, request_id=shared)
        assert mine.status_code == 200, mine.text
        assert "chatcmpl-" + mine.json()["data"]["id"] == alices
        theirs = lookup(bob, request_id=shared)
        assert theirs.status_code == 200, theirs.text
        assert "chatcmpl-" + theirs.json()["data"]["id"] == bobs
        assert theirs.json()["data"]["backend"] is None  # not an admin
        admin = lookup(http, request_id=shared)
        assert "chatcmpl-" + admin.json()["data"]["id"] == alices

        # An id only Alice used: Bob finds nothing, by request id or by response id.
        private = "alice-only-" + "".join(random.choices(string.ascii_lowercase, k=10))
        answer = chat(alice, "hp/steady", headers={"X-Request-Id": private})
        response_id = answer.json()["id"]
        for params in (
            {"request_id": private},
            {"request_id": private, "id": ""},
            {"id": response_id},
            {"id": response_id.removeprefix("chatcmpl-")},
            {"request_id": "%"},
            {"request_id": "alice-only-%"},
            {"request_id": "*"},
        ):
            refused = lookup(bob, **params)
            assert refused.status_code == 404, (params, refused.text)
            assert "data" not in refused.json() and "tokens_prompt" not in refused.text
        assert lookup(alice, request_id=private).status_code == 200
        # Odd values are a 4xx, never a 500.
        for odd in ("x" * 10_000, "\u0000", "\ud7ff\ue000", "' OR 1=1 --"):
            assert lookup(bob, request_id=odd).status_code in (400, 404)


# ----------------------------------------------------------------------------- circuits


def burst(server: RunningServer, model_id: str, text: str, count: int) -> list[httpx.Response]:
    """`count` chat requests at once, each on its own connection."""

    async def run() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {server.admin_key}"}
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=headers, timeout=30, limits=limits
        ) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/chat/completions", json=body_for(model_id, text))
                    for _ in range(count)
                )
            )

    return asyncio.run(run())


def test_a_half_open_circuit_lets_one_probe_through_however_many_requests_arrive(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    flaky = upstreams.flaky
    flaky.on("CIRCUIT", Script(status=500))
    for _ in range(2):
        assert chat(http, "hp/circuit", "CIRCUIT a").status_code == 502
    seen = flaky.chat_requests()
    refused = chat(http, "hp/circuit", "CIRCUIT b")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "backend_unavailable"
    assert refused.headers["retry-after"] == "1"
    assert flaky.chat_requests() == seen

    # Half-open, and the probe fails slowly: twenty requests meanwhile, one reaches it.
    time.sleep(1.1)
    flaky.on("CIRCUIT", Script(status=500, first_byte_delay=1.0))
    answers = burst(server, "hp/circuit", "CIRCUIT c", 20)
    assert flaky.chat_requests() - seen == 1
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [502] + [503] * 19, statuses
    assert all("retry-after" in a.headers for a in answers if a.status_code == 503)
    # Open again after the failed probe: refused without reaching it.
    assert chat(http, "hp/circuit", "CIRCUIT d").status_code == 503
    assert flaky.chat_requests() - seen == 1

    # It recovers: the probe succeeds slowly; again one request of twenty reaches it.
    time.sleep(1.1)
    flaky.on("CIRCUIT", Script(text=["fine"], first_byte_delay=1.0))
    answers = burst(server, "hp/circuit", "CIRCUIT e", 20)
    assert flaky.chat_requests() - seen == 2
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [503] * 19, statuses
    # Closed: everything goes through, at once.
    flaky.on("CIRCUIT", Script(text=["fine"]))
    answers = burst(server, "hp/circuit", "CIRCUIT f", 10)
    assert [a.status_code for a in answers] == [200] * 10
    assert flaky.chat_requests() - seen == 12
    samples = scrape(server.base_url)
    assert value(samples, "modelport_circuit_state", backend="flaky") == 0
    assert value(samples, "modelport_circuit_opened_total", backend="flaky") == 2
    assert value(samples, "modelport_backend_in_flight", backend="flaky") == 0


def test_requests_refused_while_the_probe_is_out_are_told_the_circuit_not_a_concurrency_cap(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    """hp/halfopen has no max_concurrency: a request refused because the half-open circuit's
    probe is out should hear about the circuit (backend_unavailable), not "at their
    concurrency limit"."""
    flaky = upstreams.flaky
    flaky.on("HALFOPEN", Script(status=500))
    assert chat(http, "hp/halfopen", "HALFOPEN a").status_code == 502
    time.sleep(1.1)
    flaky.on("HALFOPEN", Script(text=["ok"], first_byte_delay=0.8))
    answers = burst(server, "hp/halfopen", "HALFOPEN b", 4)
    refused = [a for a in answers if a.status_code == 503]
    assert len(refused) == 3, [a.status_code for a in answers]
    for answer in refused:
        error = answer.json()["error"]
        assert "concurrency" not in error["message"], error
        assert error["code"] == "backend_unavailable", error


def wait_until(predicate: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["streamed", "whole"])
def test_a_probe_whose_client_leaves_lets_the_next_request_probe(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams, how: str
) -> None:
    """The half-open circuit's one probe is a request whose upstream hangs; its client gives
    up and goes. The next request should get to probe within a few seconds, not wait for
    the abandoned upstream call (up to the backend's `timeout`, 600 s by default)."""
    leaving, model_id, backend_name = upstreams.leaving, f"hp/leaving-{how}", f"leaving-{how}"
    leaving.on(f"BREAK-{how}", Script(status=500))
    leaving.on(f"HANG-{how}", Script(text=["late"], first_byte_delay=30))
    assert chat(http, model_id, f"BREAK-{how}").status_code == 502
    assert chat(http, model_id, "refused while open").status_code == 503
    time.sleep(1.1)
    seen = leaving.chat_requests()
    request_id = f"probe-leaves-{how}"
    payload = body_for(model_id, f"HANG-{how}", stream=how == "streamed")
    probe = Stream(server, payload, request_id)
    wait_until(lambda: leaving.chat_requests() > seen, what="the probe to reach the upstream")
    probe.drop()
    left = time.monotonic()
    # The upstream is fine for other prompts: within a few seconds a request gets to probe.
    while True:
        answer = chat(http, model_id, "next one")
        if answer.status_code == 200:
            break
        assert answer.status_code == 503, answer.text
        assert time.monotonic() - left < 3.0, (
            "the half-open circuit still waits for a probe whose client left"
        )
        time.sleep(0.1)
    wait_until(
        lambda: leaving.requests[seen].disconnected, 3.0, "the upstream call to be cancelled"
    )
    assert (
        wait_for_gauge(server.base_url, "modelport_backend_in_flight", 0, backend=backend_name) == 0
    )
    assert value(scrape(server.base_url), "modelport_circuit_state", backend=backend_name) == 0


# ----------------------------------------------------------------------------- max_concurrency

SLOW_WORDS = [f" w{i}" for i in range(40)]  # with delay=0.1: a four-second stream


def hold(server: RunningServer, model_id: str, request_id: str, **fields: Any) -> Stream:
    """A stream that has started (its first event read) and is still going."""
    stream = Stream(server, body_for(model_id, "SLOW please", stream=True, **fields), request_id)
    stream.read_until(b"data: ")
    assert stream.received.startswith(b"HTTP/1.1 200"), stream.received[:300]
    return stream


def test_a_stream_beyond_max_concurrency_is_refused_in_each_doors_shape_and_places_come_back(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    slow = upstreams.slow
    slow.on("SLOW", Script(text=SLOW_WORDS, delay=0.1))
    held = [hold(server, "hp/capped", f"capped-held-{i}") for i in range(CAP)]
    in_flight = value(scrape(server.base_url), "modelport_backend_in_flight", backend="capped")
    assert in_flight == CAP
    seen = slow.chat_requests()

    # The one too many, in the OpenAI door (whole and streamed) and the Anthropic door.
    for stream in (False, True):
        refused = chat(http, "hp/capped", "one too many", stream=stream)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/json")
        error = refused.json()["error"]
        assert error["type"] == "overloaded_error" and error["code"] == "overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-request-id"]
    anthropic = http.post(
        "/api/anthropic/v1/messages",
        json={
            "model": "hp/capped",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "x"}],
        },
        headers=ANTHROPIC,
    )
    assert anthropic.status_code in (503, 529), anthropic.text
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "overloaded_error"
    assert int(anthropic.headers["retry-after"]) >= 1
    assert slow.chat_requests() == seen  # none of them reached the upstream

    # The clients leave mid-stream: their places come back, and the upstream calls end.
    for leaver in held:
        leaver.drop()
    assert wait_for_gauge(server.base_url, "modelport_backend_in_flight", 0, backend="capped") == 0
    wait_until(
        lambda: all(r.disconnected for r in slow.requests[seen - CAP : seen]),
        what="the upstream calls of the streams that were left",
    )
    # Later requests are admitted again, CAP at once.
    again = [hold(server, "hp/capped", f"capped-again-{i}") for i in range(CAP)]
    for finisher in again:
        assert b"[DONE]" in finisher.read_all()
    assert wait_for_gauge(server.base_url, "modelport_backend_in_flight", 0, backend="capped") == 0
    assert value(scrape(server.base_url), "modelport_requests_in_flight", model="hp/capped") == 0


def test_one_beyond_max_concurrency_goes_to_the_next_backend(
    server: RunningServer, http: httpx.Client, upstreams: Upstreams
) -> None:
    upstreams.slow.on("SLOW", Script(text=SLOW_WORDS, delay=0.1))
    held = hold(server, "hp/overflow", "overflow-held")
    spare_seen = upstreams.spare.chat_requests()
    answer = chat(http, "hp/overflow", "overflow", headers={"X-Request-Id": "overflow-next"})
    assert answer.status_code == 200, answer.text
    assert upstreams.spare.chat_requests() == spare_seen + 1
    found = http.get("/api/v1/generation", params={"id": answer.json()["id"]}).json()["data"]
    assert found["backend"] == "second"
    held.drop()
    assert wait_for_gauge(server.base_url, "modelport_backend_in_flight", 0, backend="first") == 0


def test_the_access_line_of_a_stream_its_client_left_says_so(
    server: RunningServer, upstreams: Upstreams
) -> None:
    """A client that leaves mid-stream: the access line should say the client left (status
    499, as nginx writes, or a field saying so) and carry what was relayed and billed,
    not a plain 200 indistinguishable from a completed answer."""
    upstreams.slow.on("SLOW", Script(text=SLOW_WORDS, delay=0.1))
    unlabelled = {"door": "openai", "model": "hp/capped", "backend": ""}
    before = scrape(server.base_url)
    stream = hold(server, "hp/capped", "left-mid-stream")
    stream.read_until(b" w3")
    stream.drop()
    assert wait_for_gauge(server.base_url, "modelport_backend_in_flight", 0, backend="capped") == 0
    time.sleep(0.3)  # the settlement after the client left
    after = scrape(server.base_url)
    (line,) = access_lines(server, "left-mid-stream")
    problems = []
    if line["status"] != 499 and line.get("error_kind") is None:
        problems.append(f"the access line says {line['status']} and nothing about the leave")
    if not line.get("completion_tokens") or line.get("backend") != "capped":
        problems.append("the access line has neither the backend nor what was relayed and billed")
    for status in ("200", "499"):
        grew = value(after, "modelport_requests_total", status=status, **unlabelled) - value(
            before, "modelport_requests_total", status=status, **unlabelled
        )
        if grew:
            problems.append(f'counted in modelport_requests_total with backend="" status={status}')
    usage = httpx.get(
        server.base_url + "/api/v1/generation",
        params={"request_id": "left-mid-stream"},
        headers={"Authorization": f"Bearer {server.admin_key}"},
    ).json()["data"]
    assert usage["backend"] == "capped" and usage["tokens_completion"] > 0, usage
    assert not problems, f"{problems}\naccess line: {line}\nusage row: {usage}"


# ----------------------------------------------------------------------------- /readyz


def timed_get(url: str, timeout: float = 10.0) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    answer = httpx.get(url, timeout=timeout)
    return time.monotonic() - started, answer


async def readyz_burst(base: str, count: int) -> list[tuple[float, int]]:
    """`count` /readyz at once: (seconds, status) each."""
    async with httpx.AsyncClient(timeout=10) as client:

        async def one() -> tuple[float, int]:
            started = time.monotonic()
            answer = await client.get(base + "/readyz")
            return time.monotonic() - started, answer.status_code

        return await asyncio.gather(*(one() for _ in range(count)))


def check_stalled(base: str, gate: DatabaseGate) -> None:
    seconds, ready = timed_get(base + "/readyz")
    assert ready.status_code == 200, ready.text
    gate.stall()
    seconds, ready = timed_get(base + "/readyz")
    assert ready.status_code == 503 and ready.json()["database"] != "ok", ready.text
    assert seconds < 3.0, f"/readyz took {seconds:.1f} s"
    # An orchestrator keeps asking (several probes at once): each answer comes in time...
    for seconds, status in asyncio.run(readyz_burst(base, 8)):
        assert status == 503 and seconds < 3.5, (seconds, status)
    # ... and what does not need the database answers at once.
    seconds, health = timed_get(base + "/healthz", timeout=5)
    assert health.status_code == 200 and seconds < 1.0, seconds
    try:
        seconds, metrics = timed_get(base + "/metrics", timeout=3.5)
    except httpx.TimeoutException:
        raise AssertionError(
            "/metrics hangs: the stalled /readyz pings hold every thread of the default "
            "executor, and /metrics runs there too"
        ) from None
    assert metrics.status_code == 200 and seconds < 3.0, seconds
    gate.flow()
    deadline = time.monotonic() + 10
    while httpx.get(base + "/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "not ready after the database came back"
        time.sleep(0.1)


def test_readyz_answers_in_time_under_a_stalled_database_and_leaves_the_rest_working(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    with postgres_url_or_skip() as url:
        parts = urlsplit(url)
        gate = DatabaseGate((parts.hostname or "127.0.0.1", parts.port or 5432))
        try:
            gated = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{gate.port}"))
            config = tmp_path / "modelport.toml"
            config.write_text(BASE + model("hp/steady", backend(upstreams.steady.base_url, "s")))
            env = {"MODELPORT_DATABASE_URL": gated}
            with RunningServer(tmp_path / "stalled", config=config, env=env) as running:
                try:
                    check_stalled(running.base_url, gate)
                finally:
                    gate.flow()  # so that the server can stop
        finally:
            gate.stop()


# ----------------------------------------------------------------------------- secrets (last:
# it reads the log every test above wrote too)


def test_no_key_secret_ever_reaches_the_log(
    server: RunningServer, http: httpx.Client, users: tuple[str, str], upstreams: Upstreams
) -> None:
    steady = upstreams.steady
    # Upstreams that echo the key they were sent, in every way a failure reaches the log.
    echo = f"invalid api key: Bearer {UPSTREAM_KEY} (Authorization: Bearer {UPSTREAM_KEY})"
    steady.on("ECHO-401", Script(status=401, error_body={"error": {"message": echo}}))
    steady.on("ECHO-500", Script(status=500, error_body=echo))
    steady.on("ECHO-STREAM", Script(text=["a", "b"], error_after=2, stream_error={"error": echo}))
    alice_key, bob_key = users
    for key in (server.admin_key, alice_key, bob_key):
        client = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        with client:
            for marker in ("ECHO-401", "ECHO-500"):
                answer = chat(
                    client, "hp/steady", marker, headers={"X-Request-Id": "echo-" + marker}
                )
                assert answer.status_code >= 400
                assert UPSTREAM_KEY not in answer.text
            answer = chat(client, "hp/steady", "ECHO-STREAM", stream=True)
            assert UPSTREAM_KEY not in answer.text
    # Keys that are almost right (one character changed), in either door's header.
    near = alice_key[:-1] + ("A" if alice_key[-1] != "A" else "B")
    for headers in (
        {"Authorization": f"Bearer {near}"},
        {"x-api-key": near, **ANTHROPIC},
        {"Authorization": f"Bearer {alice_key}", "X-Request-Id": "k-" + alice_key[6:40]},
    ):
        httpx.post(
            server.base_url + "/v1/chat/completions",
            json=body_for("hp/steady", "hi"),
            headers=headers,
            timeout=30,
        )
    for marker in ("ECHO-401", "ECHO-500", "ECHO-STREAM"):
        steady.off(marker)
    time.sleep(0.3)
    text = server.log_path.read_text()
    log_lines(server)  # all still JSON
    for name, secret in (
        ("the upstream api_key", UPSTREAM_KEY),
        ("the admin key", server.admin_key),
        ("a user's key", alice_key),
        ("a user's key", bob_key),
        ("an almost-right key", near[:40]),
    ):
        assert secret not in text, f"{name} is in the server log"
