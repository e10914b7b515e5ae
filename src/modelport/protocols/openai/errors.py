"""Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`; the message
is `core.errors.client_message` (bounded, with the request id when known), never the detail."""

from __future__ import annotations

from typing import Any

import msgspec

from modelport.core.errors import ModelportError, client_message


def error_object(error: ModelportError) -> dict[str, Any]:
    return {
        "message": client_message(error),
        "type": error.type,
        "param": error.param,
        "code": error.code,
    }


def error_body(error: ModelportError) -> bytes:
    return msgspec.json.encode({"error": error_object(error)})
