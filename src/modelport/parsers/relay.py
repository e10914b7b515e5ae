"""Choosing the output parser for a request, and running a backend's event stream through it.

`output_parser_for` decides from the model card and the request: Qwen3's think splitter in the
mode the request runs in, and the tool-call parser for the card's tool format when the request
offers tools. `ParsedRelay` applies it to a stream of canonical events whose text is the
model's raw output (the local engine's, or an upstream server started without reasoning and
tool parsers): text is parsed, reasoning and tool calls an upstream did separate are
renumbered into the same blocks, and the finish reason follows what was found. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from modelport.core.catalog import ModelCard
from modelport.core.errors import MalformedModelOutput
from modelport.core.events import (
    Error,
    Event,
    Logprobs,
    ReasoningDelta,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.types import ChatRequest
from modelport.parsers.base import ContentParser
from modelport.parsers.qwen3 import Qwen3OutputParser, Qwen3Summary
from modelport.parsers.qwen3_coder_xml import Qwen3CoderXmlToolParser
from modelport.parsers.think import CLOSE_TAG, OPEN_TAG, ThinkMode


def output_parser_for(
    card: ModelCard, request: ChatRequest, *, preopened: bool
) -> Qwen3OutputParser | None:
    """The parser for this model's output, or None for plain text (a model that does not
    think and no tool format in use). `preopened`: the prompt ends inside a think block."""
    content = _content_parser(card, request)
    if card.thinking == "none" and content is None:
        return None
    return _parser(request, think_mode(card, request, preopened=preopened), content)


def think_mode(card: ModelCard, request: ChatRequest, *, preopened: bool) -> ThinkMode:
    """Where the model's output starts: inside a think block the prompt opened, before one
    it may open, or (not thinking) in the answer."""
    if not card.thinks(request.reasoning):
        return "off"
    return "preopened" if preopened else "open"


def answer_parser_for(card: ModelCard, request: ChatRequest) -> Qwen3OutputParser:
    """The parser for output that starts after a closed think block (the second pass of the
    two-pass thinking budget): reasoning arrives separately (`feed_reasoning`); the text is the
    answer, with tool calls in the card's format when the request offers tools."""
    return _parser(request, "off", _content_parser(card, request))


def _content_parser(
    card: ModelCard, request: ChatRequest
) -> ContentParser | Literal["json"] | None:
    """The tool-call parser for the card's format, when the request offers tools."""
    if not _tools_in_use(request):
        return None
    if card.tool_format in ("qwen3_json", "generic"):
        return "json"
    if card.tool_format == "qwen3_coder_xml":
        return Qwen3CoderXmlToolParser({tool.name: tool.parameters for tool in request.tools})
    return None


def _tools_in_use(request: ChatRequest) -> bool:
    return bool(request.tools) and request.tool_choice.mode != "none"


def call_checker_for(request: ChatRequest) -> Qwen3OutputParser | None:
    """For an upstream that parses tool calls itself: a pass-through parser that checks its
    calls (known function, schema-valid arguments, parallel_tool_calls, tool_choice). None
    when the request offers no tools, so plain answers take no extra step."""
    if not _tools_in_use(request):
        return None
    return _parser(request, "off", None)


def _parser(
    request: ChatRequest, mode: ThinkMode, content: ContentParser | Literal["json"] | None
) -> Qwen3OutputParser:
    """A parser that holds the request's tool rules: offered (or named) functions only, their
    schemas, and at most one call when parallel_tool_calls is false."""
    names = {tool.name for tool in request.tools}
    if request.tool_choice.mode == "named":
        names = {request.tool_choice.name or ""}  # a call to another tool is malformed
    return Qwen3OutputParser(
        think_mode=mode,
        content_parser=content,
        tool_names=names,
        max_calls=None if request.parallel_tool_calls else 1,
        schemas={tool.name: tool.parameters for tool in request.tools},
    )


def malformed_error(
    summary: Qwen3Summary, request: ChatRequest | None = None
) -> MalformedModelOutput | None:
    """The error that ends a stream whose tool calls cannot be honoured: a call the model
    broke, or an answer without the call that tool_choice "required" / named demands."""
    if summary.malformed:
        bad = summary.malformed[0]
        return MalformedModelOutput(
            f"The model wrote a tool call that cannot be used ({bad.reason}): {bad.raw[:200]!r}"
        )
    if request is not None and request.tools and not summary.called:
        mode = request.tool_choice.mode
        if mode == "required" or mode == "named":
            wanted = (
                "a tool call" if mode == "required" else f"a call to {request.tool_choice.name}"
            )
            return MalformedModelOutput(
                f"tool_choice asked for {wanted}, but the model answered without one."
            )
    return None


class ReasoningCounter:
    """Counts the reasoning tokens of an answer whose upstream reported none (an engine that
    returns raw text, or one whose usage has no reasoning_tokens): the think block as the model
    wrote it, tags included, re-tokenized with `count` (Qwen3's tokenizer). From raw text the
    block is cut out exactly; from reasoning an upstream already separated, the tags and the
    newlines around them are put back as Qwen3 writes them."""

    def __init__(self, count: Callable[[str], int], *, preopened: bool) -> None:
        self._count = count
        self._preopened = preopened
        self._raw: list[str] = []
        self._labelled: list[str] = []

    def raw(self, text: str) -> None:
        self._raw.append(text)

    def labelled(self, text: str) -> None:
        self._labelled.append(text)

    def usage(self, usage: Usage) -> Usage:
        """`usage` with reasoning_tokens filled in, when the upstream left them at 0."""
        if usage.reasoning_tokens:
            return usage
        block = self._block()
        if not block:
            return usage
        reasoning = min(self._count(block), usage.completion_tokens)
        return Usage(usage.prompt_tokens, usage.completion_tokens, reasoning, usage.cached_tokens)

    def _block(self) -> str:
        if self._labelled:
            opening = "" if self._preopened else OPEN_TAG + "\n"
            return opening + "".join(self._labelled).strip("\n") + "\n" + CLOSE_TAG
        raw = "".join(self._raw)
        if self._preopened:
            start = 0
        else:
            start = raw.find(OPEN_TAG)
            if start < 0 or raw[:start].strip():
                return ""  # no think block: the model answered straight away
        end = raw.find(CLOSE_TAG, start)
        return raw[start:] if end < 0 else raw[start : end + len(CLOSE_TAG)]


class ParsedRelay:
    """Canonical events with raw model text in, parsed events out (one event at a time).

    `keep_logprobs`: a `Logprobs` event that directly follows a text delta whose parsed output
    ended in answer text is kept, renumbered to that block (the local engine sends each
    piece's entries right after its text); otherwise logprobs are dropped, since token entries
    no longer line up with the parsed blocks. `counter` (for upstreams): fills in
    reasoning_tokens the upstream did not report."""

    def __init__(
        self,
        parser: Qwen3OutputParser,
        request: ChatRequest | None = None,
        *,
        keep_logprobs: bool = False,
        counter: ReasoningCounter | None = None,
    ) -> None:
        self._parser = parser
        self._request = request
        self._usage: Usage | None = None
        self._keep_logprobs = keep_logprobs
        self._text_block: int | None = None  # the answer block the last text delta ended in
        self._counter = counter

    def feed(self, event: Event) -> list[Event]:
        text_block, self._text_block = self._text_block, None
        parser = self._parser
        if isinstance(event, TextDelta):
            if self._counter is not None:
                self._counter.raw(event.text)
            events = parser.feed(event.text)
            if events and isinstance(events[-1], TextDelta):
                self._text_block = events[-1].index
            return events
        if isinstance(event, ReasoningDelta):
            if self._counter is not None:
                self._counter.labelled(event.text)
            return parser.feed_reasoning(event.text)
        if isinstance(event, ToolCallStart | ToolCallDelta):
            return parser.feed_external_call(event)
        if isinstance(event, Logprobs):
            if self._keep_logprobs and text_block is not None:
                return [Logprobs(text_block, event.entries)]
            return []
        if isinstance(event, Usage):
            self._usage = event  # held: the parser may still flush deltas at the end
            return []
        if isinstance(event, Stop):
            events, summary = parser.finish(cut=event.finish_reason == "length")
            events += self._held_usage()
            error = malformed_error(
                summary, self._request if event.finish_reason != "length" else None
            )
            if error is not None:
                return [*events, Error(error)]
            finish = summary.finish_reason(event.finish_reason)
            return [*events, Stop(finish, event.native_finish_reason, event.stop_sequence)]
        if isinstance(event, Error):
            return [*self._held_usage(), event]
        return [event]

    def _held_usage(self) -> list[Event]:
        usage, self._usage = self._usage, None
        if usage is None:
            return []
        return [self._counter.usage(usage) if self._counter is not None else usage]
