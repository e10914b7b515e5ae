"""`response_format` → a llama.cpp grammar that guarantees valid output, or a 400.

llama-cpp-python's JSON-schema converter turns a schema into GBNF, but it silently ignores
what it does not understand (numeric bounds, `format: email`, `uniqueItems`, keywords next to
`$ref` or `anyOf`, …), so its grammar may allow output the schema rejects. The promise here is
stronger: when generation ends with finish_reason "stop", the text parses and validates against
the schema. So `prepare_schema` walks the schema first and

- refuses, naming the keyword and where it is, every assertion the grammar cannot enforce;
- rewrites what the converter mishandles into shapes it handles exactly: annotations
  (`title`, `description`, …) are dropped (a property holding only a description would
  otherwise be rejected), `type: [a, b]` becomes `anyOf`, enum values that contradict `type`
  are filtered, a one-element `allOf` is merged into its parent, `true` becomes `{}`.

The converter's string rule also admits raw control characters, which JSON forbids inside
strings; `grammar_for` tightens that rule. `grammar_for` first checks the schema against the
bounds of `schema_bounds.py` (how large a grammar it may ask for). Pure: no model needed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from modelport.backends.llamacpp.schema_bounds import SchemaBudget
from modelport.core.errors import InvalidRequest
from modelport.core.types import ResponseFormat

_PARAM = "response_format"

# Keywords that only annotate: they never make a value invalid.
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$anchor",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentEncoding",
        "contentMediaType",
        "nullable",  # OpenAPI 3.0; JSON Schema validators ignore it as well
        "strict",  # OpenAI puts it inside schemas at times
    }
)
_DEFINITIONS = ("$defs", "definitions")

# Assertions the grammar cannot express anywhere.
_UNENFORCEABLE = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedProperties",
        "unevaluatedItems",
        "additionalItems",
    }
)
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4"})
_FORMATS_TEXT = ", ".join(sorted(_FORMATS))

# Keywords that apply to each type: used when `type: [a, b]` is split into `anyOf`.
_TYPE_KEYWORDS = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems"}),
    "string": frozenset({"pattern", "format", "minLength", "maxLength"}),
}

# The converter's JSON string character rule, and the same rule without control characters.
_LOOSE_CHAR = re.compile(r'^char ::= \[\^"\\\\\] \|', re.MULTILINE)
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'
# What '.' in a pattern becomes, and the characters that are safe unescaped in a JSON string.
_PATTERN_DOT = r"[^\x0A\x0D]"
_SAFE_CHAR_CLASS = r'[^"\\\x7F\x00-\x1F]'


def grammar_for(response_format: ResponseFormat) -> str | None:
    """The GBNF grammar that constrains output to `response_format`, or None for text."""
    if response_format.type == "text":
        return None
    if response_format.schema is None:
        return JSON_GBNF  # any JSON object
    SchemaBudget().check(response_format.schema, param=_PARAM, subject=_PARAM)
    return schema_grammar(response_format.schema)


def schema_grammar(schema: Any) -> str:
    """The GBNF grammar (start rule `root`) for JSON valid against `schema`; `InvalidRequest`
    (naming response_format) when it cannot be enforced."""
    prepared = prepare_schema(schema)
    try:
        grammar = str(json_schema_to_gbnf(json.dumps(prepared)))
    except Exception as exc:  # the converter signals unsupported input with assorted types
        raise InvalidRequest(
            f"response_format: this JSON schema cannot be turned into a grammar: {exc}",
            param=_PARAM,
        ) from None
    grammar = _LOOSE_CHAR.sub(lambda _: _STRICT_CHAR, grammar)
    return grammar.replace(_PATTERN_DOT, _SAFE_CHAR_CLASS)


# Keys whose value is a map of names to schemas, or one schema, or a list of schemas.
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions"})
_SCHEMA_VALUES = frozenset({"items", "additionalProperties"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})


_COUNTS = frozenset({"minLength", "maxLength", "minItems", "maxItems"})


def loosened(schema: Any, *, counts: bool = False) -> Any:
    """`schema` without the assertions a grammar cannot enforce (bounds, `not`, conditionals,
    …, and string formats and patterns), and `counts`, without length and item counts too: it
    admits every value `schema` admits, and more. For shaping output that is checked against
    the real schema afterwards (tool arguments)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _UNENFORCEABLE or key in ("pattern", "format") or (counts and key in _COUNTS):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: loosened(sub, counts=counts) for name, sub in value.items()}
        elif key in _SCHEMA_VALUES:
            out[key] = loosened(value, counts=counts)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [loosened(sub, counts=counts) for sub in value]
        else:
            out[key] = value  # enum and const values, type, required, …
    return out


def prepare_schema(schema: Any) -> dict[str, Any]:
    """`schema` rewritten for the converter; `InvalidRequest` if it cannot be enforced."""
    if not isinstance(schema, dict):
        raise _refuse("$", "the schema must be a JSON object")
    prepared = _node(schema, "$")
    definitions: dict[str, dict[str, Any]] = {}
    for key in _DEFINITIONS:
        found = schema.get(key)
        if found is None:
            continue
        if not isinstance(found, dict):
            raise _refuse(f"$.{key}", "must be an object of schemas")
        definitions[key] = {name: _node(sub, f"$.{key}.{name}") for name, sub in found.items()}
    # The converter does not look inside a schema whose root is a $ref, so references within
    # the definitions would stay unresolved: start from the definition the root points at.
    seen: set[str] = set()
    while "$ref" in prepared:
        ref = prepared["$ref"]
        key, _, name = ref[2:].partition("/")
        if ref in seen or key not in definitions or name not in definitions[key]:
            raise _refuse("$", f"the root reference {ref!r} does not name a definition")
        seen.add(ref)
        prepared = dict(definitions[key][name])
    prepared.update(definitions)
    return prepared


def _refuse(path: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"response_format: the local engine cannot enforce this JSON schema: at {path}, {what}.",
        param=_PARAM,
    )


def _node(schema: Any, path: str) -> dict[str, Any]:
    if schema is True:
        return {}
    if schema is False:
        raise _refuse(path, "the schema false admits no value")
    if not isinstance(schema, dict):
        raise _refuse(path, "a schema must be an object or a boolean")
    node = {
        key: value
        for key, value in schema.items()
        if key not in _ANNOTATIONS and key not in _DEFINITIONS
    }
    for key in node:
        if key in _UNENFORCEABLE:
            raise _refuse(path, f"the keyword {key!r} is not supported")
    if "allOf" in node:
        return _node(_merge_all_of(node, path), path)
    if "$ref" in node:
        return _ref(node, path)
    if "anyOf" in node or "oneOf" in node:
        return _union(node, path)
    if "enum" in node or "const" in node:
        return _constants(node, path)
    kind = node.get("type")
    if isinstance(kind, list):
        return _type_union(node, kind, path)
    if kind is not None and kind not in _TYPES:
        raise _refuse(path, f"unknown type {kind!r}")
    if kind == "object" or (kind is None and _has_any(node, _TYPE_KEYWORDS["object"])):
        return _object(node, path)
    if kind == "array" or (kind is None and _has_any(node, _TYPE_KEYWORDS["array"])):
        return _array(node, path)
    if kind == "string" or (kind is None and _has_any(node, _TYPE_KEYWORDS["string"])):
        return _string(node, path)
    _only(node, {"type"}, path)
    # The converter reads {} as "any object"; JSON Schema means any value.
    return node or {"anyOf": [{"type": kind} for kind in sorted(_TYPES - {"integer"})]}


def _has_any(node: dict[str, Any], keys: frozenset[str]) -> bool:
    return any(key in node for key in keys)


def _only(node: dict[str, Any], allowed: set[str] | frozenset[str], path: str) -> None:
    extra = sorted(set(node) - set(allowed))
    if extra:
        raise _refuse(
            path, f"{', '.join(repr(key) for key in extra)} cannot be combined with this schema"
        )


def _merge_all_of(node: dict[str, Any], path: str) -> dict[str, Any]:
    parts = node["allOf"]
    if not isinstance(parts, list) or len(parts) != 1:
        raise _refuse(path, "'allOf' is supported with exactly one schema")
    (part,) = parts
    if part is True:
        part = {}
    if not isinstance(part, dict):
        raise _refuse(f"{path}.allOf[0]", "a schema must be an object")
    merged = {key: value for key, value in node.items() if key != "allOf"}
    for key, value in part.items():
        if key in _ANNOTATIONS:
            continue
        if key in merged and merged[key] != value:
            raise _refuse(path, f"'allOf' conflicts with {key!r} next to it")
        merged[key] = value
    return merged


def _ref(node: dict[str, Any], path: str) -> dict[str, Any]:
    ref = node["$ref"]
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise _refuse(path, f"only local references ('#/…') are supported, not {ref!r}")
    _only(node, {"$ref"}, path)
    return {"$ref": ref}


def _union(node: dict[str, Any], path: str) -> dict[str, Any]:
    if "anyOf" in node and "oneOf" in node:
        raise _refuse(path, "'anyOf' and 'oneOf' cannot both be used in one schema")
    key = "anyOf" if "anyOf" in node else "oneOf"
    _only(node, {key}, path)
    options = node[key]
    if not isinstance(options, list) or not options:
        raise _refuse(path, f"{key!r} must be a non-empty list of schemas")
    # oneOf is generated as anyOf: the output matches at least one branch. That is only
    # exact when the branches do not overlap, which is how oneOf is used in practice.
    return {"anyOf": [_node(option, f"{path}.{key}[{i}]") for i, option in enumerate(options)]}


def _matches_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "boolean": bool,
        "null": type(None),
        "object": dict,
        "array": list,
    }
    return isinstance(value, expected[kind])


def _constants(node: dict[str, Any], path: str) -> dict[str, Any]:
    _only(node, {"enum", "const", "type"}, path)
    if "enum" in node and "const" in node:
        raise _refuse(path, "'enum' and 'const' cannot both be used in one schema")
    if "const" in node:
        values = [node["const"]]
    else:
        values = node["enum"]
        if not isinstance(values, list) or not values:
            raise _refuse(path, "'enum' must be a non-empty list")
    kind = node.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        unknown = [k for k in kinds if k not in _TYPES]
        if unknown:
            raise _refuse(path, f"unknown type {unknown[0]!r}")
        values = [v for v in values if any(_matches_type(v, k) for k in kinds)]
        if not values:
            raise _refuse(path, "no value of 'enum' / 'const' has the schema's 'type'")
    return {"enum": values}


def _type_union(node: dict[str, Any], kinds: list[Any], path: str) -> dict[str, Any]:
    if not kinds or any(kind not in _TYPES for kind in kinds):
        raise _refuse(path, f"'type' must list known types, got {kinds!r}")
    rest = {key: value for key, value in node.items() if key != "type"}
    used: set[str] = set()
    options = []
    for kind in dict.fromkeys(kinds):
        keywords = _TYPE_KEYWORDS.get(kind, frozenset())
        used |= keywords
        option = {"type": kind, **{k: v for k, v in rest.items() if k in keywords}}
        options.append(_node(option, path))
    _only(rest, used, path)
    return {"anyOf": options}


def _object(node: dict[str, Any], path: str) -> dict[str, Any]:
    _only(node, {"type", "properties", "required", "additionalProperties"}, path)
    properties = node.get("properties", {})
    if not isinstance(properties, dict):
        raise _refuse(f"{path}.properties", "must be an object of schemas")
    required = node.get("required", [])
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        raise _refuse(f"{path}.required", "must be a list of property names")
    missing = [name for name in required if name not in properties]
    if missing:
        raise _refuse(
            f"{path}.required", f"{missing[0]!r} is required but not listed in 'properties'"
        )
    result: dict[str, Any] = {"type": "object"}
    if properties:
        result["properties"] = {
            name: _node(sub, f"{path}.properties.{name}") for name, sub in properties.items()
        }
    if required:
        result["required"] = required
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        result["additionalProperties"] = _node(extra, f"{path}.additionalProperties")
    elif extra is False or (extra is None and properties):
        # The converter already admits only the listed properties when `properties` is given
        # (a subset of what the schema allows); say so explicitly.
        result["additionalProperties"] = False
    elif properties:
        # `true` / `{}` next to properties: any further key, with any value.
        result["additionalProperties"] = True
    return result


def _array(node: dict[str, Any], path: str) -> dict[str, Any]:
    _only(node, {"type", "items", "prefixItems", "minItems", "maxItems"}, path)
    low, high = node.get("minItems", 0), node.get("maxItems")
    if not isinstance(low, int) or (high is not None and not isinstance(high, int)):
        raise _refuse(path, "'minItems' and 'maxItems' must be integers")
    if high is not None and high < low:
        raise _refuse(path, "'maxItems' is below 'minItems': no array satisfies it")
    tuple_items = node.get("prefixItems")
    items = node.get("items")
    if isinstance(items, list):  # draft-07 tuple form
        if tuple_items is not None:
            raise _refuse(path, "'items' as a list cannot be combined with 'prefixItems'")
        tuple_items, items = items, None
    if tuple_items is not None:
        # The grammar writes exactly one element per prefix schema.
        if items not in (None, False) or "minItems" in node or "maxItems" in node:
            raise _refuse(
                path,
                "'prefixItems' is supported alone (a fixed-length tuple), without "
                "'items', 'minItems' or 'maxItems'",
            )
        if not isinstance(tuple_items, list) or not tuple_items:
            raise _refuse(path, "'prefixItems' must be a non-empty list of schemas")
        return {
            "type": "array",
            "prefixItems": [
                _node(sub, f"{path}.prefixItems[{i}]") for i, sub in enumerate(tuple_items)
            ],
        }
    if items is False:
        raise _refuse(path, "'items': false is not supported")
    if items is None and "minItems" not in node and "maxItems" not in node:
        return {"type": "array"}  # the converter's own rule: any values
    result: dict[str, Any] = {"type": "array", "items": _node(items or {}, f"{path}.items")}
    if low:
        result["minItems"] = low
    if high is not None:
        result["maxItems"] = high
    return result


def _string(node: dict[str, Any], path: str) -> dict[str, Any]:
    _only(node, {"type", "pattern", "format", "minLength", "maxLength"}, path)
    if "pattern" in node:
        _only(node, {"type", "pattern"}, path)
        pattern = node["pattern"]
        if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")):
            raise _refuse(path, "'pattern' must be anchored, starting with ^ and ending with $")
        # The grammar writes the matched characters into a JSON string as they are: a quote, a
        # backslash or a control character would end or break the string. '.' is narrowed to
        # safe characters in grammar_for; these forms cannot be narrowed.
        for unsafe in ('"', "\\\\", "[^"):
            if unsafe in pattern:
                raise _refuse(path, f"'pattern' may not contain {unsafe!r}")
        return {"type": "string", "pattern": pattern}
    if "format" in node:
        _only(node, {"type", "format"}, path)
        if node["format"] not in _FORMATS:
            raise _refuse(
                path, f"'format' {node['format']!r} is not supported (supported: {_FORMATS_TEXT})"
            )
        return {"type": "string", "format": node["format"]}
    low, high = node.get("minLength", 0), node.get("maxLength")
    if not isinstance(low, int) or (high is not None and not isinstance(high, int)):
        raise _refuse(path, "'minLength' and 'maxLength' must be integers")
    if high is not None and high < low:
        raise _refuse(path, "'maxLength' is below 'minLength': no string satisfies it")
    result: dict[str, Any] = {"type": "string"}
    if low:
        result["minLength"] = low
    if high is not None:
        result["maxLength"] = high
    return result
