"""OpenAI's Responses API (`POST /v1/responses`): requests into the canonical ChatRequest, and
answers back as a `response` object or its typed SSE events. A third door over the same
pipeline as chat completions.

A request is read into the chat completions wire form and validated by the same decoder, so
both doors accept the same sampling values; what only this API has (input items, `text.format`,
`reasoning.summary`) is translated first, and a bad item is a 400 naming it
(`input[2].call_id`). Tools of types the platform cannot run (`web_search`, `file_search`, …)
are not offered to the model; `namespace` tools offer their functions. A stored response
(`store`, OpenAI's default) keeps the conversation it continued, so that `previous_response_id`
continues it (http/responses_routes.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from modelport.core.collect import Completion
from modelport.core.errors import InvalidRequest, ModelportError
from modelport.core.events import (
    Error,
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
from modelport.core.types import ChatRequest
from modelport.protocols.openai.decode import StreamSettings, decode_chat_request
from modelport.protocols.openai.errors import error_body
from modelport.protocols.openai.sealed import seal, unseal
from modelport.protocols.validation import decode_json

_encode = msgspec.json.encode
MAX_ITEMS = 10_000
# Request fields read here and echoed in the answer; the rest go to the chat decoder.
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "seed", "frequency_penalty",
             "presence_penalty", "stop", "verbosity")  # fmt: skip


class ResponsesOptions(msgspec.Struct, frozen=True):
    """What the answer repeats of the request, and how it is sent."""

    stream: bool
    model: str
    instructions: str | None = None
    metadata: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    tool_choice: Any = "auto"
    tools: list[Any] = []
    user: str | None = None
    reasoning_effort: str | None = None
    text_format: Any = None
    store: bool = True
    previous_response_id: str | None = None
    # With `include: ["reasoning.encrypted_content"]`: the key reasoning items are sealed with.
    seal_key: bytes | None = None
    reasoning_summary: bool = False  # `reasoning.summary` asked for (auto, concise, detailed)


def _field(value: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind):
        raise InvalidRequest(f"{where} must be a {_type_name(kind)}.", param=where)
    return value


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "string", list: "list", dict: "object", bool: "boolean", int: "integer"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _text_of(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A message's content: a string, or its parts as chat parts (text and images)."""
    if isinstance(content, str):
        return content
    parts = _field(content, where, list, where)
    out: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        at = f"{where}[{index}]"
        _field(part, at, dict, at)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            out.append(
                {"type": "text", "text": _field(part.get("text"), at + ".text", str, at + ".text")}
            )
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InvalidRequest(
                    f"{at}.image_url must be a URL string.", param=at + ".image_url"
                )
            out.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "refusal":
            out.append({"type": "text", "text": str(part.get("refusal", ""))})
        else:
            raise InvalidRequest(f"{at}.type {kind!r} is not supported here.", param=at + ".type")
    return out


def _messages(body: dict[str, Any], seal_key: bytes | None = None) -> list[dict[str, Any]]:
    """The chat messages of `input` (sealed reasoning opened with `seal_key`)."""
    messages: list[dict[str, Any]] = []
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    items = _field(items, "input", list, "input")
    if not items or len(items) > MAX_ITEMS:
        raise InvalidRequest(f"input must hold 1 to {MAX_ITEMS} items.", param="input")
    reasoning: list[str] = []  # a reasoning item goes with the assistant turn after it
    for index, item in enumerate(items):
        at = f"input[{index}]"
        _field(item, at, dict, at)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(
                    f"{at}.role must be user, assistant, system or developer.", param=at + ".role"
                )
            message: dict[str, Any] = {
                "role": role,
                "content": _text_of(item.get("content"), at + ".content"),
            }
            if role == "assistant" and reasoning:
                message["reasoning_content"] = "".join(reasoning)
                reasoning = []
            messages.append(message)
        elif kind == "function_call":
            call_id = _field(item.get("call_id"), at + ".call_id", str, at + ".call_id")
            name = _field(item.get("name"), at + ".name", str, at + ".name")
            arguments = _field(item.get("arguments", ""), at + ".arguments", str, at + ".arguments")
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                turn: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
                if reasoning:
                    turn["reasoning_content"] = "".join(reasoning)
                    reasoning = []
                messages.append(turn)
        elif kind == "function_call_output":
            call_id = _field(item.get("call_id"), at + ".call_id", str, at + ".call_id")
            output = item.get("output", "")
            if not isinstance(output, str):
                output = _encode(output).decode()
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            sealed = item.get("encrypted_content")
            if sealed is not None:
                opened = unseal(sealed, seal_key) if seal_key is not None else None
                if opened is None:
                    raise InvalidRequest(
                        f"{at}.encrypted_content was not made by this server, or was altered.",
                        param=at + ".encrypted_content",
                    )
                reasoning.append(opened)
                continue
            for part in item.get("content") or item.get("summary") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    reasoning.append(part["text"])
        elif kind == "item_reference":
            raise InvalidRequest(
                "item references need stored responses, which are not kept yet.", param=at
            )
        else:
            raise InvalidRequest(f"{at}.type {kind!r} is not supported.", param=at + ".type")
    return messages


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Function tools as chat tools; a namespace offers its functions; hosted tools (web
    search, file search, code interpreter, …) cannot run here and are not offered."""
    tools = body.get("tools")
    if tools is None:
        return []
    out: list[dict[str, Any]] = []

    def function(tool: dict[str, Any], at: str) -> None:
        name = _field(tool.get("name"), at + ".name", str, at + ".name")
        spec: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                spec[key] = tool[key]
        out.append({"type": "function", "function": spec})

    for index, tool in enumerate(_field(tools, "tools", list, "tools")):
        at = f"tools[{index}]"
        _field(tool, at, dict, at)
        if tool.get("type") == "function":
            function(tool, at)
        elif tool.get("type") == "namespace":
            for inner, member in enumerate(tool.get("tools") or tool.get("functions") or []):
                if isinstance(member, dict) and member.get("type", "function") == "function":
                    function(member, f"{at}.tools[{inner}]")
    return out


def read_request(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object (InvalidRequest otherwise)."""
    raw = decode_json(body)
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    previous = raw.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or len(previous) > 128):
        raise InvalidRequest(
            "previous_response_id must be a response id.", param="previous_response_id"
        )
    return raw


def output_as_messages(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored response's output as the assistant turn it was (for previous_response_id)."""
    turn: dict[str, Any] = {"role": "assistant", "content": None}
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or []:
        kind = item.get("type")
        if kind == "message":
            texts += [part.get("text", "") for part in item.get("content") or []]
        elif kind == "reasoning":
            thoughts += [part.get("text", "") for part in item.get("content") or []]
        elif kind == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments", "")}
            calls.append({"id": item.get("call_id"), "type": "function", "function": function})
    if texts:
        turn["content"] = "".join(texts)
    if thoughts:
        turn["reasoning_content"] = "".join(thoughts)
    if calls:
        turn["tool_calls"] = calls
    return [turn] if texts or calls else []


def decode_responses_request(
    raw: dict[str, Any] | bytes,
    history: list[dict[str, Any]] | None = None,
    seal_key: bytes | None = None,
) -> tuple[ChatRequest, ResponsesOptions, list[dict[str, Any]]]:
    """Validate a Responses API body; raise InvalidRequest naming the field. `history`: the
    chat messages of the stored response `previous_response_id` names (with its answer).
    Returns the request, the options and the conversation to store (the history and this
    input, without the instructions: a next response does not inherit them)."""
    if isinstance(raw, bytes):
        raw = read_request(raw)
    model = raw.get("model")
    conversation = [*(history or []), *_messages(raw, seal_key)]
    messages = list(conversation)
    instructions = raw.get("instructions")
    if instructions is not None:
        text = _field(instructions, "instructions", str, "instructions")
        messages.insert(0, {"role": "system", "content": text})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    tools = _tools(raw)
    if tools:
        chat["tools"] = tools
        choice = raw.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "function":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif choice in ("none", "auto", "required"):
            chat["tool_choice"] = choice
    if raw.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = raw["parallel_tool_calls"]
    if raw.get("max_output_tokens") is not None:
        chat["max_tokens"] = raw["max_output_tokens"]
    for name in _SAMPLING:
        if raw.get(name) is not None:
            chat[name] = raw[name]
    reasoning = raw.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    text = raw.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
            chat["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif fmt.get("type") == "json_object":
            chat["response_format"] = {"type": "json_object"}
    request, _settings = decode_chat_request(_encode(chat))
    options = ResponsesOptions(
        stream=bool(raw.get("stream")),
        model=request.model,
        instructions=raw.get("instructions"),
        metadata=raw.get("metadata") if isinstance(raw.get("metadata"), dict) else None,
        temperature=raw.get("temperature"),
        top_p=raw.get("top_p"),
        max_output_tokens=raw.get("max_output_tokens"),
        parallel_tool_calls=raw.get("parallel_tool_calls") is not False,
        tool_choice=raw.get("tool_choice", "auto"),
        tools=raw.get("tools") or [],
        user=raw.get("user") if isinstance(raw.get("user"), str) else None,
        reasoning_effort=(reasoning or {}).get("effort") if isinstance(reasoning, dict) else None,
        text_format=fmt,
        store=raw.get("store") is not False,
        previous_response_id=raw.get("previous_response_id"),
        seal_key=seal_key if _includes_sealed(raw) else None,
        reasoning_summary=isinstance(reasoning, dict)
        and reasoning.get("summary") in ("auto", "concise", "detailed"),
    )
    return request, options, conversation


def _includes_sealed(raw: dict[str, Any]) -> bool:
    include = raw.get("include")
    return isinstance(include, list) and "reasoning.encrypted_content" in include


# ---------------------------------------------------------------------------- answers


def usage_object(usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }
    if usage.cost_nano is not None:
        body["cost"] = usage.cost_nano / 1_000_000_000
    if usage.estimated:
        body["estimated"] = True
    return body


def _frame(response_id: str, created: int, options: ResponsesOptions) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "model": options.model,
        "instructions": options.instructions,
        "metadata": options.metadata or {},
        "parallel_tool_calls": options.parallel_tool_calls,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "max_output_tokens": options.max_output_tokens,
        "tool_choice": options.tool_choice,
        "tools": options.tools,
        "text": {"format": options.text_format or {"type": "text"}},
        "reasoning": {
            "effort": options.reasoning_effort,
            "summary": "auto" if options.reasoning_summary else None,
        },
        "store": options.store,
        "user": options.user,
        "previous_response_id": options.previous_response_id,
        "error": None,
        "incomplete_details": None,
    }


def _status(finish_reason: str) -> tuple[str, dict[str, str] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _reasoning_item(
    item_id: str, text: str, seal_key: bytes | None = None, summary: bool = False
) -> dict[str, Any]:
    """A reasoning item. Qwen3 models write no separate summary: asked for one
    (`reasoning.summary`), the thinking itself is the summary, as other gateways give it."""
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if summary else [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": "completed",
    }
    if seal_key is not None:
        item["encrypted_content"] = seal(text, seal_key)
    return item


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _call_item(item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def encode_response(
    completion: Completion, *, response_id: str, created: int, options: ResponsesOptions
) -> bytes:
    """The whole `response` object of a finished answer."""
    base = response_id.removeprefix("resp_")
    output: list[dict[str, Any]] = []
    if completion.reasoning:
        output.append(
            _reasoning_item(
                f"rs_{base}", completion.reasoning, options.seal_key, options.reasoning_summary
            )
        )
    if completion.text:
        output.append(_message_item(f"msg_{base}", completion.text))
    for index, call in enumerate(completion.tool_calls):
        output.append(_call_item(f"fc_{base}_{index}", call.id, call.name, call.arguments))
    status, details = _status(completion.finish_reason)
    body = _frame(response_id, created, options)
    body.update(
        status=status,
        incomplete_details=details,
        output=output,
        usage=usage_object(completion.usage),
    )
    return _encode(body)


class ResponseStreamEncoder:
    """A response's canonical events as the Responses API's typed SSE events, each with its
    `sequence_number`, in the documented order: created, in_progress, then per output item
    added → (content part added) → deltas → done events → item done, and at the end
    completed (or incomplete, or failed)."""

    def __init__(self, *, response_id: str, created: int, options: ResponsesOptions) -> None:
        self._id = response_id
        self._base = response_id.removeprefix("resp_")
        self._created = created
        self._options = options
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._text: list[str] = []
        self._usage: Usage | None = None
        self._final: dict[str, Any] | None = None

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        body = {"type": kind, "sequence_number": self._sequence, **payload}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encode(body) + b"\n\n"

    @property
    def final(self) -> dict[str, Any] | None:
        """The finished response (after the last event), for storing."""
        return self._final

    def _response(self, status: str, details: dict[str, str] | None = None) -> dict[str, Any]:
        body = _frame(self._id, self._created, self._options)
        body.update(status=status, incomplete_details=details, output=list(self._output))
        body["usage"] = usage_object(self._usage) if self._usage is not None else None
        return body

    def encode_batch(self, events: Sequence[Event]) -> bytes:
        return b"".join([self.encode(event) for event in events])

    def encode(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            return self._delta("message", event.text)
        if isinstance(event, ReasoningDelta):
            return self._delta("reasoning", event.text)
        if isinstance(event, ToolCallStart):
            out = self._close()
            index = len(self._output)
            item = _call_item(f"fc_{self._base}_{index}", event.id, event.name, "")
            item["status"] = "in_progress"
            self._open = item
            self._text = []
            return out + self._event(
                "response.output_item.added", {"output_index": index, "item": item}
            )
        if isinstance(event, ToolCallDelta):
            if self._open is None or self._open["type"] != "function_call":
                return b""
            self._text.append(event.arguments)
            return self._event(
                "response.function_call_arguments.delta",
                {
                    "item_id": self._open["id"],
                    "output_index": len(self._output),
                    "delta": event.arguments,
                },
            )
        if isinstance(event, Start):
            return self._event(
                "response.created", {"response": self._response("in_progress")}
            ) + self._event("response.in_progress", {"response": self._response("in_progress")})
        if isinstance(event, Usage):
            self._usage = event
            return b""
        if isinstance(event, Stop):
            out = self._close()
            status, details = _status(event.finish_reason)
            kind = "response.completed" if status == "completed" else "response.incomplete"
            self._final = self._response(status, details)
            return out + self._event(kind, {"response": self._final})
        if isinstance(event, Logprobs):
            return b""
        assert isinstance(event, Error)
        return self.encode_error(event.error)

    def encode_error(self, error: ModelportError) -> bytes:
        """A failure after the stream began: `error`, then `response.failed`."""
        detail = msgspec.json.decode(error_body(error))["error"]
        failed = self._response("failed")
        failed["error"] = {
            "code": detail.get("code") or "server_error",
            "message": detail["message"],
        }
        return self._event(
            "error",
            {
                "code": detail.get("code"),
                "message": detail["message"],
                "param": detail.get("param"),
            },
        ) + self._event("response.failed", {"response": failed})

    def _delta(self, kind: str, text: str) -> bytes:
        if not text:
            return b""
        out = b""
        if self._open is None or self._open["type"] != kind:
            out = self._close()
            index = len(self._output)
            if kind == "message":
                item = _message_item(f"msg_{self._base}", "", "in_progress")
                item["content"] = []
                self._open = item
                out += self._event(
                    "response.output_item.added", {"output_index": index, "item": item}
                )
                out += self._event(
                    "response.content_part.added",
                    {
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    },
                )
            else:
                item = {
                    "id": f"rs_{self._base}",
                    "type": "reasoning",
                    "summary": [],
                    "status": "in_progress",
                }
                self._open = item
                out += self._event(
                    "response.output_item.added", {"output_index": index, "item": item}
                )
                if self._options.reasoning_summary:
                    out += self._event(
                        "response.reasoning_summary_part.added",
                        {
                            "item_id": item["id"],
                            "output_index": index,
                            "summary_index": 0,
                            "part": {"type": "summary_text", "text": ""},
                        },
                    )
            self._text = []
        self._text.append(text)
        index = len(self._output)
        name = (
            "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        )
        payload: dict[str, Any] = {
            "item_id": self._open["id"],
            "output_index": index,
            "content_index": 0,
            "delta": text,
        }
        if kind == "message":
            payload["logprobs"] = []
        out += self._event(name, payload)
        if kind == "reasoning" and self._options.reasoning_summary:
            out += self._event(
                "response.reasoning_summary_text.delta",
                {
                    "item_id": self._open["id"],
                    "output_index": index,
                    "summary_index": 0,
                    "delta": text,
                },
            )
        return out

    def _close(self) -> bytes:
        """The done events of the item being streamed, if any."""
        item = self._open
        if item is None:
            return b""
        self._open = None
        index = len(self._output)
        text = "".join(self._text)
        out = b""
        if item["type"] == "message":
            done = _message_item(item["id"], text)
            out += self._event(
                "response.output_text.done",
                {
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                },
            )
            out += self._event(
                "response.content_part.done",
                {
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "part": done["content"][0],
                },
            )
        elif item["type"] == "reasoning":
            done = _reasoning_item(
                item["id"], text, self._options.seal_key, self._options.reasoning_summary
            )
            out += self._event(
                "response.reasoning_text.done",
                {"item_id": item["id"], "output_index": index, "content_index": 0, "text": text},
            )
            if self._options.reasoning_summary:
                where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
                out += self._event("response.reasoning_summary_text.done", {**where, "text": text})
                out += self._event(
                    "response.reasoning_summary_part.done",
                    {**where, "part": {"type": "summary_text", "text": text}},
                )
        else:
            done = _call_item(item["id"], item["call_id"], item["name"], text)
            out += self._event(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": index, "arguments": text},
            )
        self._output.append(done)
        return out + self._event("response.output_item.done", {"output_index": index, "item": done})


def new_created() -> int:
    return int(time.time())


__all__ = [
    "ResponseStreamEncoder",
    "ResponsesOptions",
    "StreamSettings",
    "decode_responses_request",
    "encode_response",
]
