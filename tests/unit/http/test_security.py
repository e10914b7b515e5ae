"""Abuse and browser safety at the app's edge (issue 13), in-process through the ASGI adapter:
authentication failures throttled per client address (X-Forwarded-For believed only from
trusted proxies), CORS closed unless configured, security headers by content type, and the
last admin key kept."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.support.asgi import asgi_messages

from modelport.http.app import App
from modelport.http.exchange import Exchange
from modelport.http.state import AppState
from modelport.services.keys import create_key
from modelport.settings import load_settings
from modelport.store import open_store
from modelport.store.base import KeyGrant

Response = tuple[int, dict[str, str], bytes]


class Client:
    def __init__(self, app: App) -> None:
        self.app = app

    async def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        client: tuple[str, int] | None = ("192.0.2.10", 40000),
    ) -> Response:
        raw = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
        if key:
            raw.append((b"authorization", f"Bearer {key}".encode()))
        scope: dict[str, Any] = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": b"",
            "headers": raw,
            "client": client,
        }
        sent = await asgi_messages(self.app, scope, b"")
        start = sent[0]
        names = [k.decode() for k, _ in start["headers"]]
        assert len(names) == len(set(names)), f"a header sent twice: {names}"
        response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return start["status"], response_headers, body


class Gateway:
    def __init__(self, app: App, admin_key: str) -> None:
        self.app = app
        self.http = Client(app)
        self.admin_key = admin_key
        self.lookups = 0

    @property
    def state(self) -> AppState:
        assert self.app.state is not None
        return self.app.state


@asynccontextmanager
async def running(tmp_path: Path, **env: str) -> AsyncIterator[Gateway]:
    settings = load_settings(
        {
            "MODELPORT_DATA_DIR": str(tmp_path / "data"),
            "MODELPORT_KEY_CACHE_TTL": "0",  # every authentication reads the store
            **{f"MODELPORT_{name.upper()}": value for name, value in env.items()},
        }
    )
    store = open_store(settings)
    _record, admin_key = create_key(store, "admin", role="admin")
    store.close()
    app = App(settings)
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    replies: list[dict[str, Any]] = []
    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        replies.append(message)
        started.set()

    await queue.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(app({"type": "lifespan"}, queue.get, lifespan_send))
    await started.wait()
    assert replies[0]["type"] == "lifespan.startup.complete"
    gateway = Gateway(app, admin_key)
    sql = gateway.state.store
    find_grant: Callable[[str], KeyGrant | None] = sql.find_grant

    def counted(secret_hash: str) -> KeyGrant | None:
        gateway.lookups += 1
        return find_grant(secret_hash)

    sql.find_grant = counted  # type: ignore[method-assign]
    try:
        yield gateway
    finally:
        await queue.put({"type": "lifespan.shutdown"})
        await lifespan


def old_style_guess() -> str:
    """A key of the shape issued before the checksum: only a lookup can refuse it."""
    return "sk-mp-" + secrets.token_urlsafe(32)


def error_of(body: bytes) -> dict[str, Any]:
    error: dict[str, Any] = msgspec.json.decode(body)["error"]
    return error


# ---------------------------------------------------------------------------- throttling


@pytest.mark.asyncio
async def test_repeated_failures_from_one_address_are_throttled(tmp_path: Path) -> None:
    async with running(tmp_path, auth_failure_limit="3") as gateway:
        http, attacker = gateway.http, ("198.51.100.7", 5000)
        for _ in range(3):
            status, _, _ = await http.request(
                "GET", "/api/v1/me", key=old_style_guess(), client=attacker
            )
            assert status == 401
        assert gateway.lookups == 3
        status, headers, body = await http.request(
            "GET", "/api/v1/me", key=old_style_guess(), client=attacker
        )
        assert status == 429
        assert 1 <= int(headers["retry-after"]) <= 60
        assert error_of(body)["code"] == "too_many_authentication_failures"
        # Even the right key is not looked at from there until the window ends...
        status, _, _ = await http.request(
            "GET", "/api/v1/me", key=gateway.admin_key, client=attacker
        )
        assert status == 429
        assert gateway.lookups == 3
        # ...while other addresses are served as ever, and health checks pass.
        status, _, _ = await http.request("GET", "/api/v1/me", key=gateway.admin_key)
        assert status == 200
        status, _, _ = await http.request("GET", "/health", client=attacker)
        assert status == 200
        # The Anthropic door: the same throttle, its own error shape.
        status, _, body = await http.request(
            "POST", "/v1/messages", key=old_style_guess(), client=attacker
        )
        assert status == 429
        assert msgspec.json.decode(body)["error"]["type"] == "rate_limit_error"


@pytest.mark.asyncio
async def test_failures_without_a_key_or_with_a_mistyped_one_count_too(tmp_path: Path) -> None:
    async with running(tmp_path, auth_failure_limit="2") as gateway:
        http, client = gateway.http, ("198.51.100.8", 5000)
        assert (await http.request("GET", "/api/v1/me", client=client))[0] == 401
        typo = gateway.admin_key[:-1] + ("A" if gateway.admin_key[-1] != "A" else "B")
        assert (await http.request("GET", "/api/v1/me", key=typo, client=client))[0] == 401
        assert gateway.lookups == 0  # a missing key and a bad checksum need no lookup
        assert (await http.request("GET", "/api/v1/me", key=typo, client=client))[0] == 429


@pytest.mark.asyncio
async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, auth_failure_limit="2") as gateway:
        http, peer = gateway.http, ("198.51.100.9", 5000)
        for n in range(2):  # a client cannot pose as many by writing the header
            forwarded = {"x-forwarded-for": f"203.0.113.{n}"}
            status, _, _ = await http.request(
                "GET", "/api/v1/me", key=old_style_guess(), client=peer, headers=forwarded
            )
            assert status == 401
        forwarded = {"x-forwarded-for": "203.0.113.99"}
        status, _, _ = await http.request(
            "GET", "/api/v1/me", key=gateway.admin_key, client=peer, headers=forwarded
        )
        assert status == 429


@pytest.mark.asyncio
async def test_behind_a_trusted_proxy_the_forwarded_client_is_throttled(tmp_path: Path) -> None:
    async with running(
        tmp_path, auth_failure_limit="2", trusted_proxies="10.0.0.0/8, 192.0.2.1"
    ) as gateway:
        http, proxy = gateway.http, ("10.1.2.3", 5000)
        attacker = {"x-forwarded-for": "spoofed, 203.0.113.5"}
        for _ in range(2):
            status, _, _ = await http.request(
                "GET", "/api/v1/me", key=old_style_guess(), client=proxy, headers=attacker
            )
            assert status == 401
        status, _, _ = await http.request(
            "GET", "/api/v1/me", key=gateway.admin_key, client=proxy, headers=attacker
        )
        assert status == 429
        # Another client through the same proxy (and a second trusted hop) is not affected.
        other = {"x-forwarded-for": "203.0.113.6, 192.0.2.1"}
        status, _, _ = await http.request(
            "GET", "/api/v1/me", key=gateway.admin_key, client=proxy, headers=other
        )
        assert status == 200


# ---------------------------------------------------------------------------- CORS


@pytest.mark.asyncio
async def test_cors_is_closed_by_default(tmp_path: Path) -> None:
    async with running(tmp_path) as gateway:
        http = gateway.http
        origin = {"origin": "https://evil.example"}
        status, headers, _ = await http.request(
            "GET", "/api/v1/me", key=gateway.admin_key, headers=origin
        )
        assert status == 200
        assert not [name for name in headers if name.startswith("access-control-")]
        preflight = {
            **origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        }
        status, headers, body = await http.request(
            "OPTIONS", "/v1/chat/completions", headers=preflight
        )
        assert (status, body) == (204, b"")
        assert not [name for name in headers if name.startswith("access-control-")]
        assert gateway.lookups == 1  # a preflight looks at no key
        # OPTIONS that is not a preflight is routed as before.
        assert (await http.request("OPTIONS", "/v1/chat/completions"))[0] == 405


@pytest.mark.asyncio
async def test_cors_for_configured_origins(tmp_path: Path) -> None:
    async with running(
        tmp_path, cors_origins="https://app.example, http://localhost:5173/"
    ) as gateway:
        http = gateway.http
        allowed = {"origin": "https://app.example"}
        status, headers, _ = await http.request(
            "GET", "/api/v1/me", key=gateway.admin_key, headers=allowed
        )
        assert status == 200
        assert headers["access-control-allow-origin"] == "https://app.example"
        assert headers["vary"] == "Origin"
        assert "retry-after" in headers["access-control-expose-headers"]
        assert "access-control-allow-credentials" not in headers
        # Errors carry them too, so the page can read what went wrong.
        status, headers, _ = await http.request("GET", "/api/v1/me", headers=allowed)
        assert status == 401
        assert headers["access-control-allow-origin"] == "https://app.example"

        status, headers, _ = await http.request(
            "GET", "/api/v1/me", key=gateway.admin_key, headers={"origin": "https://evil.example"}
        )
        assert status == 200
        assert "access-control-allow-origin" not in headers
        assert headers["vary"] == "Origin"

        preflight = {
            "origin": "http://localhost:5173",
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-stainless-os, content-type, bad\x7fname",
        }
        status, headers, _ = await http.request("OPTIONS", "/v1/messages", headers=preflight)
        assert status == 204
        assert headers["access-control-allow-origin"] == "http://localhost:5173"
        assert set(headers["access-control-allow-methods"].split(", ")) >= {"GET", "POST"}
        allowed_headers = headers["access-control-allow-headers"].split(", ")
        for name in ("authorization", "x-api-key", "anthropic-version", "content-type"):
            assert name in allowed_headers
        assert "x-stainless-os" in allowed_headers
        assert not [name for name in allowed_headers if "bad" in name]
        assert headers["access-control-max-age"] == "600"
        assert "Origin" in headers["vary"]

        refused = {**preflight, "origin": "https://evil.example"}
        status, headers, _ = await http.request("OPTIONS", "/v1/messages", headers=refused)
        assert status == 204
        assert "access-control-allow-origin" not in headers
        assert "access-control-allow-headers" not in headers


@pytest.mark.asyncio
async def test_cors_for_any_origin(tmp_path: Path) -> None:
    async with running(tmp_path, cors_origins="*") as gateway:
        status, headers, _ = await gateway.http.request(
            "GET", "/v1/models", headers={"origin": "https://anyone.example"}
        )
        assert status == 200
        assert headers["access-control-allow-origin"] == "*"
        preflight = {"origin": "https://anyone.example", "access-control-request-method": "POST"}
        status, headers, _ = await gateway.http.request(
            "OPTIONS", "/v1/chat/completions", headers=preflight
        )
        assert status == 204
        assert headers["access-control-allow-origin"] == "*"
        assert "authorization" in headers["access-control-allow-headers"]


# ---------------------------------------------------------------------------- headers


@pytest.mark.asyncio
async def test_every_response_says_nosniff_and_html_gets_a_policy(tmp_path: Path) -> None:
    async with running(tmp_path) as gateway:
        http = gateway.http

        async def page(state: AppState, exchange: Exchange) -> None:  # a future catalog page
            await exchange.respond(200, b"<!doctype html><p>hi</p>", "text/html; charset=utf-8")

        gateway.app._routes["/test-page"] = {"GET": page}
        for path, key in (("/health", None), ("/nowhere", None), ("/api/v1/me", "sk-mp-x")):
            _status, headers, _ = await http.request("GET", path, key=key)
            assert headers["x-content-type-options"] == "nosniff"
            assert "content-security-policy" not in headers  # JSON: no page to protect
        status, headers, _ = await http.request("GET", "/test-page")
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["x-content-type-options"] == "nosniff"
        policy = headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert headers["referrer-policy"] == "same-origin"
        assert headers["x-frame-options"] == "DENY"


# ---------------------------------------------------------------------------- admin keys


@pytest.mark.asyncio
async def test_the_only_admin_key_cannot_revoke_itself(tmp_path: Path) -> None:
    async with running(tmp_path) as gateway:
        http, key = gateway.http, gateway.admin_key
        status, _, body = await http.request("GET", "/api/v1/admin/keys", key=key)
        assert status == 200
        (only,) = msgspec.json.decode(body)["data"]
        status, _, body = await http.request("DELETE", f"/api/v1/admin/keys/{only['id']}", key=key)
        assert status == 400
        error = error_of(body)
        assert error["code"] == "last_admin_key"
        assert "last active admin key" in error["message"]
        assert (await http.request("GET", "/api/v1/admin/keys", key=key))[0] == 200
