"""The grammar a local generation runs under: what the answer must look like, after the think
block a Qwen3 model may write first.

Three things constrain an answer on the local engine:

- `tool_choice` "required" or a named function, with a Qwen3 card: the answer is one tool call
  (several when `parallel_tool_calls` allows) in the card's format, to an offered function
  (the named one), with arguments shaped by the tool's JSON schema. Qwen3's JSON format
  `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>` and Qwen3-Coder's XML format
  `<tool_call>\\n<function=…>\\n<parameter=…>\\n…\\n</parameter>\\n</function>\\n</tool_call>`
  are written exactly as the chat templates render earlier calls, so the model is steered
  along the path it was trained on. A tool schema the grammar cannot enforce exactly (numeric
  bounds, …) still gets a JSON-shaped argument grammar; the parsers' schema check reports
  what it lets through, as for upstreams.
- `response_format` (`grammar.grammar_for`), when no tool call is forced.
- Nothing else: "auto" tool choice stays free, and the parsers check what the model wrote.

Every schema a grammar is built from is first held to the bounds of `schema_bounds.py` (the
forced tools' schemas sharing one budget), and `grammar_key` names what a grammar is built
from, for the engine's cache of compiled grammars (prepare.py).

A thinking model must still be free to think. In thinking mode the grammar starts with an
optional `<think>…</think>` block (its text never contains `</think>`); for Thinking-2507,
whose prompt already opened the block, with the rest of that block. When the engine closes the
block itself (the thinking budget is spent) sampling restarts on a fresh grammar, so there is a
second grammar for the answer alone. Pure: builds GBNF text; no model needed.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

import msgspec
from llama_cpp.llama_grammar import JSON_GBNF

from modelport.backends.llamacpp.grammar import grammar_for, loosened, schema_grammar
from modelport.backends.llamacpp.schema_bounds import SchemaBudget
from modelport.core.catalog import ToolFormat
from modelport.core.errors import InvalidRequest
from modelport.core.types import ChatRequest, Tool
from modelport.parsers.think import ThinkMode

# The whitespace Qwen3 writes between `</think>` and the answer ("\n\n"), with some slack.
_GAP = "[ \\t\\n]{0,4}"
_PARAMETER_END = '"\\n</parameter>\\n"'
_JSON_VALUE_GBNF = JSON_GBNF.replace("root   ::= object", "root ::= value")
_FUNCTION_END = '"</function>\\n</tool_call>"'
# The most GBNF text one request's grammar may be: a backstop behind the schema bounds.
MAX_GRAMMAR_BYTES = 2_000_000


@dataclass(frozen=True, slots=True)
class OutputGrammar:
    """GBNF texts with a `root` rule, or None where nothing is constrained."""

    first: str | None = None  # from the first generated token
    after_think: str | None = None  # after the engine wrote the think block's end itself
    param: str = "response_format"  # the request field the constraint comes from


def output_grammar(
    request: ChatRequest, *, tool_format: ToolFormat, thinking: ThinkMode
) -> OutputGrammar:
    """The grammars for `request` on a card with `tool_format`, generating in `thinking` mode
    (the mode the prompt leaves the model in: "off" when it cannot open a think block)."""
    forced = _forced_tools(request, tool_format)
    if forced:
        answer, param = (
            _tool_calls(request, forced, tool_format, single=_single_call(request, tool_format)),
            "tools",
        )
    elif _generic_auto(request, tool_format):
        answer, param = _calls_or_text(request), "tools"
    else:
        plain = grammar_for(request.response_format)
        if plain is None:
            return OutputGrammar()
        if thinking == "off":
            plain = _bounded(plain, "response_format")
            return OutputGrammar(plain, plain)  # exactly the response_format grammar
        answer, param = _renamed(plain, "fmt-") + "\nanswer ::= fmt-root", "response_format"
    if thinking == "off":
        start = "root ::= answer"
    elif thinking == "open":
        start = f'root ::= ("<think>" think-text "</think>" {_GAP})? answer'
    else:
        start = f'root ::= think-text "</think>" {_GAP} answer'
    first = "\n".join(
        [start, answer] + ([] if thinking == "off" else [_text_without("</think>", "think-text")])
    )
    return OutputGrammar(_bounded(first, param), "root ::= answer\n" + answer, param)


def _bounded(gbnf: str, param: str) -> str:
    """`gbnf`, unless it is larger than the engine allows: a backstop, since the schema
    bounds (schema_bounds.py) keep grammars far below it."""
    if len(gbnf) > MAX_GRAMMAR_BYTES:
        raise InvalidRequest(
            f"{param}: the grammar for this request would be larger than the local engine "
            f"allows ({MAX_GRAMMAR_BYTES:,} bytes)",
            param=param,
        )
    return gbnf


def grammar_key(
    request: ChatRequest, *, tool_format: ToolFormat, thinking: ThinkMode
) -> bytes | None:
    """What `output_grammar` builds from, as canonical JSON (whitespace and escapes as
    msgspec writes them; key order kept, since the grammar writes properties in the order
    the schema lists them): equal keys, equal grammars. None when nothing is constrained."""
    forced = _forced_tools(request, tool_format)
    if not forced and _generic_auto(request, tool_format):
        forced = list(request.tools)
    if forced:
        offered = {id(tool): index for index, tool in enumerate(request.tools)}
        inputs: tuple[Any, ...] = (
            "tools",
            tool_format,
            request.tool_choice.mode,
            thinking,
            request.parallel_tool_calls,
            [(offered[id(tool)], tool.name, tool.parameters) for tool in forced],
        )
        if request.tool_choice.mode == "auto":  # the text branch may be response_format's
            response_format = request.response_format
            inputs += (response_format.type, response_format.schema)
    elif request.response_format.type == "text":
        return None
    else:
        response_format = request.response_format
        inputs = ("response_format", thinking, response_format.type, response_format.schema)
    return msgspec.json.encode(inputs)


def _forced_tools(request: ChatRequest, tool_format: ToolFormat) -> list[Tool]:
    """The tools one of which the answer must call, or [] when no call is forced."""
    choice = request.tool_choice
    if not request.tools or tool_format == "none" or choice.mode not in ("required", "named"):
        return []
    if choice.mode == "named":
        named = [tool for tool in request.tools if tool.name == choice.name]
        if not named:
            raise InvalidRequest(
                f"tool_choice names the function {choice.name!r}, which is not among the tools",
                param="tool_choice",
            )
        return named
    return list(request.tools)


def _single_call(request: ChatRequest, tool_format: ToolFormat) -> bool:
    """Whether the answer holds one call at most. Always on the generic format: a model that
    was not trained to call tools, allowed several, repeats its first call until the output
    limit (SmolLM2 did at every prompt tried), so it writes one per turn and the client
    sends the next turn; parallel_tool_calls permits several calls, it never requires them."""
    return tool_format == "generic" or not request.parallel_tool_calls


def _generic_auto(request: ChatRequest, tool_format: ToolFormat) -> bool:
    """Tools offered with "auto" on the generic format: calls are written under a grammar
    too, since a template-less model has not learnt the format well enough to be left free."""
    return tool_format == "generic" and bool(request.tools) and request.tool_choice.mode == "auto"


def _calls_or_text(request: ChatRequest) -> str:
    """`answer` for "auto" on the generic format: calls to any offered tool, or an answer
    that is not a call (the response_format's, or any text without `<tool_call>`)."""
    single = _single_call(request, "generic")
    calls = _tool_calls(request, list(request.tools), "generic", single=single, rule="calls")
    plain = grammar_for(request.response_format)
    if plain is not None:
        text = _renamed(plain, "fmt-") + "\ntext ::= fmt-root"
    else:
        text = _text_without("<tool_call>", "text")
    return "\n".join([calls, text, "answer ::= calls | text"])


# ---------------------------------------------------------------------------- tool calls


def _tool_calls(
    request: ChatRequest,
    tools: list[Tool],
    tool_format: ToolFormat,
    *,
    single: bool,
    rule: str = "answer",
) -> str:
    # The tools' schemas share one budget (schema_bounds.py): the grammar holds them all.
    budget = SchemaBudget()
    offered = {id(tool): index for index, tool in enumerate(request.tools)}
    shapes: list[Any] = []
    for tool in tools:
        index = offered[id(tool)]
        param = f"tools[{index}].function.parameters"
        subject = f"tools[{index}] ({tool.name!r}) parameters"
        if tool_format == "generic":
            budget, shape = _within_budget(budget, tool.parameters, param, subject)
            shapes.append(shape)
        else:
            budget.check(tool.parameters, param=param, subject=subject)
            shapes.append(tool.parameters)
    rules: list[str] = []
    names: list[str] = []
    for number, (tool, shape) in enumerate(zip(tools, shapes, strict=True)):
        name = f"call{number}"
        if tool_format == "qwen3_coder_xml":
            rules.append(_xml_call(tool, name))
        else:
            rules.append(_json_call(tool, name, shape))
        names.append(name)
    rules.append("call ::= " + " | ".join(names))
    rules.append(f"{rule} ::= call" if single else f'{rule} ::= call ("\\n" call)*')
    return "\n".join(rules)


def _within_budget(
    budget: SchemaBudget, schema: Any, param: str, subject: str
) -> tuple[SchemaBudget, Any]:
    """The budget after `schema`, and the schema the grammar shapes the call by: `schema`
    itself, or, when it asks for more than the bounds allow, its loosened forms (without
    patterns and formats, then without lengths and counts), or failing that any JSON
    object. For the generic format, whose tools come from agents with schemas written for
    large models (Claude Code's include a `maxLength` of 524,288): one tool's bounds must not
    refuse the whole request. The parsers still check each call against the real schema."""
    for shape in (schema, loosened(schema), loosened(schema, counts=True)):
        trial = copy.copy(budget)
        try:
            trial.check(shape, param=param, subject=subject)
        except InvalidRequest:
            continue
        return trial, shape
    return budget, {"type": "object"}


def _json_call(tool: Tool, name: str, shape: Any = None) -> str:
    head = '<tool_call>\n{"name": ' + json.dumps(tool.name, ensure_ascii=False) + ', "arguments": '
    schema = tool.parameters if shape is None else shape
    arguments = _json_rules(schema or {"type": "object"}, f"{name}-args-", object_only=True)
    tail = _literal("}\n</tool_call>")
    return f"{arguments}\n{name} ::= {_literal(head)} {name}-args-root {tail}"


def _xml_call(tool: Tool, name: str) -> str:
    schema = tool.parameters or {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    required = set(schema.get("required") or ()) if isinstance(schema, dict) else set()
    rules: list[str] = []
    parts: list[str] = []
    if isinstance(properties, dict):
        for position, (parameter, subschema) in enumerate(properties.items()):
            rule = f"{name}-p{position}"
            value = _xml_value(subschema, f"{rule}-v", rules)
            head = f"<parameter={parameter}>\n"
            rules.append(f"{rule} ::= {_literal(head)} {value} {_PARAMETER_END}")
            parts.append(rule if parameter in required else f"{rule}?")
    head = f"<tool_call>\n<function={tool.name}>\n"
    body = " ".join(parts) if parts else '""'
    rules.append(f"{name} ::= {_literal(head)} {body} {_FUNCTION_END}")
    return "\n".join(rules)


def _xml_value(schema: Any, rule: str, rules: list[str]) -> str:
    """The rule for one XML parameter's value: strings are bare text (Qwen3-Coder writes them
    unquoted), numbers and booleans their JSON text, anything else JSON."""
    if isinstance(schema, dict):
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            choices = [value if isinstance(value, str) else json.dumps(value) for value in enum]
            return "(" + " | ".join(_literal(choice) for choice in choices) + ")"
        kind = schema.get("type")
        if kind == "string" and not (schema.keys() - {"type", "description", "title"}):
            rules.append(_text_without("</parameter>", rule))
            return rule
        if kind == "integer" and not (schema.keys() - {"type", "description", "title"}):
            return '"-"? [0-9]{1,16}'
        if kind == "boolean":
            return '("true" | "false")'
    rules.append(_json_rules(schema, f"{rule}-", object_only=False))
    return f"{rule}-root"


def _json_rules(schema: Any, prefix: str, *, object_only: bool) -> str:
    """A JSON grammar for `schema` with every rule name prefixed (its start: `{prefix}root`).
    A schema the grammar cannot enforce exactly gets the grammar of its loosened form (the
    same shape without bounds, formats, …), and failing that plain JSON (an object, for
    arguments)."""
    try:
        gbnf = schema_grammar(schema)
    except InvalidRequest:
        try:
            gbnf = schema_grammar(loosened(schema))
        except InvalidRequest:
            gbnf = JSON_GBNF if object_only else _JSON_VALUE_GBNF
    return _renamed(gbnf, prefix)


# ---------------------------------------------------------------------------- GBNF text

# A GBNF token: a string literal, a character class, a repetition count, a comment, a rule
# name, or any other single character.
_GBNF_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|\{[0-9, ]*\}|#[^\n]*|[A-Za-z0-9_-]+|.', re.DOTALL
)


def _renamed(gbnf: str, prefix: str) -> str:
    """`gbnf` with every rule name prefixed, so that several grammars can share one file."""
    out: list[str] = []
    for match in _GBNF_TOKEN.finditer(gbnf):
        token = match.group()
        if token[0] == "#":
            continue
        out.append(prefix + token if token[0].isalnum() or token[0] in "_-" else token)
    return "".join(out)


def _literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def _class_char(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


def _text_without(stop: str, name: str) -> str:
    """Rules for `name`: any text that does not contain `stop` and does not end partway into
    it. A state machine over how much of `stop` the text has just matched; it assumes that
    `stop`'s first character occurs nowhere else in it (true of the closing tags used here)."""
    first = stop[0]
    assert first not in stop[1:], stop
    rules = [f"{name} ::= ([^{_class_char(first)}] | {_literal(first)} {name}-1)*"]
    for level in range(1, len(stop)):
        expected = stop[level]
        rule = f"{name}-{level} ::= [^{_class_char(first)}{_class_char(expected)}] | "
        if level + 1 < len(stop):
            rule += f"{_literal(expected)} {name}-{level + 1} | "
        rule += f"{_literal(first)} {name}-1"
        rules.append(rule)
    return "\n".join(rules)
