"""Turning msgspec validation errors into `InvalidRequest` that names the offending field, and
decoding a client's JSON so that nothing it sends raises anything else."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated

import msgspec

from modelport.core.errors import InvalidRequest, clip

DETAIL_LIMIT = 200  # characters of msgspec's own words (with the value they may repeat)
# The largest integers engines and the database hold; larger ones are refused at the doors.
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
TopK = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]  # engines keep k in a 32-bit int

_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def invalid_from_msgspec(exc: msgspec.ValidationError | msgspec.DecodeError) -> InvalidRequest:
    """Build an InvalidRequest whose `param` is the JSON path msgspec reported."""
    text = str(exc)
    match = _PATH.search(text)
    if match is None:
        return InvalidRequest(f"Invalid request body: {clip(text, DETAIL_LIMIT)}")
    # msgspec writes a dict value's position as `[...]`; the field is the dict itself.
    param = match.group("path").replace("[...]", "") or None
    detail = clip(text[: match.start()], DETAIL_LIMIT)  # msgspec repeats a wrong enum value
    if param:
        return InvalidRequest(f"Invalid value for '{param}': {detail}", param=param)
    return InvalidRequest(f"Invalid request body: {detail}")


_EXACT = msgspec.json.Decoder(float_hook=Decimal)


def decode_json(
    body: bytes,
    shape: type | None = None,
    invalid: Callable[[msgspec.ValidationError], InvalidRequest] = invalid_from_msgspec,
    *,
    exact: bool = False,
) -> object:
    """Any JSON value from a client, as plain Python objects; InvalidRequest (never another
    exception) for what is not JSON: a syntax error, invalid UTF-8 inside a string, nesting
    deeper than the interpreter can follow, or a number too large to read (1e400). Such a
    number is named by its field when `shape` (the body's wire type) has it: only then is the
    body decoded a second time, with the type, for msgspec to say where (`invalid` words it in
    the door's way). `exact`: numbers with a fraction or an exponent come as `Decimal`, of
    any size (money: 0.1 stays 0.1, and 1e400 is an amount too large rather than no number)."""
    try:
        return _EXACT.decode(body) if exact else msgspec.json.decode(body)
    except msgspec.ValidationError:  # a number out of range, somewhere in a dict
        if shape is not None:
            try:
                msgspec.json.decode(body, type=shape)
            except msgspec.ValidationError as typed:
                raise invalid(typed) from None
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                pass
        raise InvalidRequest("The request body holds a number too large to read.") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid UTF-8 (byte {exc.start}): JSON text must be UTF-8."
        ) from None
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply.") from None


def decode_json_object(
    body: bytes,
    shape: type | None = None,
    invalid: Callable[[msgspec.ValidationError], InvalidRequest] = invalid_from_msgspec,
) -> dict[str, object]:
    """Decode a request body that must be a JSON object (`shape`, `invalid`: see
    `decode_json`)."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    raw = decode_json(body, shape, invalid)
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return raw
