"""The client side of the OpenAI Chat Completions format, for calling upstreams. Pure: no I/O.

- `build_request_body`: a canonical `ChatRequest` -> the upstream's JSON body (always a stream
  that ends with a usage chunk), shaped by the dialect table in `dialects.py`;
- `SSEParser`: an incremental server-sent-events parser (bytes in, data payloads out);
- `StreamTranslator`: upstream chunks -> canonical events, numbering content blocks;
- `error_for_status`: an upstream's error answer -> a `core.errors` type (errors inside a
  stream are raised by `StreamTranslator.feed`).

The HTTP itself lives in `backends/openai_compat.py`. Imports only core and msgspec.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import msgspec

from modelport.core.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelportError,
    Overloaded,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
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
from modelport.core.types import (
    ChatRequest,
    FinishReason,
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCallPart,
    ToolResultPart,
)
from modelport.protocols.openai.dialects import DialectRules

# --------------------------------------------------------------------------- request body


def build_request_body(
    request: ChatRequest, *, model: str, rules: DialectRules, context_length: int | None = None
) -> dict[str, Any]:
    """The JSON body for POST /chat/completions. Always streamed, always asking for usage.

    Only fields the request sets are sent (an explicit 0 is set); `extensions` fill in keys the
    gateway did not set itself and never override them.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [wire for message in request.messages for wire in _messages(message, rules)],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
        choice = request.tool_choice
        if choice.mode == "named":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = choice.mode
        body["parallel_tool_calls"] = request.parallel_tool_calls
    _sampling(request, rules, body)
    if request.max_output_tokens is not None:
        limit = request.max_output_tokens
        body["max_tokens"] = min(limit, context_length) if context_length else limit
    response_format = request.response_format
    if response_format.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif response_format.type == "json_schema":
        schema: dict[str, Any] = {"name": response_format.name or "response"}
        if response_format.schema is not None:
            schema["schema"] = response_format.schema
        schema["strict"] = response_format.strict
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs is not None:
            body["top_logprobs"] = request.top_logprobs
    reasoning = request.reasoning
    if reasoning.effort is not None:
        body["reasoning_effort"] = reasoning.effort
    if request.verbosity is not None:
        body["verbosity"] = request.verbosity
    if rules.chat_template_kwargs:
        template_kwargs = dict(request.chat_template_kwargs or {})
        enabled = reasoning.enabled
        if enabled is None and reasoning.effort == "none":
            enabled = False
        if rules.thinking_switch and enabled is not None:
            template_kwargs.setdefault("enable_thinking", enabled)
        if template_kwargs:
            body["chat_template_kwargs"] = template_kwargs
    for key, value in request.extensions.items():
        body.setdefault(key, value)
    return body


def encode_request_body(body: dict[str, Any]) -> bytes:
    return msgspec.json.encode(body)


def _sampling(request: ChatRequest, rules: DialectRules, body: dict[str, Any]) -> None:
    sampling = request.sampling
    if sampling.temperature is not None:
        body["temperature"] = sampling.temperature
    if sampling.top_p is not None:
        body["top_p"] = sampling.top_p
    if sampling.frequency_penalty is not None:
        body["frequency_penalty"] = sampling.frequency_penalty
    if sampling.presence_penalty is not None:
        body["presence_penalty"] = sampling.presence_penalty
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    for name, wire_name in rules.sampling_names.items():
        value = getattr(sampling, name)
        if value is not None:
            body[wire_name] = value
    if sampling.logit_bias:
        # JSON object keys are strings; the OpenAI API documents token ids as string keys.
        body["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias.items()}
    if sampling.stop:
        body["stop"] = list(sampling.stop)


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    # Upstreams validate `parameters` as an object schema; an empty one means "no arguments".
    function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
    if tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _messages(message: Message, rules: DialectRules) -> Iterator[dict[str, Any]]:
    """One canonical message -> one or more wire messages.

    Tool results become `tool` messages of their own, placed first: the OpenAI format wants them
    right after the assistant turn that made the calls (an Anthropic-style user turn carries the
    results and the user's next words together).
    """
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    has_image = False
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            yield {"role": "tool", "tool_call_id": part.tool_call_id, "content": part.content}
        elif isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            has_image = True
        elif isinstance(part, ReasoningPart):
            reasoning.append(part.text)
        elif isinstance(part, ToolCallPart):
            calls.append(
                {
                    "id": part.id,
                    "type": "function",
                    "function": {"name": part.name, "arguments": part.arguments},
                }
            )
    if message.role == "tool":
        return
    wire: dict[str, Any] = {"role": message.role}
    if has_image:
        wire["content"] = [_content_part(part) for part in message.parts if _is_content(part)]
    elif texts:
        # vLLM and SGLang join text parts with newlines before templating; do it here so that
        # upstreams that only take a string see the same prompt.
        wire["content"] = "\n".join(texts)
    elif calls:
        wire["content"] = None
    elif not reasoning and any(isinstance(part, ToolResultPart) for part in message.parts):
        return  # the turn carried only tool results
    else:
        wire["content"] = ""
    if message.name is not None:
        wire["name"] = message.name
    if reasoning and rules.reasoning_field is not None and message.role == "assistant":
        wire[rules.reasoning_field] = "".join(reasoning)
    if calls:
        wire["tool_calls"] = calls
    yield wire


def _is_content(part: object) -> bool:
    return isinstance(part, TextPart | ImagePart)


def _content_part(part: object) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    assert isinstance(part, ImagePart)
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


# --------------------------------------------------------------------------- SSE

MAX_SSE_LINE = 16 * 1024 * 1024  # an upstream line longer than this is a broken upstream

SSEEvent = tuple[str | None, bytes]  # (event name or None, data payload)


class SSEParser:
    """Incremental server-sent-events parser: feed bytes as they arrive, get complete events.

    Lines end in LF or CRLF; `data:` lines of one event are joined with LF; comment lines
    (`: keepalive`) and `id:`/`retry:` fields are skipped. `[DONE]` comes out as a payload like
    any other. Feeding a stream in any split gives the same events as feeding it whole.
    """

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._buffer:
            chunk = self._buffer + chunk
        lines = chunk.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_SSE_LINE:
            raise UpstreamError("upstream sent a stream line longer than 16 MiB")
        out: list[SSEEvent] = []
        for line in lines:
            self._line(line, out)
        return out

    def close(self) -> list[SSEEvent]:
        """End of input: an event not followed by a blank line still counts."""
        out: list[SSEEvent] = []
        if self._buffer:
            self._line(self._buffer, out)
            self._buffer = b""
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                out.append((self._event, data))
                self._data = []
            self._event = None
            return
        if line[0] == 0x3A:  # ":" starts a comment (keepalives)
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")


# --------------------------------------------------------------------------- chunks


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
    logprobs: _ChoiceLogprobs | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
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
                raise _error(None, _clip(data), None, self._upstream, self._model, None) from None
            raise UpstreamError(
                f"upstream sent an unreadable stream chunk ({exc}): {_clip(data)}"
            ) from None
        if chunk.error is not None or chunk.object == "error" or event == "error":
            message, code = _chunk_error(chunk)
            raise _error(None, message, code, self._upstream, self._model, None)
        out: list[Event] = []
        if chunk.choices:
            for choice in chunk.choices:
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
        out.append(Stop(reason, self._native))
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
        if choice.logprobs is not None and choice.logprobs.content:
            entries = tuple(_token_logprob(entry) for entry in choice.logprobs.content)
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


def _usage(usage: _Usage) -> Usage:
    completion = usage.completion_tokens or 0
    reasoning = 0
    if usage.completion_tokens_details is not None:
        reasoning = min(usage.completion_tokens_details.reasoning_tokens or 0, completion)
    cached = 0
    if usage.prompt_tokens_details is not None:
        cached = usage.prompt_tokens_details.cached_tokens or 0
    return Usage(
        prompt_tokens=usage.prompt_tokens or 0,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        cached_tokens=cached,
    )


# --------------------------------------------------------------------------- errors

# Wordings upstreams use for a prompt that does not fit: vLLM/OpenAI ("maximum context length"),
# llama.cpp ("exceeds the available context size"), SGLang ("exceeds the maximum allowed
# length"), Anthropic-style ("prompt is too long").
_CONTEXT_WORDING = re.compile(
    r"context[ _](length|window|size)|prompt is too long|too many tokens"
    r"|exceeds? the (maximum|max)\b.*\blength|exceed_context",
    re.IGNORECASE,
)


def error_for_status(
    status: int,
    body: bytes,
    *,
    upstream: str,
    model: str,
    retry_after: str | None = None,
    now: float | None = None,
) -> ModelportError:
    """The `core.errors` type for an upstream's non-2xx answer (`body` is its raw body)."""
    detail = error_detail(body) or f"HTTP {status} with no message"
    return _error(status, detail, None, upstream, model, parse_retry_after(retry_after, now))


def error_detail(body: bytes) -> str | None:
    """The human message inside an upstream error body, in any of the usual shapes."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return _clip(body)
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for candidate in (error, value.get("message"), value.get("detail")):
            if isinstance(candidate, str) and candidate:
                return candidate
        detail = value.get("detail")
        if isinstance(detail, list) and detail:  # FastAPI validation errors
            return _clip(msgspec.json.encode(detail))
    return _clip(body)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date when `now` is given."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    if now is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


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


def _error(
    status: int | None,
    detail: str,
    code: int | str | None,
    upstream: str,
    model: str,
    retry_after: float | None,
) -> ModelportError:
    if status is None:
        # Inside a stream: an HTTP-like numeric code, or a code word.
        if isinstance(code, int) and 400 <= code <= 599:
            status = code
        elif isinstance(code, str) and code.isdigit():
            status = int(code)
        elif code == "context_length_exceeded" or _CONTEXT_WORDING.search(detail):
            return ContextLengthExceeded(detail)
        else:
            where = f"upstream {upstream}" if upstream else "upstream"
            return UpstreamError(f"{where} reported an error: {detail}")
    where = f"upstream {upstream}" if upstream else "upstream"
    if status in (400, 413, 422):
        if _CONTEXT_WORDING.search(detail):
            return ContextLengthExceeded(detail)
        return InvalidRequest(detail)
    if status in (401, 403):
        return UpstreamError(
            f"{where} rejected the gateway's credentials (HTTP {status}: {detail}); "
            "check the api_key configured for this backend"
        )
    if status == 404:
        named = f" model {model!r}" if model else " the model"
        return UpstreamError(f"{where} does not serve{named} (HTTP 404: {detail})")
    if status in (408, 504):
        return UpstreamTimeout(f"{where} timed out (HTTP {status}: {detail})")
    if status == 429:
        return RateLimited(f"{where} is rate limiting: {detail}", retry_after=retry_after)
    if status == 503:
        return Overloaded(f"{where} is overloaded: {detail}", retry_after=retry_after)
    return UpstreamError(f"{where} failed with HTTP {status}: {detail}")


def _clip(data: bytes, limit: int = 500) -> str:
    text = data[:limit].decode("utf-8", "replace").strip()
    return text + "…" if len(data) > limit else text
