"""Qwen3 output → canonical events: the think splitter and a tool-call parser, composed.

`Qwen3OutputParser` is what a backend feeds with the model's raw text. It returns the deltas
of `core.events` (never `Start`, `Usage` or `Stop`: those belong to the backend) with content
block indices 0, 1, 2, … in order: a new block whenever the kind changes (reasoning, text, tool
call) and for every call. `finish` adds a `Qwen3Summary` from which the backend picks the
finish reason. Pure: imports only `modelport.core`, the standard library and sibling parsers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelport.core.events import Event, ReasoningDelta, TextDelta, ToolCallDelta, ToolCallStart
from modelport.core.ids import tool_call_id
from modelport.core.types import FinishReason
from modelport.parsers.base import (
    CallArguments,
    CallEnd,
    CallStart,
    Content,
    ContentParser,
    Malformed,
    Piece,
    Reasoning,
    merge_adjacent,
)
from modelport.parsers.qwen3_json import Qwen3JsonToolParser
from modelport.parsers.think import ThinkMode, ThinkParser


@dataclass(frozen=True)
class Qwen3Summary:
    """What the finished output held, for choosing the finish reason.

    `saw_tool_calls` counts only calls that closed properly (`CallEnd`); a broken call is in
    `malformed`, and so is one the output ended inside, unless the output was cut off (by
    max_tokens): then `cut_call` is set and the partial call stands as streamed, like a cut
    answer. `think_closed` is False when the output ended inside reasoning."""

    saw_tool_calls: bool
    think_closed: bool
    malformed: tuple[Malformed, ...]
    called: tuple[str, ...] = ()  # the names of the calls passed on, in order
    dropped_calls: int = 0  # calls beyond `max_calls`, left out
    cut_call: bool = False  # a cut-off output ended inside a tool call

    def finish_reason(self, engine_reason: FinishReason) -> FinishReason:
        """The finish reason to report, given the engine's ("stop" or "length").

        A length cut wins (the answer, or a call, is incomplete even if earlier calls closed);
        otherwise honoured calls mean "tool_calls"."""
        if engine_reason == "stop" and self.saw_tool_calls:
            return "tool_calls"
        return engine_reason


_Kind = Literal["reasoning", "text", "call"]


class Qwen3OutputParser:
    """Raw Qwen3 text in, numbered canonical deltas out.

    `content_parser` is "json" (the default: Qwen3's `<tool_call>` JSON, restricted to
    `tool_names` when given), any `ContentParser` (Qwen3-Coder's XML one), or None for a
    request without tools, where everything after reasoning is text."""

    def __init__(
        self,
        *,
        think_mode: ThinkMode = "open",
        content_parser: ContentParser | Literal["json"] | None = "json",
        tool_names: set[str] | None = None,
        max_calls: int | None = None,
        schemas: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self._think = ThinkParser(think_mode)
        # parallel_tool_calls=false: calls after the first are left out (with their arguments).
        self._max_calls = max_calls
        self._called: list[str] = []
        # Tool name -> parameters schema: a finished call's arguments are checked against it.
        self._schemas = dict(schemas or {})
        self._arguments: list[str] = []  # the open call's argument fragments
        self._tool_names = tool_names
        self._external_calls: list[tuple[str, list[str]]] = []  # checked at finish
        self._dropped = 0
        self._dropping = False
        self._content: ContentParser | None = (
            Qwen3JsonToolParser(tool_names) if isinstance(content_parser, str) else content_parser
        )
        self._index = -1
        self._kind: _Kind | None = None  # the open block's kind; None after a call ended
        self._saw_tool_calls = False
        self._malformed: list[Malformed] = []
        self._cut = False  # finishing an output that was cut off
        self._cut_call = False
        self._external: dict[int, int] = {}  # upstream call index -> our block index

    def feed(self, text: str) -> list[Event]:
        return self._events(self._route(self._think.feed(text)))

    def feed_reasoning(self, text: str) -> list[Event]:
        """Reasoning an upstream already separated (it arrives outside the text channel)."""
        return self._events([Reasoning(text)])

    def feed_external_call(self, event: ToolCallStart | ToolCallDelta) -> list[Event]:
        """A tool call an upstream already parsed: renumbered into this parser's blocks.
        Upstreams number their calls 0, 1, …; each start opens a block of ours."""
        if isinstance(event, ToolCallStart):
            self._kind = None
            if self._max_calls is not None and len(self._called) >= self._max_calls:
                self._dropped += 1
                return []  # parallel_tool_calls=false: its deltas find no open block
            if self._tool_names is not None and event.name not in self._tool_names:
                self._malformed.append(Malformed(event.name, f"unknown function {event.name!r}"))
                return []
            index = self._block("call")
            self._external[event.index] = index
            self._external_calls.append((event.name, []))
            self._saw_tool_calls = True
            self._called.append(event.name)
            return [ToolCallStart(index, event.id, event.name)]
        block = self._external.get(event.index)
        if block is None or block != self._index or self._kind != "call":
            return []  # a delta for a call that is no longer the open block
        self._external_calls[-1][1].append(event.arguments)
        return [ToolCallDelta(block, event.arguments)]

    def finish(self, *, cut: bool = False) -> tuple[list[Event], Qwen3Summary]:
        """The last events and the summary. `cut`: the output was cut off (finish reason
        length), so a call it ended inside is incomplete rather than broken."""
        self._cut = cut
        last = len(self._external_calls) - 1
        for position, (name, fragments) in enumerate(self._external_calls):
            arguments = "".join(fragments)
            problem = self._check_arguments(name, arguments)
            if problem is not None and cut and position == last and not _is_json(arguments):
                self._cut_call = True  # the arguments stopped midway
            elif problem is not None:
                self._malformed.append(problem)
        pieces = self._route(self._think.finish())
        if self._content is not None:
            pieces += self._content.finish(cut=cut)
        events = self._events(pieces)
        summary = Qwen3Summary(
            saw_tool_calls=self._saw_tool_calls,
            called=tuple(self._called),
            dropped_calls=self._dropped,
            think_closed=self._think.think_closed,
            malformed=tuple(self._malformed),
            cut_call=self._cut_call,
        )
        return events, summary

    def _route(self, pieces: list[Reasoning | Content]) -> list[Piece]:
        routed: list[Piece] = []
        for piece in pieces:
            if isinstance(piece, Content) and self._content is not None:
                routed += self._content.feed(piece.text)
            else:
                routed.append(piece)
        return routed

    def _events(self, pieces: list[Piece]) -> list[Event]:
        events: list[Event] = []
        for piece in merge_adjacent(pieces):
            if isinstance(piece, Reasoning):
                events.append(ReasoningDelta(self._block("reasoning"), piece.text))
            elif isinstance(piece, Content):
                events.append(TextDelta(self._block("text"), piece.text))
            elif isinstance(piece, CallStart):
                self._kind = None  # every call is a block of its own
                if self._max_calls is not None and len(self._called) >= self._max_calls:
                    self._dropping = True
                    self._dropped += 1
                    continue
                self._called.append(piece.name)
                self._arguments = []
                events.append(ToolCallStart(self._block("call"), tool_call_id(), piece.name))
            elif isinstance(piece, CallArguments):
                if self._kind == "call" and not self._dropping:
                    self._arguments.append(piece.fragment)
                    events.append(ToolCallDelta(self._index, piece.fragment))
            elif isinstance(piece, CallEnd):
                self._kind = None
                if self._dropping:
                    self._dropping = False
                    continue
                problem = self._check_arguments(self._called[-1], "".join(self._arguments))
                if problem is not None:
                    self._malformed.append(problem)
                    continue
                self._saw_tool_calls = True
            else:
                if self._dropping:
                    self._dropping = False
                    continue  # a broken call that was being left out anyway
                if self._kind == "call":
                    self._kind = None  # the broken call gets no more deltas
                if piece.cut and self._cut:
                    self._cut_call = True
                    continue
                self._malformed.append(piece)
        return events

    def _check_arguments(self, name: str, arguments: str) -> Malformed | None:
        """A finished call whose arguments are not a JSON object valid for the tool's schema
        (when the request gave one): reported, not passed off as a usable call."""
        schema = self._schemas.get(name)
        if schema is None:
            return None
        try:
            value = json.loads(arguments or "{}")
        except ValueError:
            return Malformed(arguments, f"the arguments of {name} are not JSON")
        if not isinstance(value, dict):
            return Malformed(arguments, f"the arguments of {name} are not a JSON object")
        # Imported on first use: 0.1 s and a few MB that a server without tool calls never needs.
        import jsonschema

        try:
            validator = jsonschema.validators.validator_for(schema)(schema)
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        except jsonschema.exceptions.SchemaError:
            return None  # the tool's own schema is invalid: nothing to check against
        if error is None:
            return None
        where = "/".join(str(step) for step in error.absolute_path) or "(root)"
        return Malformed(
            arguments,
            f"the arguments of {name} do not match its schema at {where}: {error.message}",
        )

    def _block(self, kind: _Kind) -> int:
        if self._kind != kind:
            self._index += 1
            self._kind = kind
        return self._index


def _is_json(text: str) -> bool:
    try:
        json.loads(text or "{}")
    except ValueError:
        return False
    return True
