"""Identifier generation: request ids, tool call ids, API key secrets."""

from __future__ import annotations

import itertools
import secrets

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


class _RequestIds:
    """24 hex digits: 12 drawn at random once per process, then a counter. Unique across
    processes and restarts without a system call per request (they identify, they do not
    authorise: a generation is shown only to its owner)."""

    def __init__(self) -> None:
        self._prefix: str | None = None
        self._counter = itertools.count()

    def __call__(self) -> str:
        if self._prefix is None:
            self._prefix = secrets.token_hex(6)
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


request_id = _RequestIds()
"""A request id; also the suffix of `chatcmpl-…` and `msg_…` ids."""


def tool_call_id() -> str:
    return "call_" + random_token(24)
