"""Qwen3-Coder's XML tool calls, parsed incrementally into call pieces.

The model writes (vLLM `--tool-call-parser qwen3_coder`, llama.cpp #15012)::

    <tool_call>
    <function=search_products>
    <parameter=query>
    waterproof running shoes
    </parameter>
    <parameter=limit>
    5
    </parameter>
    </function>
    </tool_call>

Values are raw text, so the parser needs the tools' parameter schemas to give them JSON types.
The rules below are decisions; each says why.

Pieces and their order
- `CallStart(name)` as soon as `<function=NAME>` is complete and NAME is a declared tool, so a
  client sees which tool is being called before its (possibly long) arguments arrive.
- `CallArguments` fragments concatenate to the JSON text of the coerced arguments object: the
  key and value of a parameter at its `</parameter>`, `}` at `</function>`. A string-typed
  parameter streams its value as JSON-escaped fragments while it is generated (a file's
  content can be thousands of tokens), any other type is emitted whole once it can be coerced.
- `CallEnd` at `</function>`: the arguments are complete there. The `</tool_call>` that should
  follow may be missing at the end of the output (the model stopped right after the function);
  that is tolerated, the call was complete. A `</tool_call>` without `</function>` also ends
  the call, as vLLM's parser accepts it.
- Every `CallStart` is followed by exactly one `CallEnd` or `Malformed`: a `Malformed` after a
  `CallStart` means that call is abandoned and its streamed arguments must be discarded.

Where a value ends
- The format wraps a value in newlines: `<parameter=k>\\nVALUE\\n</parameter>`. When the value
  begins with that newline, it ends at the first "\\n</parameter>", so code containing
  `</parameter>` or other tags mid-line stays intact (vLLM's regex ends it at the first bare
  `</parameter>`, or even at `<parameter=`/`</function>`, which cuts such values short).
  A value written right after the tag (`<parameter=k>5</parameter>`, no newline) ends at the
  first bare `</parameter>`. The one leading and one trailing newline are not part of the value
  (as in vLLM); `<parameter=k>\\n</parameter>` is the empty string.

Coercion (by the JSON-schema `type`, `type` lists, `anyOf`/`oneOf`, or the JSON types of
`enum`/`const`; a parameter the tool does not declare, or one with no type, stays a string)
- string: the text as is (never "null": a query may be the word null);
- null: the text `null`; boolean: `true`/`false` in any case (the chat template renders Python
  values, `True`); integer: decimal digits, or a number with no fractional part; number: a
  finite JSON-style number; object/array: JSON, else a Python literal (single quotes, `True`),
  as models trained on Python often write them.
- Non-string types are tried first, string last. A value that fits none of its declared types
  is kept as the string the model wrote (as vLLM does), not reported as `Malformed`: the call
  still reaches the tool, whose own validation can tell the model what was wrong, rather than
  the whole call vanishing over one value.

Malformed (`raw` is the model's text of the broken part; the parser resumes after it)
- an unknown function, a malformed `<function=`/`<parameter=` tag, or other text where a tag
  must come (inside `<tool_call>`, between parameters): the rest up to `</tool_call>`;
- anything left open at `finish()`.

Text outside tool calls is `Content`. Whitespace touching a tool call block (the newlines
before `<tool_call>`, between blocks, after the last one) is dropped so that a client does not
get content made of blank lines; other whitespace is kept. That means trailing whitespace of
content is held back until the next non-space text shows it is not touching a call. `<function=`
outside `<tool_call>` is plain content. Otherwise only a suffix that could still become
`<tool_call>` (or the current closing tag) is held back.
"""

from __future__ import annotations

import ast
import json
import math
import re
from enum import Enum, auto
from typing import Any

from modelport.parsers.base import (
    CallArguments,
    CallEnd,
    CallStart,
    Content,
    Malformed,
    Piece,
    longest_partial_suffix,
)

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
FUNCTION_OPEN = "<function="
FUNCTION_CLOSE = "</function>"
PARAMETER_OPEN = "<parameter="
PARAMETER_CLOSE = "</parameter>"
_NEWLINE_PARAMETER_CLOSE = "\n" + PARAMETER_CLOSE

_INTEGER = re.compile(r"[-+]?[0-9]+")
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_JSON_TYPES: dict[type, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    dict: "object",
    list: "array",
    type(None): "null",
}


class _State(Enum):
    TEXT = auto()  # outside tool calls
    BLOCK_OPEN = auto()  # after <tool_call>, expecting <function=
    FUNCTION_NAME = auto()  # after <function=, expecting NAME>
    IN_FUNCTION = auto()  # expecting <parameter= or </function>
    PARAMETER_NAME = auto()  # after <parameter=, expecting NAME>
    VALUE_START = auto()  # after <parameter=NAME>, the first character picks the terminator
    VALUE = auto()  # inside a value
    AFTER_FUNCTION = auto()  # after </function>, expecting </tool_call>
    SKIP = auto()  # broken block, swallowing up to </tool_call>


class Qwen3CoderXmlToolParser:
    """Splits Qwen3-Coder output into content and tool calls (see the module docstring for
    the rules). `tools` maps each callable function's name to the JSON schema of its
    parameters (`{"type": "object", "properties": {...}}`)."""

    def __init__(self, tools: dict[str, dict[str, Any]]) -> None:
        self._tools = tools
        self._state = _State.TEXT
        self._buf = ""  # text not yet consumed
        self._out: list[Piece] = []
        # outside calls
        self._pending_space = ""  # trailing whitespace of content, held back
        self._after_call = False  # no content since the last tool call block
        # inside a block
        self._raw: list[str] = []  # text of the current block since it (or its last call) began
        self._skip_reason = ""
        self._function = ""
        self._param_count = 0
        self._param = ""
        self._types: frozenset[str] = frozenset()
        self._streams = False  # the current value is streamed as a JSON string
        self._newline_wrapped = True  # the current value began with the format's newline
        self._value: list[str] = []  # the current value's text, when not streamed

    def feed(self, text: str) -> list[Piece]:
        self._buf += text
        while self._step():
            pass
        return self._drain()

    def finish(self, *, cut: bool = False) -> list[Piece]:
        rest = self._buf
        held = longest_partial_suffix(rest, TOOL_CALL_OPEN) if cut else 0
        if held and self._state is _State.TEXT:  # a call cut before its tag was whole
            rest = rest[: len(rest) - held].rstrip()
        if self._state is _State.TEXT:
            self._text(rest)
            if self._pending_space and not self._after_call:
                self._out.append(Content(self._pending_space))
        elif self._state is _State.AFTER_FUNCTION and TOOL_CALL_CLOSE.startswith(rest):
            pass  # a complete call whose </tool_call> never came
        else:
            self._take(len(rest))
            self._out.append(Malformed("".join(self._raw), self._unclosed_reason(), cut=True))
        self._buf = ""
        self._pending_space = ""
        self._raw = []
        self._state = _State.TEXT
        return self._drain()

    def _drain(self) -> list[Piece]:
        out, self._out = self._out, []
        return out

    def _unclosed_reason(self) -> str:
        if self._state is _State.SKIP:
            return f"{self._skip_reason}; no {TOOL_CALL_CLOSE} before the end of the output"
        if self._state in (_State.BLOCK_OPEN, _State.FUNCTION_NAME, _State.AFTER_FUNCTION):
            return f"unclosed {TOOL_CALL_OPEN} at the end of the output"
        return f"unclosed {FUNCTION_OPEN}{self._function}> at the end of the output"

    # One step consumes what the current state can decide; False means "wait for more text".
    def _step(self) -> bool:
        match self._state:
            case _State.TEXT:
                return self._step_text()
            case _State.BLOCK_OPEN:
                return self._step_block_open()
            case _State.FUNCTION_NAME:
                return self._step_function_name()
            case _State.IN_FUNCTION:
                return self._step_in_function()
            case _State.PARAMETER_NAME:
                return self._step_parameter_name()
            case _State.VALUE_START:
                return self._step_value_start()
            case _State.VALUE:
                return self._step_value()
            case _State.AFTER_FUNCTION:
                return self._step_after_function()
            case _State.SKIP:
                return self._step_skip()

    def _step_text(self) -> bool:
        start = self._buf.find(TOOL_CALL_OPEN)
        if start < 0:
            cut = len(self._buf) - longest_partial_suffix(self._buf, TOOL_CALL_OPEN)
            self._text(self._buf[:cut])
            self._buf = self._buf[cut:]
            return False
        self._text(self._buf[:start])
        self._pending_space = ""  # whitespace right before a block is not content
        self._buf = self._buf[start:]
        self._raw = []
        self._take(len(TOOL_CALL_OPEN))
        self._state = _State.BLOCK_OPEN
        return True

    def _text(self, text: str) -> None:
        text = self._pending_space + text
        if self._after_call:
            text = text.lstrip()
        body = text.rstrip()
        self._pending_space = text[len(body) :]
        if body:
            self._out.append(Content(body))
            self._after_call = False

    def _step_block_open(self) -> bool:
        tag = self._next_tag(FUNCTION_OPEN)
        if tag is None:
            return self._skip(f"expected {FUNCTION_OPEN}NAME> inside {TOOL_CALL_OPEN}")
        if not tag:
            return False
        self._take(len(tag))
        self._state = _State.FUNCTION_NAME
        return True

    def _step_function_name(self) -> bool:
        name = self._tag_name()
        if name is None:
            return self._skip(f"malformed {FUNCTION_OPEN}NAME> tag")
        if not name:
            return False
        if name not in self._tools:
            return self._skip(f"unknown function {name!r}")
        self._function = name
        self._param_count = 0
        self._out.append(CallStart(name))
        self._state = _State.IN_FUNCTION
        return True

    def _step_in_function(self) -> bool:
        tag = self._next_tag(PARAMETER_OPEN, FUNCTION_CLOSE, TOOL_CALL_CLOSE)
        if tag is None:
            return self._skip(f"unexpected text inside {FUNCTION_OPEN}{self._function}>")
        if not tag:
            return False
        self._take(len(tag))
        if tag == PARAMETER_OPEN:
            self._state = _State.PARAMETER_NAME
            return True
        self._out.append(CallArguments("}" if self._param_count else "{}"))
        self._out.append(CallEnd())
        self._raw = []
        if tag == TOOL_CALL_CLOSE:
            self._end_block()
        else:
            self._state = _State.AFTER_FUNCTION
        return True

    def _step_parameter_name(self) -> bool:
        name = self._tag_name()
        if name is None:
            return self._skip(f"malformed {PARAMETER_OPEN}NAME> tag")
        if not name:
            return False
        self._param = name
        properties = self._tools[self._function].get("properties")
        schema = properties.get(name) if isinstance(properties, dict) else None
        self._types = _declared_types(schema)
        self._streams = self._types == {"string"}
        self._state = _State.VALUE_START
        return True

    def _step_value_start(self) -> bool:
        if not self._buf:
            return False
        self._newline_wrapped = self._buf[0] == "\n"
        if self._newline_wrapped:
            after = self._buf[1:]
            if len(after) < len(PARAMETER_CLOSE) and PARAMETER_CLOSE.startswith(after):
                return False  # may still be the empty value "\n</parameter>"
            self._take(1)
        self._value = []
        if self._streams:
            self._out.append(CallArguments(self._key_prefix() + '"'))
        if self._newline_wrapped and self._buf.startswith(PARAMETER_CLOSE):
            self._take(len(PARAMETER_CLOSE))
            self._close_value("")
            return True
        self._state = _State.VALUE
        return True

    def _step_value(self) -> bool:
        end = _NEWLINE_PARAMETER_CLOSE if self._newline_wrapped else PARAMETER_CLOSE
        found = self._buf.find(end)
        if found >= 0:
            chunk = self._take(found)
            self._take(len(end))
            self._close_value(chunk)
            return True
        safe = len(self._buf) - longest_partial_suffix(self._buf, end)
        if not self._newline_wrapped and safe and self._buf[safe - 1] == "\n":
            safe -= 1  # may be the trailing newline that is not part of the value
        if safe:
            chunk = self._take(safe)
            if self._streams:
                self._out.append(CallArguments(_escape(chunk)))
            else:
                self._value.append(chunk)
        return False

    def _close_value(self, chunk: str) -> None:
        if not self._newline_wrapped and chunk.endswith("\n"):
            chunk = chunk[:-1]
        if self._streams:
            self._out.append(CallArguments(_escape(chunk) + '"'))
        else:
            value = coerce("".join(self._value) + chunk, self._types)
            self._out.append(
                CallArguments(self._key_prefix() + json.dumps(value, ensure_ascii=False))
            )
        self._value = []
        self._param_count += 1
        self._state = _State.IN_FUNCTION

    def _key_prefix(self) -> str:
        opening = ", " if self._param_count else "{"
        return f"{opening}{json.dumps(self._param, ensure_ascii=False)}: "

    def _step_after_function(self) -> bool:
        tag = self._next_tag(TOOL_CALL_CLOSE, FUNCTION_OPEN)
        if tag is None:
            return self._skip(f"unexpected text after {FUNCTION_CLOSE} inside {TOOL_CALL_OPEN}")
        if not tag:
            return False
        self._take(len(tag))
        if tag == TOOL_CALL_CLOSE:
            self._end_block()
        else:  # a second function in the same block: accepted as another call
            self._state = _State.FUNCTION_NAME
        return True

    def _step_skip(self) -> bool:
        end = self._buf.find(TOOL_CALL_CLOSE)
        if end < 0:
            self._take(len(self._buf) - longest_partial_suffix(self._buf, TOOL_CALL_CLOSE))
            return False
        self._take(end + len(TOOL_CALL_CLOSE))
        self._out.append(Malformed("".join(self._raw), self._skip_reason))
        self._end_block()
        return True

    def _skip(self, reason: str) -> bool:
        self._skip_reason = reason
        self._state = _State.SKIP
        return True

    def _end_block(self) -> None:
        self._raw = []
        self._after_call = True
        self._state = _State.TEXT

    def _take(self, size: int) -> str:
        taken, self._buf = self._buf[:size], self._buf[size:]
        self._raw.append(taken)
        return taken

    def _next_tag(self, *tags: str) -> str | None:
        """After skipping whitespace: the tag the text starts with, "" while the text could
        still become one of `tags`, None when it cannot."""
        self._take(len(self._buf) - len(self._buf.lstrip()))
        if not self._buf:
            return ""
        for tag in tags:
            if self._buf.startswith(tag):
                return tag
        if any(tag.startswith(self._buf) for tag in tags):
            return ""
        return None

    def _tag_name(self) -> str | None:
        """The NAME of a `<function=NAME>` or `<parameter=NAME>` being read (consumed with
        its `>`), "" while the `>` has not come, None when it cannot be a name."""
        end = self._buf.find(">")
        head = self._buf if end < 0 else self._buf[:end]
        if "\n" in head or "<" in head:
            return None
        if end < 0:
            return ""
        name = head.strip()
        if not name:
            return None
        self._take(end + 1)
        return name


def _escape(text: str) -> str:
    """`text` as the inside of a JSON string: escaping is per character, so fragments
    escaped separately concatenate to the escaped whole."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _declared_types(schema: object) -> frozenset[str]:
    types = _schema_types(schema)
    return frozenset(types) if types else frozenset({"string"})


def _schema_types(schema: object) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    types: set[str] = set()
    declared = schema.get("type")
    if isinstance(declared, str):
        types.add(declared)
    elif isinstance(declared, list):
        types.update(t for t in declared if isinstance(t, str))
    for key in ("anyOf", "oneOf"):
        alternatives = schema.get(key)
        if isinstance(alternatives, list):
            for alternative in alternatives:
                types |= _schema_types(alternative)
    if not types:
        examples = list(schema.get("enum") or []) if isinstance(schema.get("enum"), list) else []
        if "const" in schema:
            examples.append(schema["const"])
        types.update(_JSON_TYPES[type(v)] for v in examples if type(v) in _JSON_TYPES)
    return types


def coerce(text: str, types: frozenset[str]) -> Any:
    """The JSON value of a parameter's raw `text` for its declared JSON-schema `types`;
    the text itself when it fits none of them."""
    stripped = text.strip()
    if "null" in types and stripped == "null":
        return None
    if "boolean" in types and stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    if "integer" in types or "number" in types:
        number = _number(stripped)
        if isinstance(number, int) or (
            isinstance(number, float) and ("number" in types or number.is_integer())
        ):
            return number if "number" in types else int(number)
    if "object" in types or "array" in types:
        structured = _structured(stripped)
        if isinstance(structured, dict) and "object" in types:
            return structured
        if isinstance(structured, list) and "array" in types:
            return structured
    return text


def _number(text: str) -> int | float | None:
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # beyond Python's digit limit for int()
            return None
    if _NUMBER.fullmatch(text):
        value = float(text)
        return value if math.isfinite(value) else None
    return None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _structured(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        pass
    try:
        return _jsonable(ast.literal_eval(text))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _jsonable(value: Any) -> Any:
    """A Python literal as a JSON value (tuples become arrays); ValueError when it has no
    JSON form (sets, bytes, complex numbers, non-string keys, NaN)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _jsonable(item) for key, item in value.items()}
    raise ValueError(f"{type(value).__name__} has no JSON form")
