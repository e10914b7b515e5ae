"""API key extraction: `Authorization: Bearer <key>` or `x-api-key: <key>`."""

from __future__ import annotations

from modelport.http.asgi import Request


def api_key_from(request: Request) -> str:
    """The key the client sent, or "" when it sent none."""
    authorization = request.header(b"authorization")
    if authorization:
        scheme, _, value = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    key = request.header(b"x-api-key")
    if key:
        return key.decode("latin-1").strip()
    return ""
