"""Canonical completion / events -> OpenAI wire: one JSON body, or SSE `chat.completion.chunk`s.

The stream encoder precomputes the bytes every chunk shares, so a text delta costs one small
JSON string encode and a concatenation.
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelport.core.collect import Completion
from modelport.core.errors import ModelportError
from modelport.core.events import (
    Event,
    Logprobs,
    ReasoningDelta,
    Start,
    Stop,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from modelport.core.money import NANO_PER_YUAN
from modelport.core.types import TokenLogprob
from modelport.protocols.openai.errors import error_object

_encode = msgspec.json.encode
DONE = b"data: [DONE]\n\n"


def usage_object(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage, plus OpenRouter's `cost` (CNY here, as a number) when the request was
    billed; the exact amount is the generation's `total_cost` (GET /api/v1/generation)."""
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
    if usage.cost_nano is not None:
        body["cost"] = usage.cost_nano / NANO_PER_YUAN
    if usage.estimated:
        body["estimated"] = True  # counted by the gateway without the model's tokenizer
    return body


def _logprob_entry(entry: TokenLogprob) -> dict[str, Any]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.bytes) if entry.bytes is not None else None,
        "top_logprobs": [
            {"token": token, "logprob": logprob, "bytes": list(raw) if raw is not None else None}
            for token, logprob, raw in entry.top
        ],
    }


def logprobs_object(entries: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    return {"content": [_logprob_entry(entry) for entry in entries], "refusal": None}


def encode_completion(
    completion: Completion, *, completion_id: str, created: int, exclude_reasoning: bool = False
) -> bytes:
    """The non-streaming `chat.completion` body."""
    tool_calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in completion.tool_calls
    ]
    content = completion.text
    if content is None and not tool_calls:
        content = ""
    reasoning = None if exclude_reasoning else completion.reasoning
    message = {
        "role": "assistant",
        "content": content,
        "reasoning": reasoning,
        "reasoning_content": reasoning,
        "refusal": None,
        "tool_calls": tool_calls or None,
    }
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": completion.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": completion.finish_reason,
                "native_finish_reason": completion.native_finish_reason,
                "logprobs": logprobs_object(completion.logprobs),
            }
        ],
        "usage": usage_object(completion.usage),
    }
    return _encode(body)


_TEXT_TAIL = b'},"finish_reason":null}]}\n\n'  # a text delta's end, after its content


class ChunkEncoder:
    """Encodes one response's events as SSE `data:` lines, in order.

    Tool call blocks are numbered 0, 1, … among tool calls (OpenAI's `tool_calls[].index`),
    independent of the canonical block index.
    """

    __slots__ = (
        "_exclude_reasoning",
        "_head",
        "_include_usage",
        "_tool_ordinal",
        "_usage",
        "_usage_head",
    )

    def __init__(
        self,
        *,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool,
        exclude_reasoning: bool = False,
    ) -> None:
        common = (
            b'{"id":'
            + _encode(completion_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + _encode(model)
            + b',"system_fingerprint":null,'
        )
        self._head = b"data: " + common + b'"choices":[{"index":0,"delta":'
        self._usage_head = b"data: " + common + b'"choices":[],"usage":'
        self._include_usage = include_usage
        self._exclude_reasoning = exclude_reasoning
        self._tool_ordinal: dict[int, int] = {}
        self._usage: Usage | None = None

    def _chunk(self, delta: bytes, tail: bytes = b',"finish_reason":null}]}\n\n') -> bytes:
        return self._head + delta + tail

    def encode_batch(self, events: list[Event]) -> bytes:
        """SSE bytes for a batch of events, in order (one write); text on a fast path."""
        head = self._head + b'{"content":'
        parts = []
        for event in events:
            if type(event) is TextDelta:
                parts.append(head + _encode(event.text) + _TEXT_TAIL)
            else:
                parts.append(self.encode(event))
        return b"".join(parts)

    def encode(self, event: Event) -> bytes:
        """SSE bytes for `event` (possibly empty). The final event also emits usage and [DONE]."""
        if isinstance(event, TextDelta):
            return self._chunk(b'{"content":' + _encode(event.text) + b"}")
        if isinstance(event, ReasoningDelta):
            if self._exclude_reasoning:
                return b""
            text = _encode(event.text)
            return self._chunk(b'{"reasoning":' + text + b',"reasoning_content":' + text + b"}")
        if isinstance(event, ToolCallDelta):
            ordinal = self._tool_ordinal[event.index]
            call = {"index": ordinal, "function": {"arguments": event.arguments}}
            return self._chunk(b'{"tool_calls":[' + _encode(call) + b"]}")
        if isinstance(event, ToolCallStart):
            ordinal = self._tool_ordinal[event.index] = len(self._tool_ordinal)
            call = {
                "index": ordinal,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._chunk(b'{"tool_calls":[' + _encode(call) + b"]}")
        if isinstance(event, Start):
            return self._chunk(b'{"role":"assistant","content":""}')
        if isinstance(event, Usage):
            self._usage = event
            return b""
        if isinstance(event, Stop):
            tail = (
                b',"finish_reason":'
                + _encode(event.finish_reason)
                + b',"native_finish_reason":'
                + _encode(event.native_finish_reason)
                + b"}]}\n\n"
            )
            return self._chunk(b"{}", tail) + self._final()
        if isinstance(event, Logprobs):
            entries = _encode(logprobs_object(event.entries))
            return self._chunk(b"{}", b',"logprobs":' + entries + b',"finish_reason":null}]}\n\n')
        return self.encode_error(event.error)

    def encode_error(self, error: ModelportError) -> bytes:
        """A failure after streaming began: a chunk with finish_reason "error" and the error."""
        tail = (
            b',"finish_reason":"error","native_finish_reason":'
            + _encode(error.code)
            + b'}],"error":'
            + _encode(error_object(error))
            + b"}\n\n"
        )
        return self._chunk(b"{}", tail) + self._final()

    def _final(self) -> bytes:
        # Usage the backend never reported is left out rather than invented as zeros.
        if self._include_usage and self._usage is not None:
            return self._usage_head + _encode(usage_object(self._usage)) + b"}\n\n" + DONE
        return DONE
