"""Qwen3's JSON tool calls: `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>` blocks.

The content channel (reasoning already split off) holds text and any number of such blocks.
Decisions, each a behaviour a client sees:

- Arguments stream as the model wrote them: once the header `{"name": "<known tool>",
  "arguments": ` has been read and the arguments value opens with `{`, `CallStart` goes out and
  the object's text follows in `CallArguments` fragments, byte for byte, trimmed to the object.
- Anything else that is still a valid call (keys in another order, extra keys, arguments given
  as a JSON string holding an object, which some models write) is read whole at `</tool_call>`
  and sent as one fragment: the re-serialised object, or the string's content trimmed.
- Whitespace directly before a `<tool_call>` or directly after a `</tool_call>` is formatting,
  not content: "Let me check.\\n\\n<tool_call>…</tool_call>\\n<tool_call>…" gives the content
  "Let me check." and two calls, no whitespace-only text between them. Other text is untouched.
- `</tool_call>` ends a block only outside a JSON string, so arguments may contain the tag.
- A block that cannot be honoured (invalid JSON, no name or arguments, arguments that are not
  an object, a tool not in `tool_names`, no `</tool_call>` before the end) becomes `Malformed`
  with the block's raw text, never content. When `CallStart` was already sent (the header was
  fine but the JSON broke later, or the output was cut off mid-call), that call ends with the
  `Malformed` piece instead of `CallEnd`.

Imports only the standard library and `parsers.base`.
"""

from __future__ import annotations

import json
import re
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

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"

# The header that lets arguments stream: it matches a prefix of the block body identically
# however the body was split, so streamed and whole parses take the same path.
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


class Qwen3JsonToolParser:
    """Incremental `ContentParser` for Qwen3 (hermes-style) JSON tool calls."""

    def __init__(self, tool_names: set[str] | None = None) -> None:
        self._tool_names = tool_names
        self._in_call = False
        self._after_call = False  # no text but whitespace since the last block closed
        self._text = ""  # held-back content while outside a block
        self._block = _Block(tool_names)

    def feed(self, text: str) -> list[Piece]:
        pieces: list[Piece] = []
        pending = text
        while pending:
            if self._in_call:
                pending = self._block.feed(pending, pieces)
                if self._block.closed:
                    self._close_block()
                continue
            self._text += pending
            pending = ""
            start = self._text.find(OPEN_TAG)
            if start >= 0:
                self._emit_text(self._text[:start].rstrip(), pieces)
                pending = self._text[start + len(OPEN_TAG) :]
                self._text = ""
                self._in_call = True
                self._block = _Block(self._tool_names)
                continue
            held = longest_partial_suffix(self._text, OPEN_TAG)
            safe_end = len(self._text[: len(self._text) - held].rstrip())
            if safe_end:
                self._emit_text(self._text[:safe_end], pieces)
                self._text = self._text[safe_end:]
        return pieces

    def finish(self, *, cut: bool = False) -> list[Piece]:
        pieces: list[Piece] = []
        if self._in_call:
            self._block.finish(pieces)
            self._close_block()
        rest, self._text = self._text, ""
        held = longest_partial_suffix(rest, OPEN_TAG) if cut else 0
        if held:  # a call the output limit cut before its tag was whole: not text
            rest = rest[: len(rest) - held].rstrip()
        self._emit_text(rest, pieces)
        return pieces

    def _close_block(self) -> None:
        self._in_call = False
        self._after_call = True

    def _emit_text(self, text: str, pieces: list[Piece]) -> None:
        if self._after_call:
            text = text.lstrip()
        if text:
            pieces.append(Content(text))
            self._after_call = False


class _Block:
    """One `<tool_call>` block's body, scanned character by character.

    The scanner tracks only JSON nesting and strings: enough to find `</tool_call>` outside
    strings and the end of a streaming arguments object. Validity is judged with `json.loads`
    once the block closes."""

    def __init__(self, tool_names: set[str] | None) -> None:
        self._tool_names = tool_names
        self.closed = False
        self._body = ""
        self._scanned = 0  # body[:_scanned] has been through the scanner
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._header_done = False
        self._streaming = False  # CallStart sent; arguments are streaming or streamed
        self._args_start = 0
        self._args_end: int | None = None  # set once the streamed object closed
        self._sent = 0  # body[:_sent] has gone out as CallArguments

    def feed(self, text: str, pieces: list[Piece]) -> str:
        """Consume `text`; return what follows this block's `</tool_call>` (if it closed)."""
        self._body += text
        if not self._header_done:
            self._read_header(pieces)
        body = self._body
        while self._scanned < len(body):
            char = body[self._scanned]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == "<":
                if body.startswith(CLOSE_TAG, self._scanned):
                    return self._close(pieces)
                if CLOSE_TAG.startswith(body[self._scanned :]):
                    break  # maybe the start of the closing tag: wait for more text
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._streaming and self._args_end is None and self._depth == 1:
                    self._args_end = self._scanned + 1
            self._scanned += 1
        self._send_arguments(pieces)
        return ""

    def finish(self, pieces: list[Piece]) -> None:
        self._send_arguments(pieces)
        pieces.append(Malformed(OPEN_TAG + self._body, "unclosed tool call", cut=True))
        self.closed = True

    def _read_header(self, pieces: list[Piece]) -> None:
        match = _HEADER.match(self._body)
        if match is None or match.end() == len(self._body):
            return  # not (yet) a streamable header; the block is read whole at its end
        self._header_done = True
        if self._body[match.end()] != "{":
            return
        try:
            name = json.loads(match.group(1))
        except json.JSONDecodeError:
            return  # judged when the block closes
        if not name or (self._tool_names is not None and name not in self._tool_names):
            return  # judged (as unknown) when the block closes
        pieces.append(CallStart(name))
        self._streaming = True
        self._args_start = self._sent = match.end()

    def _send_arguments(self, pieces: list[Piece]) -> None:
        if not self._streaming:
            return
        end = self._args_end if self._args_end is not None else self._scanned
        if end > self._sent:
            pieces.append(CallArguments(self._body[self._sent : end]))
            self._sent = end

    def _close(self, pieces: list[Piece]) -> str:
        self._send_arguments(pieces)
        self.closed = True
        body = self._body[: self._scanned]
        rest = self._body[self._scanned + len(CLOSE_TAG) :]
        raw = OPEN_TAG + body + CLOSE_TAG
        name, arguments, problem = _judge(body, self._tool_names)
        if problem is None and self._streaming:
            streamed = body[self._args_start : self._args_end]
            if json.loads(streamed) != json.loads(arguments):
                problem = "duplicate keys"  # the streamed value is not the one JSON keeps
        if problem is not None:
            pieces.append(Malformed(raw, problem))
        elif self._streaming:
            pieces.append(CallEnd())
        else:
            pieces += [CallStart(name), CallArguments(arguments), CallEnd()]
        return rest


def _judge(body: str, tool_names: set[str] | None) -> tuple[str, str, str | None]:
    """Validate a whole block body: (name, arguments JSON text, problem or None)."""
    try:
        call: Any = json.loads(body)
    except json.JSONDecodeError as error:
        return "", "", f"invalid JSON: {error.msg}"
    if not isinstance(call, dict):
        return "", "", "not a JSON object"
    name = call.get("name")
    if not isinstance(name, str) or not name:
        return "", "", 'missing "name"'
    if "arguments" not in call:
        return "", "", 'missing "arguments"'
    if tool_names is not None and name not in tool_names:
        return "", "", f"unknown tool {name!r}"
    arguments = call["arguments"]
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except json.JSONDecodeError:
            return "", "", "arguments are a string that is not JSON"
        if not isinstance(decoded, dict):
            return "", "", "arguments are not a JSON object"
        return name, arguments.strip(), None
    if not isinstance(arguments, dict):
        return "", "", "arguments are not a JSON object"
    return name, json.dumps(arguments, ensure_ascii=False), None
