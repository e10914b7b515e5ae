"""Bounds on what a JSON schema may ask of a grammar, checked before any grammar is built.

A grammar is as large as the schema's bounds are high: llama-cpp-python's converter writes
`maxLength: n` as n nested optional characters and `minItems: n` as n copies of the item, and
it builds object rules in time quadratic in the number of optional properties. Unbounded, one
request's schema (`{"type": "string", "minLength": 100000000}`) took seconds and gigabytes to
convert, and a nesting a few ten thousand deep crashes llama.cpp's grammar parser (a
segmentation fault, the whole process gone). So `check_schema` walks the raw schema (any JSON,
before it is understood) and refuses with `SchemaTooLarge`, a 400 naming the field, whatever
is beyond these bounds:

- the schema's JSON text: `MAX_SCHEMA_BYTES`; its nesting: `MAX_DEPTH` JSON levels;
- each `minLength`, `maxLength`, `minItems`, `maxItems` and each counted repetition of a
  `pattern` (`{m,n}`): `MAX_COUNT`; all of them together, a pattern counted by how much it
  expands: `MAX_COUNT_TOTAL`;
- a `pattern`'s text: `MAX_PATTERN`;
- values in one `enum`: `MAX_ENUM`; properties of one object: `MAX_PROPERTIES`; optional
  ones (not in `required`): `MAX_OPTIONAL_PROPERTIES` in one object,
  `MAX_OPTIONAL_PROPERTIES_TOTAL` in all.

The totals hold for all the schemas of one grammar together (every tool a forced call may
choose: `SchemaBudget` is shared).

Within them a grammar converts in milliseconds (the worst case in tens) and llama.cpp parses
it safely. Pure: no model, no llama_cpp.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from modelport.core.errors import InvalidRequest

MAX_SCHEMA_BYTES = 200_000
MAX_DEPTH = 64
MAX_COUNT = 1_000
MAX_COUNT_TOTAL = 10_000
MAX_PATTERN = 1_000
MAX_ENUM = 1_000
MAX_PROPERTIES = 1_000
MAX_OPTIONAL_PROPERTIES = 100
MAX_OPTIONAL_PROPERTIES_TOTAL = 200

_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
_REPETITION = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


class SchemaTooLarge(InvalidRequest):
    """A schema beyond the bounds: refused whatever else it says (never loosened)."""


class SchemaBudget:
    """What the schemas of one grammar may ask for together: `check` each in turn."""

    def __init__(self) -> None:
        self._bytes = 0
        self._counts = 0
        self._optional = 0
        self._param = ""
        self._subject = ""

    def check(self, schema: Any, *, param: str, subject: str) -> None:
        """Refuse `schema` (`SchemaTooLarge`, naming `param`; `subject` names it in the
        message: "response_format", "tools[0] ('f') parameters") when it asks for more than
        the bounds allow, alone or with the schemas checked before. One walk, no grammar."""
        self._param, self._subject = param, subject
        try:
            size = len(msgspec.json.encode(schema))
        except (TypeError, RecursionError, msgspec.EncodeError):
            size = MAX_SCHEMA_BYTES + 1
        self._bytes += size
        if self._bytes > MAX_SCHEMA_BYTES:
            raise self._refuse(
                "$", f"the JSON text of the schemas is over {MAX_SCHEMA_BYTES:,} bytes"
            )
        self._value(schema, "$", 0)

    def _refuse(self, path: str, what: str) -> SchemaTooLarge:
        return SchemaTooLarge(
            f"{self._subject}: the JSON schema asks for more than the local engine allows: "
            f"at {path}, {what}.",
            param=self._param,
        )

    def _value(self, value: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self._refuse(path, f"it is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            self._keywords(value, path)
            for key, sub in value.items():
                if isinstance(sub, dict | list):
                    self._value(sub, f"{path}.{key}", depth + 1)
        elif isinstance(value, list):
            for index, sub in enumerate(value):
                if isinstance(sub, dict | list):
                    self._value(sub, f"{path}[{index}]", depth + 1)

    def _keywords(self, node: dict[str, Any], path: str) -> None:
        # Every object is read as a schema: a property named "maxLength" is counted too,
        # which only errs towards refusing sooner.
        for key in _COUNTS:
            count = node.get(key)
            if isinstance(count, int) and not isinstance(count, bool):
                if count > MAX_COUNT:
                    raise self._refuse(f"{path}.{key}", f"{count:,} is above {MAX_COUNT:,}")
                self._add_counts(max(count, 0), f"{path}.{key}")
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            self._pattern(pattern, f"{path}.pattern")
        enum = node.get("enum")
        if isinstance(enum, list) and len(enum) > MAX_ENUM:
            raise self._refuse(f"{path}.enum", f"it lists more than {MAX_ENUM:,} values")
        properties = node.get("properties")
        if isinstance(properties, dict):
            self._properties(properties, node.get("required"), f"{path}.properties")

    def _properties(self, properties: dict[str, Any], required: Any, path: str) -> None:
        if len(properties) > MAX_PROPERTIES:
            raise self._refuse(path, f"it has more than {MAX_PROPERTIES:,} properties")
        named = (
            {name for name in required if isinstance(name, str)}
            if isinstance(required, list)
            else set()
        )
        optional = sum(1 for name in properties if name not in named)
        self._optional += optional
        if optional > MAX_OPTIONAL_PROPERTIES or self._optional > MAX_OPTIONAL_PROPERTIES_TOTAL:
            raise self._refuse(
                path,
                f"more than {MAX_OPTIONAL_PROPERTIES} optional properties in one object or "
                f"{MAX_OPTIONAL_PROPERTIES_TOTAL} in all (properties not listed in 'required')",
            )

    def _pattern(self, pattern: str, path: str) -> None:
        if len(pattern) > MAX_PATTERN:
            raise self._refuse(path, f"the pattern is longer than {MAX_PATTERN:,} characters")
        for match in _REPETITION.finditer(pattern):
            for number in match.groups():
                if number and int(number) > MAX_COUNT:
                    raise self._refuse(path, f"a repetition count is above {MAX_COUNT:,}")
        self._add_counts(pattern_weight(pattern), path)

    def _add_counts(self, amount: int, path: str) -> None:
        self._counts += amount
        if self._counts > MAX_COUNT_TOTAL:
            raise self._refuse(
                path,
                "its lengths, item counts and pattern repetitions add up to more than "
                f"{MAX_COUNT_TOTAL:,}",
            )


def pattern_weight(pattern: str) -> int:
    """An upper bound on how large `pattern` grows when its counted repetitions are written
    out (as the converter does): each character, class or escape counts one, times the
    counts of the repetitions around it; alternatives add up."""
    groups = [0]  # the weight of each open group so far, the whole pattern first
    last = 0  # the weight of the last atom or group: what a quantifier repeats
    i, end = 0, len(pattern)
    while i < end:
        char = pattern[i]
        if char == "(":
            groups.append(0)
            last = 0
            i += 3 if pattern.startswith("?:", i + 1) else 1
            continue
        if char == ")":
            last = groups.pop() if len(groups) > 1 else 0
            groups[-1] += last
            i += 1
            continue
        if char == "{":
            match = _REPETITION.match(pattern, i)
            if match is not None:
                low, high = match.group(1), match.group(2)
                times = int(low) if low else 0  # {m}
                if high == "":
                    times += 1  # {m,}: m copies, then any number
                elif high is not None:
                    times = int(high)  # {m,n}
                groups[-1] += last * max(times - 1, 0)
                last *= max(times, 1)
                i = match.end()
                continue
        if char in "*+?|^$":
            if char == "|":
                last = 0
            i += 1
            continue
        if char == "[":
            i = _class_end(pattern, i)
        elif char == "\\":
            i += 2
        else:
            i += 1
        groups[-1] += 1
        last = 1
    return sum(groups)


def _class_end(pattern: str, start: int) -> int:
    """The index after the character class that opens at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1
