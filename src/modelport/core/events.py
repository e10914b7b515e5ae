"""The one streaming vocabulary. Backends emit these; front doors encode them.

Invariants (checked by `check_stream` in tests for every backend):
- exactly one `Start`, first;
- exactly one `Stop` or `Error`, last;
- content blocks are numbered 0, 1, 2, … in the order they open; each index has one kind
  (text, reasoning or tool call) and, once a later block opens, an earlier one gets no more
  deltas;
- a tool call block opens with `ToolCallStart`; its arguments follow as JSON text fragments in
  `ToolCallDelta`s;
- at most one `Usage`, before the final event.
"""

from __future__ import annotations

import msgspec

from modelport.core.errors import ModelportError
from modelport.core.types import FinishReason, TokenLogprob


class Start(msgspec.Struct, frozen=True, tag="start"):
    model: str  # the model id as the catalog names it
    backend: str = ""  # which backend serves it, for usage records


class TextDelta(msgspec.Struct, frozen=True, tag="text"):
    index: int
    text: str


class ReasoningDelta(msgspec.Struct, frozen=True, tag="reasoning"):
    index: int
    text: str


class ToolCallStart(msgspec.Struct, frozen=True, tag="tool_call_start"):
    index: int
    id: str
    name: str


class ToolCallDelta(msgspec.Struct, frozen=True, tag="tool_call_delta"):
    index: int
    arguments: str


class Logprobs(msgspec.Struct, frozen=True, tag="logprobs"):
    index: int
    entries: tuple[TokenLogprob, ...]


class Usage(msgspec.Struct, frozen=True, tag="usage"):
    prompt_tokens: int
    completion_tokens: int  # reasoning tokens included
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    cost_nano: int | None = None  # what the request was billed, set by the gateway at the end

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Stop(msgspec.Struct, frozen=True, tag="stop"):
    finish_reason: FinishReason
    native_finish_reason: str | None = None
    stop_sequence: str | None = None  # the client's stop string that ended the answer, if one


class Error(msgspec.Struct, frozen=True, tag="error"):
    error: ModelportError


Event = (
    Start
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | Logprobs
    | Usage
    | Stop
    | Error
)
