"""Response headers the app adds itself: security headers by content type, and CORS."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from modelport.http.exchange import SSE_HEADERS
from modelport.http.headers import (
    ALLOWED_HEADERS,
    HTML_SECURITY_HEADERS,
    NOSNIFF,
    Cors,
    response_head,
    security_headers,
)
from modelport.http.rsgi import RSGIExchange


def test_html_of_any_spelling_gets_the_page_policy() -> None:
    for content_type in ("text/html", "text/html; charset=utf-8", "Text/HTML"):
        assert security_headers(content_type) == HTML_SECURITY_HEADERS
    for content_type in ("application/json", "text/plain", "text/event-stream; charset=utf-8"):
        assert security_headers(content_type) == (NOSNIFF,)
    assert NOSNIFF in SSE_HEADERS


def test_response_head_is_built_once_for_json() -> None:
    head = response_head("application/json")
    assert head == [("content-type", "application/json"), NOSNIFF]
    assert response_head("application/json") is head
    assert response_head("text/html") == [("content-type", "text/html"), *HTML_SECURITY_HEADERS]


class FakeProtocol:
    """granian's RSGI protocol object, recording what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, list[tuple[str, str]], bytes]] = []

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.sent.append((status, list(headers), body))


class FakeScope:
    method = "GET"
    path = "/x"
    query_string = ""
    client = "[2001:db8::1]:51000"
    headers: ClassVar[dict[str, str]] = {}


def test_rsgi_responses_carry_security_and_extra_headers_without_sharing_them() -> None:
    protocol = FakeProtocol()
    exchange = RSGIExchange(FakeScope(), protocol)
    assert exchange.client == "2001:db8::1"

    async def answer() -> None:
        await exchange.respond(200, b"{}")
        exchange.extra_headers = (("access-control-allow-origin", "https://a.example"),)
        await exchange.respond(429, b"{}", headers=[("retry-after", "3")])
        await exchange.respond(200, b"<p>", "text/html")

    asyncio.run(answer())
    plain, limited, page = (headers for _status, headers, _body in protocol.sent)
    assert plain == [("content-type", "application/json"), NOSNIFF]
    assert limited == [
        ("content-type", "application/json"),
        NOSNIFF,
        ("retry-after", "3"),
        ("access-control-allow-origin", "https://a.example"),
    ]
    assert ("referrer-policy", "same-origin") in page
    assert response_head("application/json") == plain  # the shared list was not extended


def test_closed_cors_adds_nothing() -> None:
    cors = Cors(())
    assert cors.closed
    assert cors.response_headers("https://a.example") == ()
    assert not cors.allows("https://a.example")
    preflight = dict(cors.preflight_headers("https://a.example", "authorization"))
    assert not [name for name in preflight if name.startswith("access-control-")]


def test_origins_are_matched_without_case_or_trailing_slash() -> None:
    cors = Cors(["https://App.Example/", "http://localhost:3000"])
    headers: dict[str, Any] = dict(cors.response_headers("https://app.example"))
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["vary"] == "Origin"
    headers = dict(cors.response_headers("HTTPS://APP.EXAMPLE"))  # echoed as the browser sent it
    assert headers["access-control-allow-origin"] == "HTTPS://APP.EXAMPLE"
    assert dict(cors.response_headers("http://localhost:3001")) == {"vary": "Origin"}
    assert dict(cors.response_headers(None)) == {"vary": "Origin"}
    assert not cors.allows("null")


def test_preflight_allows_the_sdk_headers_and_only_well_formed_extra_names() -> None:
    cors = Cors(["*"])
    preflight = dict(
        cors.preflight_headers(
            "https://x.example", "X-Stainless-Lang, x-a\r\nx-b: 1, " + "y" * 2000
        )
    )
    allowed = preflight["access-control-allow-headers"].split(", ")
    assert allowed[: len(ALLOWED_HEADERS)] == list(ALLOWED_HEADERS)
    assert "x-stainless-lang" in allowed
    assert not [name for name in allowed if "\n" in name or ":" in name]
    assert preflight["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight
