"""Exact token counts for an OpenAI-compatible upstream's model, without generating: the
`TokenCounter` ability of `openai_compat` backends (`backends/base.py`). The metering stage
asks when an upstream reported no usage, or usage it does not believe.

The sources, tried in this order; the first that can count answers:

1. Qwen3 models (a card with thinking or Qwen3 tool calls): the prompt rendered by
   `protocols/qwen3/prompt.py`, counted with Qwen3's tokenizer (`tokenizers/qwen3.py`).
   In-process.
2. The backend's `tokenizer` (a Hugging Face tokenizer.json, `tokenizers/hf.py`), with the
   chat template from the backend's `chat_template` or the files beside the tokenizer.json
   (`backends/chat_template.py` renders it). In-process.
3. The engine's own endpoints (`engine_tokenize.py`), where its dialect has them: a network
   round trip, never taken with `local_only`. For a prompt, llama.cpp's server renders its
   template itself; llama-cpp-python's has no template endpoint, so its prompt is counted
   only with a configured `chat_template`.

A source that cannot count exactly (images in the prompt, a template that needs a special
token's text nobody gave) gives None, and so does a failing one: the caller estimates.
Counting never raises. Text shorter than `INLINE_CHARS` is counted on the event loop (a few
microseconds per hundred characters); longer text in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelport.backends.chat_template import ChatTemplate, template_tools
from modelport.backends.engine_tokenize import EngineTokenizer
from modelport.core.catalog import ConfigError, ModelCard, OpenAICompatBackend
from modelport.core.errors import InvalidRequest
from modelport.core.types import ChatRequest, ImagePart
from modelport.protocols.openai.dialects import DialectRules
from modelport.protocols.openai.messages import openai_messages, openai_tool
from modelport.protocols.openai.upstream_request import build_request_body
from modelport.protocols.qwen3.prompt import render_prompt
from modelport.tokenizers.hf import HFTokenizer, read_tokenizer_config
from modelport.tokenizers.qwen3 import Qwen3Tokenizer, qwen3_tokenizer

log = logging.getLogger(__name__)

# Below this many characters a count runs inline; above, in a thread (tiktoken and tokenizers
# take about 1 µs per character: 8,000 characters hold the loop for a few milliseconds).
INLINE_CHARS = 8_000


async def count_off_loop(count: Callable[[str], int], text: str) -> int:
    """`count(text)`, inline for short text and in a worker thread for long text."""
    if len(text) < INLINE_CHARS:
        return count(text)
    return await asyncio.to_thread(count, text)


def qwen3_prompt(request: ChatRequest, *, enable_thinking: bool | None, preopened: bool) -> str:
    """The request rendered with Qwen3's chat template, as the engine would render it: tools
    shown unless tool_choice is "none" (as vLLM does). ValueError for content the text
    template cannot show (images)."""
    tools = None
    if request.tools and request.tool_choice.mode != "none":
        tools = [openai_tool(tool, with_strict=False) for tool in request.tools]
    return render_prompt(
        openai_messages(request.messages, for_template=True),
        tools,
        enable_thinking=enable_thinking,
        preopen_think=preopened,
    )


class UpstreamTokens:
    """The counting sources of one openai_compat backend. `load()` (from the backend's
    `start`) reads the in-process tokenizers and the template; counting loads them first if
    start-up did not."""

    def __init__(
        self,
        config: OpenAICompatBackend,
        card: ModelCard,
        rules: DialectRules,
        *,
        engine: EngineTokenizer | None,
        model: str,
        name: str,
    ) -> None:
        self._config = config
        self._card = card
        self._rules = rules
        self._engine = engine
        self._model = model
        self._name = name
        self.qwen3: Qwen3Tokenizer | None = None
        self._hf: HFTokenizer | None = None
        self._templates: dict[str, ChatTemplate] = {}
        self._loaded = False
        self._lock = asyncio.Lock()

    @property
    def is_qwen3(self) -> bool:
        return (
            self._card.tool_format in ("qwen3_json", "qwen3_coder_xml")
            or self._card.thinking != "none"
        )

    async def load(self) -> None:
        """Load the in-process tokenizers and the chat template, once, off the event loop.
        Raises ConfigError for a configured tokenizer or template that cannot be read."""
        async with self._lock:
            if self._loaded:
                return
            try:
                if self.is_qwen3:
                    # 0.2 s of reading a 2.5 MB vocabulary.
                    self.qwen3 = await asyncio.to_thread(qwen3_tokenizer)
                self._hf, self._templates = await asyncio.to_thread(self._read_files)
            finally:
                self._loaded = True  # a failure is reported once, not on every count

    def _read_files(self) -> tuple[HFTokenizer | None, dict[str, ChatTemplate]]:
        config, where = self._config, f"backend {self._name} of {self._card.id}"
        tokenizer: HFTokenizer | None = None
        sources: dict[str, str] = {}
        bos: str | None = None
        eos: str | None = None
        if config.tokenizer is not None:
            path = Path(config.tokenizer).expanduser()
            try:
                tokenizer = HFTokenizer.from_file(path)
                beside = read_tokenizer_config(path.parent)
            except ImportError:
                raise ConfigError(
                    f"{where}: tokenizer: the `tokenizers` library is not installed"
                ) from None
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{where}: tokenizer: {exc}") from None
            sources = dict(beside.chat_templates)
            bos, eos = beside.bos_token, beside.eos_token
        if config.chat_template is not None:
            sources = {"default": _template_source(config.chat_template, where)}
        templates: dict[str, ChatTemplate] = {}
        for name, source in sources.items():
            try:
                templates[name] = ChatTemplate(source, bos_token=bos, eos_token=eos)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {name} {exc}") from None
        return tokenizer, templates

    async def ready(self) -> None:
        """`load()` unless done, a failure logged rather than raised (a backend used without
        being started)."""
        if self._loaded:
            return
        try:
            await self.load()
        except ConfigError as exc:
            log.warning("%s; its token counts are estimated", exc)

    # ------------------------------------------------------------------ counting

    async def count_tokens(self, request: ChatRequest, *, local_only: bool = False) -> int | None:
        """The prompt tokens of `request` as the upstream will count them, or None."""
        await self.ready()
        card = self._card
        if self.qwen3 is not None:
            try:
                prompt = qwen3_prompt(
                    request,
                    enable_thinking=card.thinking_switch(request.reasoning),
                    preopened=card.thinking == "always",
                )
            except ValueError:
                return None  # content the text template cannot show (images)
            return await count_off_loop(self.qwen3.count, prompt)
        local = self._hf is not None and bool(self._templates)
        engine = None if local_only else self._engine
        if engine is not None and not (
            engine.templates or (engine.tokenizes and bool(self._templates))
        ):
            engine = None  # it can count text, but nothing renders the prompt for it
        if not local and engine is None:
            return None  # nothing to count with: no work on the hot path
        if any(isinstance(part, ImagePart) for msg in request.messages for part in msg.parts):
            return None  # the engine adds image tokens no text tokenizer sees
        body = build_request_body(
            request,
            model=self._model,
            rules=self._rules,
            stream=False,
            enable_thinking=card.thinking_switch(request.reasoning),
        )
        rendered = self._render(request, body)
        if rendered is not None and self._hf is not None:
            return await count_off_loop(self._hf.count, rendered)
        if engine is None:
            return None
        if engine.templates:
            return await engine.count_chat(body)
        if rendered is not None:
            # llama-cpp-python tokenizes a chat prompt without adding BOS: count as text.
            return await engine.count_text(rendered)
        return None

    async def count_text(self, text: str, *, local_only: bool = False) -> int | None:
        """Tokens in `text` (generated output) as the upstream's tokenizer counts it, or None."""
        await self.ready()
        if self.qwen3 is not None:
            return await count_off_loop(self.qwen3.count, text)
        if self._hf is not None:
            return await count_off_loop(self._hf.count, text)
        if local_only or self._engine is None or not self._engine.tokenizes:
            return None
        return await self._engine.count_text(text)

    def _render(self, request: ChatRequest, body: dict[str, Any]) -> str | None:
        """The prompt the upstream's template renders for `body` (what is sent for `request`),
        or None without a template, or with one that cannot render it exactly."""
        tools = template_tools(request)
        template = self._templates.get("tool_use") if tools else None
        template = template or self._templates.get("default")
        if template is None or not template.exact:
            return None
        try:
            return template.apply(
                [_template_message(message) for message in body["messages"]],
                tools=tools,
                variables=body.get("chat_template_kwargs"),
            )
        except InvalidRequest:
            return None  # the upstream will refuse it, or render it its own way


def _template_source(setting: str, where: str) -> str:
    """The `chat_template` setting: the template itself, or the path of a file holding it."""
    if setting.lstrip().startswith("{"):
        return setting
    try:
        return Path(setting).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: chat_template: cannot read {setting!r}: {exc}") from None


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    """A message of the request body in the shape engines hand their templates (vLLM and
    llama.cpp's server decode tool-call arguments; `openai_messages(for_template=True)` is the
    same shape): arguments that are a JSON object as that object, no null content."""
    shaped = dict(message)
    if shaped.get("content") is None:
        shaped["content"] = ""
    calls = shaped.get("tool_calls")
    if calls:
        shaped["tool_calls"] = [_template_call(call) for call in calls]
    return shaped


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return call
    try:
        decoded = json.loads(arguments)
    except ValueError:
        return call
    if not isinstance(decoded, dict):
        return call
    return {**call, "function": {**function, "arguments": decoded}}
