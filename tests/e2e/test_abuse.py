"""Keys, authentication throttling, CORS and security headers over the real server (granian,
RSGI): the client address as granian reports it, X-Forwarded-For from a trusted proxy, the
checksummed key format, and the last admin key kept (issue 13)."""

from __future__ import annotations

import re
import secrets
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.server import RunningServer

pytestmark = pytest.mark.e2e

KEY_FORMAT = re.compile(r"sk-mp-[0-9A-Za-z]{49}")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ORIGIN = "https://app.example"


def checksum(text: str) -> str:
    value, digits = zlib.crc32(text.encode()), ""
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits = BASE62[digit] + digits
    return digits


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("abuse")
    env = {
        "MODELPORT_KEY_CACHE_TTL": "0",
        "MODELPORT_AUTH_FAILURE_LIMIT": "4",
        # The tests are the proxy: they say which client they forward for.
        "MODELPORT_TRUSTED_PROXIES": "127.0.0.1",
        "MODELPORT_CORS_ORIGINS": ORIGIN,
    }
    with RunningServer(data_dir, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def http(gateway: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
        yield client


def admin(gateway: RunningServer, forwarded_for: str = "198.51.100.1") -> dict[str, str]:
    return {"authorization": f"Bearer {gateway.admin_key}", "x-forwarded-for": forwarded_for}


def test_keys_are_prefixed_and_checksummed(gateway: RunningServer, http: httpx.Client) -> None:
    assert KEY_FORMAT.fullmatch(gateway.admin_key)
    assert gateway.admin_key[-6:] == checksum(gateway.admin_key[:-6])
    made = http.post("/api/v1/admin/keys", json={"name": "ci"}, headers=admin(gateway))
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    assert KEY_FORMAT.fullmatch(secret)
    assert secret[-6:] == checksum(secret[:-6])
    assert made.json()["prefix"] == secret[:12]


def test_failures_are_throttled_per_client_behind_a_trusted_proxy(
    gateway: RunningServer, http: httpx.Client
) -> None:
    attacker = "203.0.113.5"
    for _ in range(4):
        guess = "sk-mp-" + secrets.token_urlsafe(32)  # the old shape: looked up, and unknown
        response = http.get(
            "/api/v1/me", headers={"authorization": f"Bearer {guess}", "x-forwarded-for": attacker}
        )
        assert response.status_code == 401, response.text
    refused = http.get("/api/v1/me", headers=admin(gateway, attacker))
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "too_many_authentication_failures"
    # Another client through the same proxy, and the proxy's own address, are served.
    assert http.get("/api/v1/me", headers=admin(gateway, "203.0.113.6")).status_code == 200
    own = {"authorization": f"Bearer {gateway.admin_key}"}
    assert http.get("/api/v1/me", headers=own).status_code == 200


def test_cors_and_security_headers(gateway: RunningServer, http: httpx.Client) -> None:
    response = http.get("/api/v1/me", headers={**admin(gateway), "origin": ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["vary"] == "Origin"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in response.headers

    stranger = http.get("/v1/models", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers
    assert stranger.headers["x-content-type-options"] == "nosniff"

    preflight = http.options(
        "/v1/chat/completions",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-stainless-arch",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    allowed = preflight.headers["access-control-allow-headers"]
    for name in ("authorization", "x-api-key", "anthropic-version", "content-type"):
        assert name in allowed
    assert "x-stainless-arch" in allowed


def test_the_last_admin_key_is_kept(gateway: RunningServer, http: httpx.Client) -> None:
    keys = http.get("/api/v1/admin/keys", headers=admin(gateway)).json()["data"]
    admins = [key for key in keys if key["role"] == "admin" and key["revoked_at"] is None]
    assert len(admins) == 1
    refused = http.delete(f"/api/v1/admin/keys/{admins[0]['id']}", headers=admin(gateway))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "last_admin_key"
    cli = gateway.cli("keys", "revoke", "admin")
    assert cli.returncode != 0
    assert "last active admin key" in cli.stderr + cli.stdout
    assert http.get("/api/v1/me", headers=admin(gateway)).status_code == 200
