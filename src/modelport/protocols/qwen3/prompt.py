"""Qwen3's chat format, rendered in Python: the prompt an engine's raw-text endpoint needs.

The output is byte for byte what Qwen3's official chat template (tests/data/qwen3.jinja)
renders for the same OpenAI-style dicts, as the local engine passes them to templates
(`openai_messages(..., for_template=True)`, `openai_tool(tool, with_strict=False)`), so a
conversation reaches a Qwen3 model the same way whether we or the engine apply the template.

The format is ChatML with Qwen3's additions::

    <|im_start|>system
    {system text}

    # Tools …<tools>
    {one tool as JSON per line}
    </tools> …<|im_end|>
    <|im_start|>user
    {text}<|im_end|>
    <|im_start|>assistant
    <think>
    {reasoning}
    </think>

    {answer}
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "北京"}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    {result}
    </tool_response>
    <tool_response>
    {next result}
    </tool_response><|im_end|>
    <|im_start|>assistant

- The system turn appears only when there is a system message first or tools are offered;
  the tools block follows the system text. Later system messages are ordinary turns.
- Reasoning is kept only for the assistant turns after the last real user query (a user
  message that is not itself wrapped in `<tool_response>` tags): the steps of the agentic
  turn in progress. Earlier turns keep their answers only. Among the kept turns, the last
  message, when it is an assistant's, always gets a think block (empty if it has no reasoning);
  the others get one only when they have reasoning.
- Reasoning comes from `reasoning_content`; without it, an answer that contains `</think>`
  is split there, as Qwen3 writes its output.
- Consecutive tool results share one user turn.
- `enable_thinking=False` (hybrid Qwen3) ends the prompt with an empty think block, which is
  how the model is told not to think.

Content must be text (Qwen3's text models take no images). None, the OpenAI shape beside tool
calls, counts as empty text; the template would fail on it (or print "None" for a tool result).
Pure: imports only the standard library.
"""

from __future__ import annotations

import json
from typing import Any

_START = "<|im_start|>"
_END = "<|im_end|>\n"
_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_EMPTY_THINK = "<think>\n\n</think>\n\n"
_OPEN_THINK = "<think>\n"


def render_prompt(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    enable_thinking: bool | None = None,
    add_generation_prompt: bool = True,
    preopen_think: bool = False,
) -> str:
    """The Qwen3 prompt for `messages`, offering `tools`.

    `enable_thinking=False` closes an empty think block after the generation prompt (hybrid
    Qwen3 then answers directly); True and None leave the model to decide. `preopen_think`
    renders for Qwen3-Thinking-2507, whose template ends the generation prompt with
    `<think>\\n`: the model's output starts inside its reasoning. That template is otherwise
    identical for text messages, to our understanding (it also tolerates non-text content,
    which this function refuses); it has no switch, so `enable_thinking=False` with it is an
    error. `add_generation_prompt=False` renders the conversation alone.

    Raises ValueError for an empty conversation or content that is not text.
    """
    if not messages:
        raise ValueError("a Qwen3 prompt needs at least one message")
    if preopen_think and enable_thinking is False:
        raise ValueError("a prompt that opens the think block cannot turn thinking off")
    out = [_system_turn(messages[0], tools)]
    last_query = _last_query_index(messages)
    last = len(messages) - 1
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "user" or (role == "system" and index > 0):
            out.append(f"{_START}{role}\n{_text(message)}{_END}")
        elif role == "assistant":
            keep_reasoning = index > last_query
            out.append(_assistant_turn(message, keep_reasoning, is_last=index == last))
        elif role == "tool":
            if index == 0 or messages[index - 1]["role"] != "tool":
                out.append(f"{_START}user")
            out.append(f"\n<tool_response>\n{_text(message)}\n</tool_response>")
            if index == last or messages[index + 1]["role"] != "tool":
                out.append(_END)
        # Anything else (the leading system message, rendered above; unknown roles) adds nothing.
    if add_generation_prompt:
        out.append(f"{_START}assistant\n")
        if preopen_think:
            out.append(_OPEN_THINK)
        elif enable_thinking is False:
            out.append(_EMPTY_THINK)
    return "".join(out)


def _system_turn(first: dict[str, Any], tools: list[dict[str, Any]] | None) -> str:
    system = _text(first) if first["role"] == "system" else None
    if tools:
        preface = "" if system is None else system + "\n\n"
        listed = "".join("\n" + _json(tool) for tool in tools)
        return f"{_START}system\n{preface}{_TOOLS_INTRO}{listed}{_TOOLS_OUTRO}{_END}"
    return "" if system is None else f"{_START}system\n{system}{_END}"


def _last_query_index(messages: list[dict[str, Any]]) -> int:
    """The index of the last user message that is a query, not tool output the client
    wrapped in `<tool_response>` tags itself; the last index when there is none."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message["role"] == "user":
            text = _text(message)
            if not (text.startswith("<tool_response>") and text.endswith("</tool_response>")):
                return index
    return len(messages) - 1


def _assistant_turn(message: dict[str, Any], keep_reasoning: bool, *, is_last: bool) -> str:
    answer = _text(message)
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        reasoning, answer = _split_think(answer) if "</think>" in answer else ("", answer)
    if keep_reasoning and (is_last or reasoning):
        thought = reasoning.strip("\n")
        body = f"<think>\n{thought}\n</think>\n\n" + answer.lstrip("\n")
    else:
        body = answer
    calls = [_tool_call(call) for call in message.get("tool_calls") or ()]
    if calls:
        # As in the template, the newline before the first call depends on the answer as
        # written, not on the leading newlines the think block above strips from it.
        body += ("\n" if answer else "") + "\n".join(calls)
    return f"{_START}assistant\n{body}{_END}"


def _split_think(text: str) -> tuple[str, str]:
    """(reasoning, answer) of output written as `<think>…</think>answer`: the reasoning is what
    precedes the first `</think>` (after the last `<think>` there), the answer what follows the
    last one; the newlines next to the tags go."""
    before_close = text.partition("</think>")[0].rstrip("\n")
    reasoning = before_close.rpartition("<think>")[2].lstrip("\n")
    answer = text.rpartition("</think>")[2].lstrip("\n")
    return reasoning, answer


def _tool_call(call: dict[str, Any]) -> str:
    # OpenAI nests the call under "function"; a bare {"name", "arguments"} is accepted too.
    function = call.get("function") or call
    arguments = function["arguments"]
    if not isinstance(arguments, str):
        arguments = _json(arguments)
    name = function["name"]
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    raise ValueError(
        f"Qwen3 prompts take text content only; a {message['role']} message has "
        f"{type(content).__name__} content"
    )


def _json(value: Any) -> str:
    # What the templates' `tojson` writes (transformers' and ours): no ASCII escaping,
    # Python's default separators, keys in their given order.
    return json.dumps(value, ensure_ascii=False)
