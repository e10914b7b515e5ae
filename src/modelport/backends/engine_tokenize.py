"""Exact token counts from an upstream engine's own tokenizer, over HTTP: for upstreams that
report no usage (llama-cpp-python's server never does in a stream) and whose tokenizer does
not run in-process. Which endpoints an engine has is its dialect's row
(`protocols/openai/dialects.py`):

- llama.cpp's server: `POST /tokenize` `{"content", "add_special", "parse_special"}` ->
  `{"tokens": [...]}`, and `POST /apply-template` (the chat request's messages, tools and
  chat_template_kwargs) -> `{"prompt": "..."}`, the prompt its completion endpoint would
  tokenize, with BOS added as it adds it (`add_special`).
- llama-cpp-python's server: `POST /extras/tokenize` `{"input"}` -> `{"tokens": [...]}`,
  always with the model's BOS (and EOS) where the model adds them: what "" tokenizes to is
  asked once and subtracted.

Every call has a short deadline and never raises: a failure returns None (the caller then
estimates) and is logged once at warning; an endpoint the engine does not have (404, 405,
501) is not asked again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from modelport.backends import http1
from modelport.protocols.openai.dialects import DialectRules

log = logging.getLogger(__name__)

# Seconds for one tokenize or template call, connection included. llama-cpp-python answers
# only between generations (one lock guards its model): past this the caller estimates.
TOKENIZE_SECONDS = 10.0

# The parts of a chat request that decide its prompt, sent to /apply-template.
TEMPLATE_KEYS = ("messages", "tools", "tool_choice", "parallel_tool_calls", "chat_template_kwargs")

_ABSENT = (404, 405, 501)

T = TypeVar("T")


class _Tokens(msgspec.Struct):
    tokens: list[Any]  # ids, or {"id", "piece"} objects from a server asked for pieces


class _Prompt(msgspec.Struct):
    prompt: str


class EngineTokenizer:
    """Counts tokens with one upstream engine's tokenize / apply-template endpoints.

    `client` gives the backend's HTTP client (its pool is shared with generation); `root` is
    the server's root URL (the base URL without /v1); `headers` carry its credentials; `where`
    is the root as log messages show it (without credentials).
    """

    def __init__(
        self,
        rules: DialectRules,
        *,
        root: str,
        headers: dict[str, str],
        client: Callable[[], Awaitable[http1.Client]],
        where: str,
        timeout: float = TOKENIZE_SECONDS,
    ) -> None:
        self._tokenize = rules.tokenize
        paths: dict[str, str] = {}
        if rules.tokenize is not None:
            paths["tokenize"] = rules.tokenize.path
        if rules.apply_template is not None:
            paths["template"] = rules.apply_template
        self._urls = {endpoint: root + path for endpoint, path in paths.items()}
        self._shown = {endpoint: where + path for endpoint, path in paths.items()}
        self._headers = {**headers, "Content-Type": "application/json"}
        self._headers["Accept"] = "application/json"
        self._client = client
        self._timeout = timeout
        self._prepared: dict[str, http1.Request] = {}
        self._absent: set[str] = set()  # endpoints the engine answered 404/405/501 for
        self._warned: set[str] = set()
        self._added: int | None = None  # tokens llama-cpp-python adds around any text

    @property
    def tokenizes(self) -> bool:
        """Whether the engine can count text."""
        return "tokenize" in self._urls and "tokenize" not in self._absent

    @property
    def templates(self) -> bool:
        """Whether the engine can render a chat request's prompt (and count it)."""
        return self.tokenizes and "template" in self._urls and "template" not in self._absent

    async def count_text(self, text: str) -> int | None:
        """Tokens in `text` as the engine tokenizes it (special tokens in the text matched as
        themselves, none added around it); None when the engine could not say."""
        if not text:
            return 0
        return await self._count(text, add_special=False)

    async def count_chat(self, body: dict[str, Any]) -> int | None:
        """The prompt tokens of a chat completions `body` as the engine will count them: its
        template renders the prompt (`/apply-template`) and its tokenizer counts it with the
        special tokens it adds to a prompt. None without a template endpoint or on failure."""
        if not self.templates:
            return None
        payload = {key: body[key] for key in TEMPLATE_KEYS if key in body}
        rendered = await self._call("template", payload, _Prompt)
        if rendered is None:
            return None
        return await self._count(rendered.prompt, add_special=True)

    async def _count(self, text: str, *, add_special: bool) -> int | None:
        endpoint = self._tokenize
        if endpoint is None:
            return None
        if endpoint.wire == "llamacpp":
            payload = {"content": text, "add_special": add_special, "parse_special": True}
            answer = await self._call("tokenize", payload, _Tokens)
            return None if answer is None else len(answer.tokens)
        # llama-cpp-python adds BOS (where the model has one) to whatever it tokenizes; its
        # chat prompts are tokenized without it (the template writes the BOS text itself).
        if self._added is None:
            empty = await self._call("tokenize", {"input": ""}, _Tokens)
            if empty is None:
                return None
            self._added = len(empty.tokens)
        answer = await self._call("tokenize", {"input": text}, _Tokens)
        if answer is None:
            return None
        return max(0, len(answer.tokens) - self._added)

    async def _call(self, endpoint: str, payload: dict[str, Any], kind: type[T]) -> T | None:
        if endpoint in self._absent or endpoint not in self._urls:
            return None
        url = self._urls[endpoint]
        try:
            client = await self._client()
            prepared = self._prepared.get(endpoint)
            if prepared is None:
                prepared = client.prepare("POST", url, self._headers)
                self._prepared[endpoint] = prepared
            async with asyncio.timeout(self._timeout):
                response = await client.send(prepared, msgspec.json.encode(payload))
                try:
                    data = await response.read()
                finally:
                    response.release()  # reused when the whole body came, else dropped
        except TimeoutError:
            self._warn(endpoint, f"no answer within {self._timeout:g}s")
            return None
        except (http1.HTTPClientError, ValueError) as exc:
            self._warn(endpoint, f"{type(exc).__name__}: {exc}")
            return None
        if response.status in _ABSENT:
            self._absent.add(endpoint)
            self._warn(endpoint, f"HTTP {response.status}: the engine has no such endpoint")
            return None
        if response.status != 200:
            self._warn(endpoint, f"HTTP {response.status}")
            return None
        try:
            return msgspec.json.decode(data, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._warn(endpoint, f"an answer of an unexpected shape: {exc}")
            return None

    def _warn(self, endpoint: str, reason: str) -> None:
        url = self._shown[endpoint]
        if endpoint in self._warned:
            log.debug("token count from %s failed: %s", url, reason)
            return
        self._warned.add(endpoint)
        log.warning("token count from %s failed (%s); such counts are estimated", url, reason)
