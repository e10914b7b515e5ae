"""Translating an upstream's stream: OpenAI `chat.completion.chunk` payloads (or one whole
`chat.completion`; or `text_completion` chunks from /completions, whose text is answer text)
-> canonical events for one response. Pure: no I/O.

`StreamTranslator` numbers content blocks, holds back the finish reason and usage until the
end, and raises a `core.errors` type for an error the upstream sends inside the stream (mapped
by `upstream_errors.py`). Reading does not depend on the dialect. Imports only core and msgspec.
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelport.core.errors import UpstreamError
from modelport.core.events import (
    Event,
    Logprobs,
    ReasoningDelta,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.ids import tool_call_id
from modelport.core.types import FinishReason, TokenLogprob
from modelport.protocols.openai.upstream_errors import clip, upstream_error


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _TopLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None = None


class _TokenLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[_TopLogprob] | None = None


class _ChoiceLogprobs(msgspec.Struct):
    content: list[_TokenLogprob] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    message: _Delta | None = None  # a whole chat.completion, from upstreams that ignore `stream`
    finish_reason: str | None = None
    stop_reason: int | str | None = None  # vLLM: the stop string or token id that ended it
    matched_stop: int | str | None = None  # SGLang: the same
    # A /completions choice's logprobs object has other keys: it decodes with content None.
    logprobs: _ChoiceLogprobs | None = None
    text: str | None = None  # a /completions choice: the raw text


# Token counts are read as any JSON value: an upstream that sends 20.0 or "20" must not make
# the whole answer unreadable. `_count` turns them into integers, or -1 for what is not a
# count, which the metering stage does not believe (core/usage_check.py) and recounts.
class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: Any = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: Any = None


class _Usage(msgspec.Struct):
    prompt_tokens: Any = None
    completion_tokens: Any = None
    completion_tokens_details: _CompletionDetails | None = None
    prompt_tokens_details: _PromptDetails | None = None


class _ErrorBody(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: int | str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: _ErrorBody | str | None = None
    # vLLM and SGLang also send errors as a top-level {"object": "error", "message": ...}.
    object: str | None = None
    message: str | None = None
    code: int | str | None = None


_CHUNK = msgspec.json.Decoder(_Chunk)

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
    "abort": "error",
}

_NONE, _TEXT, _REASONING, _TOOL = 0, 1, 2, 3


class _PendingCall:
    __slots__ = ("arguments", "block", "id", "name")

    def __init__(self, call_id: str | None) -> None:
        self.id = call_id
        self.name: str | None = None
        self.block = -1  # -1 until the name is known and the block opens
        self.arguments: list[str] = []


class StreamTranslator:
    """Upstream chat.completion.chunk payloads -> canonical events for one response.

    Content blocks are numbered in the order they open: a block closes when the kind of delta
    changes (reasoning, text, each tool call). The finish reason and usage are held back:
    upstreams send usage after the finish chunk, and `finish()` emits both at the end.
    Only choice 0 is relayed.
    """

    __slots__ = (
        "_block",
        "_calls",
        "_finish",
        "_kind",
        "_model",
        "_native",
        "_pending_logprobs",
        "_saw_tool_call",
        "_stop_sequence",
        "_upstream",
        "done",
        "usage",
    )

    def __init__(self, *, upstream: str = "", model: str = "") -> None:
        self._upstream = upstream  # names for error messages
        self._model = model
        self._block = -1
        self._kind = _NONE
        self._calls: dict[int, _PendingCall] = {}
        self._pending_logprobs: list[TokenLogprob] = []
        self._finish: str | None = None
        self._native: str | None = None
        self._stop_sequence: str | None = None
        self._saw_tool_call = False
        self.done = False  # `[DONE]` arrived
        self.usage: Usage | None = None  # the latest usage the upstream reported

    @property
    def finished(self) -> bool:
        """A finish reason has arrived: the answer itself is complete."""
        return self._finish is not None

    def feed(self, event: str | None, data: bytes) -> list[Event]:
        """Translate one SSE event; raises a `core.errors` type for an upstream error.

        A whole non-streamed `chat.completion` body is accepted too, as one chunk.
        """
        if data == b"[DONE]":
            self.done = True
            return []
        try:
            chunk = _CHUNK.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if event == "error":
                raise upstream_error(
                    None, clip(data), None, self._upstream, self._model, None
                ) from None
            raise UpstreamError(
                "the upstream model server sent an unreadable stream chunk",
                detail=f"unreadable stream chunk ({exc}): {clip(data)}",
            ) from None
        if chunk.error is not None or chunk.object == "error" or event == "error":
            message, code = _chunk_error(chunk)
            raise upstream_error(None, message, code, self._upstream, self._model, None)
        choices = chunk.choices
        if choices and len(choices) == 1 and chunk.usage is None and self._kind == _TEXT:
            # Most of a stream: one more piece of the text block being sent.
            choice = choices[0]
            delta = choice.delta
            if (
                delta is not None
                and delta.content
                and choice.index == 0
                and choice.finish_reason is None
                and choice.logprobs is None
                and delta.reasoning_content is None
                and delta.reasoning is None
                and delta.tool_calls is None
                and choice.text is None
            ):
                return [TextDelta(self._block, delta.content)]
        out: list[Event] = []
        if choices:
            for choice in choices:
                if choice.index == 0:
                    self._choice(choice, out)
        if chunk.usage is not None:
            self.usage = _usage(chunk.usage)
        return out

    def finish(self) -> list[Event]:
        """The stream ended: the usage (if any) and the `Stop`, or an error if it was cut short."""
        if self._finish is None:
            raise UpstreamError("upstream stream ended without a finish reason")
        for call in self._calls.values():
            if call.block < 0:
                raise UpstreamError("upstream sent a tool call without a function name")
        reason = _FINISH.get(self._finish, "stop")
        if reason == "stop" and self._saw_tool_call:
            # Ollama and older llama.cpp servers say "stop" after tool calls; clients (and the
            # Anthropic front door's stop_reason) need to know the turn ended to call tools.
            reason = "tool_calls"
        out: list[Event] = []
        if self.usage is not None:
            out.append(self.usage)
        out.append(Stop(reason, self._native, self._stop_sequence))
        return out

    def _choice(self, choice: _Choice, out: list[Event]) -> None:
        delta = choice.delta if choice.delta is not None else choice.message
        if delta is not None:
            reasoning = delta.reasoning_content
            if reasoning is None:
                reasoning = delta.reasoning
            if reasoning:
                self._text(_REASONING, reasoning, out)
            if delta.content:
                self._text(_TEXT, delta.content, out)
            if delta.tool_calls:
                for position, call in enumerate(delta.tool_calls):
                    self._tool_call(call, position, out)
        if choice.text:
            self._text(_TEXT, choice.text, out)
        logprobs = choice.logprobs
        if logprobs is not None and logprobs.content:
            entries = tuple(_token_logprob(entry) for entry in logprobs.content)
            if self._pending_logprobs:
                entries = (*self._pending_logprobs, *entries)
                self._pending_logprobs = []
            if self._block < 0:  # no block to attach them to yet: the next one gets them
                self._pending_logprobs.extend(entries)
            else:
                out.append(Logprobs(self._block, entries))
        elif self._pending_logprobs and self._block >= 0:
            out.append(Logprobs(self._block, tuple(self._pending_logprobs)))
            self._pending_logprobs = []
        if choice.finish_reason and self._finish is None:
            self._finish = choice.finish_reason
            native = choice.stop_reason
            self._native = choice.finish_reason if native is None else str(native)
            for matched in (choice.stop_reason, choice.matched_stop):
                if isinstance(matched, str) and matched:
                    self._stop_sequence = matched  # a stop string (token ids are ints)
                    break

    def _open(self, kind: int) -> int:
        self._block += 1
        self._kind = kind
        return self._block

    def _text(self, kind: int, text: str, out: list[Event]) -> None:
        index = self._block if self._kind == kind else self._open(kind)
        out.append(ReasoningDelta(index, text) if kind == _REASONING else TextDelta(index, text))

    def _tool_call(self, delta: _ToolCall, position: int, out: list[Event]) -> None:
        key = delta.index if delta.index is not None else position
        name = arguments = None
        if delta.function is not None:
            name, arguments = delta.function.name, delta.function.arguments
        call = self._calls.get(key)
        # Some servers number every call 0; a different id on the same index is a new call.
        if call is None or (delta.id and call.id and delta.id != call.id and call.block >= 0):
            call = self._calls[key] = _PendingCall(delta.id)
        elif delta.id and not call.id:
            call.id = delta.id
        if call.block < 0:
            if name:
                call.name = name
            if arguments:
                call.arguments.append(arguments)
            if call.name:
                call.block = self._open(_TOOL)
                self._saw_tool_call = True
                out.append(ToolCallStart(call.block, call.id or tool_call_id(), call.name))
                if call.arguments:
                    out.append(ToolCallDelta(call.block, "".join(call.arguments)))
                    call.arguments = []
            return
        if arguments:
            if call.block != self._block:
                raise UpstreamError(
                    "upstream interleaved the arguments of parallel tool calls; "
                    "they cannot be relayed in order"
                )
            out.append(ToolCallDelta(call.block, arguments))


def _token_logprob(entry: _TokenLogprob) -> TokenLogprob:
    top: tuple[tuple[str, float, tuple[int, ...] | None], ...] = ()
    if entry.top_logprobs:
        top = tuple(
            (alt.token, alt.logprob, tuple(alt.bytes) if alt.bytes is not None else None)
            for alt in entry.top_logprobs
        )
    return TokenLogprob(
        token=entry.token,
        logprob=entry.logprob,
        bytes=tuple(entry.bytes) if entry.bytes is not None else None,
        top=top,
    )


def _count(value: Any) -> int:
    """A reported token count as an integer: 0 when absent, -1 when it is not a count."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return -1
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return -1


def _usage(usage: _Usage) -> Usage:
    completion = _count(usage.completion_tokens)
    reasoning = 0
    if usage.completion_tokens_details is not None:
        reasoning = min(
            max(_count(usage.completion_tokens_details.reasoning_tokens), 0), max(completion, 0)
        )
    cached = 0
    if usage.prompt_tokens_details is not None:
        cached = max(_count(usage.prompt_tokens_details.cached_tokens), 0)
    return Usage(
        prompt_tokens=_count(usage.prompt_tokens),
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        cached_tokens=cached,
    )


def _chunk_error(chunk: _Chunk) -> tuple[str, int | str | None]:
    """The message and code of the error a stream chunk carries."""
    message: str | None = None
    code: int | str | None = chunk.code
    if isinstance(chunk.error, _ErrorBody):
        message = chunk.error.message
        code = chunk.error.code if chunk.error.code is not None else code
    elif isinstance(chunk.error, str):
        message = chunk.error
    return message or chunk.message or "an error without a message", code
