"""Turning msgspec validation errors into `InvalidRequest` that names the offending field."""

from __future__ import annotations

import re

import msgspec

from modelport.core.errors import InvalidRequest

_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def invalid_from_msgspec(exc: msgspec.ValidationError | msgspec.DecodeError) -> InvalidRequest:
    """Build an InvalidRequest whose `param` is the JSON path msgspec reported."""
    text = str(exc)
    match = _PATH.search(text)
    if match is None:
        return InvalidRequest(f"Invalid request body: {text}")
    # msgspec writes a dict value's position as `[...]`; the field is the dict itself.
    param = match.group("path").replace("[...]", "") or None
    detail = text[: match.start()]
    if param:
        return InvalidRequest(f"Invalid value for '{param}': {detail}", param=param)
    return InvalidRequest(f"Invalid request body: {detail}")


def decode_json(body: bytes) -> object:
    """Any JSON value from a client, as plain Python objects; InvalidRequest (never another
    exception) for what is not JSON: a syntax error, invalid UTF-8 inside a string, or
    nesting deeper than the interpreter can follow."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid UTF-8 (byte {exc.start}): JSON text must be UTF-8."
        ) from None
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply.") from None


def decode_json_object(body: bytes) -> dict[str, object]:
    """Decode a request body that must be a JSON object."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    raw = decode_json(body)
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return raw
