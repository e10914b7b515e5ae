"""Identifier generation: request ids, tool call ids, API key secrets."""

from __future__ import annotations

import secrets

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def request_id() -> str:
    """A request id; also the suffix of `chatcmpl-…` and `msg_…` ids."""
    return secrets.token_hex(12)


def tool_call_id() -> str:
    return "call_" + random_token(24)
