"""Tool calling for models whose chat template knows no tools (`tool_format = "generic"`).

The engine does what a tool-aware template would do, in the messages it hands to a plain one:

- the offered tools go into the system message (the client's own first, then ours), as one
  JSON object per line inside `<tools>…</tools>`, with how to call them;
- an earlier assistant turn's calls become its text, each as
  `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`, the format the model is told
  to write (Hermes' and Qwen3's, so `parsers/qwen3_json.py` reads the answer);
- tool results become a user turn of `<tool_response>…</tool_response>` blocks, one per
  result, in order (several consecutive results share one turn).

What the model writes is constrained by a grammar (`backends/llamacpp/output_grammar.py`):
with `tool_choice` "auto", either calls in exactly that format or text that contains no
`<tool_call>`; with "required" or a named function, calls only. So a call on the generic
format is always well-formed JSON with arguments shaped by the tool's schema.

Pure: dicts in the shape chat templates receive (`openai_messages(..., for_template=True)`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

TOOLS_PREAMBLE = (
    "You can call functions (tools) to help with the user's request. "
    "The functions you can call, as JSON schemas:\n<tools>\n"
)
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n"
    "To call a function, answer with nothing but one block per call, in this format:\n"
    "<tool_call>\n"
    '{"name": "<function name>", "arguments": {<the arguments as a JSON object>}}\n'
    "</tool_call>\n"
    "The results come back to you inside <tool_response></tool_response>. "
    "When no function is needed, answer the user directly."
)


def tools_block(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system text that offers `tools` (OpenAI-style `{"type": "function", …}` dicts)."""
    lines = [json.dumps(tool, ensure_ascii=False) for tool in tools]
    return TOOLS_PREAMBLE + "\n".join(lines) + TOOLS_INSTRUCTIONS


def call_text(name: str, arguments: Any) -> str:
    """One call as the model is told to write it (and as the grammar writes it)."""
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: shown as the string it is
            arguments = json.loads(arguments)
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def generic_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """`messages` rewritten for a template without tools: the tools offered in the system
    message (none when `tools` is None: "none" hides them), calls and results as text."""
    out: list[dict[str, Any]] = []
    results: list[str] = []

    def flush_results() -> None:
        if results:
            out.append({"role": "user", "content": "\n".join(results)})
            results.clear()

    for message in messages:
        role = message.get("role")
        if role == "tool":
            results.append(f"<tool_response>\n{_text(message.get('content'))}\n</tool_response>")
            continue
        flush_results()
        rewritten = dict(message)
        calls = rewritten.pop("tool_calls", None)
        if role == "assistant" and calls:
            texts = [_text(rewritten.get("content"))] if rewritten.get("content") else []
            for call in calls:
                function = call.get("function") or {}
                texts.append(call_text(str(function.get("name", "")), function.get("arguments")))
            rewritten["content"] = "\n".join(texts)
        out.append(rewritten)
    flush_results()
    if tools:
        block = tools_block(tools)
        if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
            first = dict(out[0])
            first["content"] = f"{first['content']}\n\n{block}" if first["content"] else block
            out[0] = first
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text, in order
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return json.dumps(content, ensure_ascii=False)
