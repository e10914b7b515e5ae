"""Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from typing import Any

import msgspec

from modelport.core.errors import ModelportError


def error_object(error: ModelportError) -> dict[str, Any]:
    return {"message": error.message, "type": error.type, "param": error.param, "code": error.code}


def error_body(error: ModelportError) -> bytes:
    return msgspec.json.encode({"error": error_object(error)})
