"""API key extraction: `Authorization: Bearer <key>` or `x-api-key: <key>`."""

from __future__ import annotations

from modelport.http.exchange import Exchange


def api_key_from(exchange: Exchange) -> str:
    """The key the client sent, or "" when it sent none."""
    authorization = exchange.header("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    key = exchange.header("x-api-key")
    if key:
        return key.strip()
    return ""
