"""`LlamaCppEngine`: the in-process llama.cpp backend, which loads its model on first use.

A gateway that serves only upstreams must not carry a local model it never runs (a 135M model
is 300 MB of RSS with its worker threads), so a new engine holds only its configuration:
the first `stream`, `count_tokens` or `count_text` loads the model (loaded.py), and requests
that arrive while it loads wait for that one load. `start()` loads it at once, for a server
that wants the cost at start-up (`MODELPORT_PRELOAD`). A load that fails is reported to the
requests that waited for it and tried again by the next; `aclose()` stops the workers, after
which the engine serves nothing until `start()` is called again.

This module imports neither llama_cpp nor numpy nor jinja2: constructing an engine is free.

Choices worth knowing (docs/engine.md):
- an output limit beyond the remaining context is clamped to it, never refused;
- completion_tokens counts every token sampled, the end-of-generation token and the tokens of
  a stop string that was cut from the text included;
- usage is reported as events: `Start.prompt_tokens`, a running `Usage` after every token, and
  the final `Usage` before `Stop`;
- a request without a seed gets a fresh random one (llama.cpp's default repeats across runs);
- usage reports the prompt tokens taken from the KV cache as cached_tokens, and the tokens of
  the think block (tags included) as reasoning_tokens;
- a thinking budget (core/reasoning.py) is enforced: when the tokens inside the think block
  reach it, the engine writes "\\n</think>\\n\\n" itself and the model goes on to the answer
  (those closing tokens count as completion tokens and carry no logprobs);
- logprobs are the raw model distribution's (before bias, penalties, grammar, temperature and
  truncation); there is one entry per token in the text: none for the end-of-generation token,
  none for tokens that begin inside a stop string that was cut (a token that straddles the cut
  keeps its entry with its full text).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from modelport.backends.base import CallContext
from modelport.backends.llamacpp.model_file import PACKAGE_PREFIX
from modelport.core.catalog import ConfigError, LlamaCppBackend, ModelCard
from modelport.core.errors import BackendUnavailable
from modelport.core.events import Event
from modelport.core.types import ChatRequest

if TYPE_CHECKING:
    from modelport.backends.llamacpp.loaded import LoadedEngine

log = logging.getLogger(__name__)


class LlamaCppEngine:
    """A local GGUF model served by llama.cpp worker threads, loaded on first use."""

    def __init__(self, config: LlamaCppBackend, card: ModelCard, *, default_threads: int) -> None:
        if config.instances is not None and config.instances < 1:
            raise ValueError("instances must be >= 1")
        self.config = config
        self.card = card
        self.name = config.name or f"llamacpp:{PurePosixPath(_file_part(config.path)).name}"
        self._threads = config.n_threads or default_threads
        self._loaded: LoadedEngine | None = None
        # The load in progress, shared by every request that waits for it: a task, so that a
        # waiting client that leaves does not abort the load for the others.
        self._loading: asyncio.Task[LoadedEngine] | None = None
        self._closed = False  # by aclose(), until start()

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (its worker threads running)."""
        return self._loaded is not None

    @property
    def queue_depth(self) -> int:
        """Requests waiting for an instance (0 while the model is not loaded)."""
        loaded = self._loaded
        return 0 if loaded is None else loaded.waiting

    @property
    def n_ctx(self) -> int:
        return self._running().info.n_ctx

    async def start(self) -> None:
        """Load the model now (if it is not loaded); `ConfigError` if it is unusable."""
        self._closed = False
        await self._load()

    async def aclose(self) -> None:
        """Stop the workers: queued jobs fail with Overloaded, running ones stop at a token.
        The engine then refuses requests until `start()`."""
        self._closed = True
        loading = self._loading
        if loading is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(loading)
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            await loaded.aclose()

    def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        loaded = self._loaded
        if loaded is not None:
            return loaded.stream(request, ctx)
        return self._stream_after_load(request, ctx)

    async def _stream_after_load(
        self, request: ChatRequest, ctx: CallContext
    ) -> AsyncGenerator[Event, None]:
        loaded = await self._on_first_use()
        async with contextlib.aclosing(loaded.stream(request, ctx)) as events:
            async for event in events:
                yield event

    async def count_tokens(self, request: ChatRequest, *, local_only: bool = False) -> int:
        """The request's prompt tokens, exactly as generation counts them. In-process, so
        `local_only` changes nothing."""
        loaded = self._loaded or await self._on_first_use()
        return await loaded.count_tokens(request)

    async def count_text(self, text: str, *, local_only: bool = False) -> int:
        """Tokens in generated text, with the model's tokenizer (no BOS, no special tokens)."""
        loaded = self._loaded or await self._on_first_use()
        return await loaded.count_text(text)

    def render_prompt(self, request: ChatRequest) -> str:
        """The prompt text the engine would tokenize for `request` (for tests and debugging);
        the model must be loaded."""
        return self._running().render_prompt(request)

    async def _on_first_use(self) -> LoadedEngine:
        """The loaded engine, loading it now if need be; a request sees a failed load as
        BackendUnavailable (the reason goes to the log, not to the client)."""
        if self._closed:
            raise BackendUnavailable(f"The local engine {self.name} is not running.")
        try:
            return await self._load()
        except ConfigError as exc:
            log.error("loading the local model of %s failed: %s", self.card.id, exc)
            raise BackendUnavailable(
                f"The local engine for {self.card.id} could not load its model; "
                "the server's log says why."
            ) from None

    async def _load(self) -> LoadedEngine:
        if self._loaded is not None:
            return self._loaded
        loading = self._loading
        if loading is None:
            loading = self._loading = asyncio.ensure_future(self._load_once())
            loading.add_done_callback(self._load_finished)
        return await asyncio.shield(loading)

    async def _load_once(self) -> LoadedEngine:
        from modelport.backends.llamacpp.loaded import LoadedEngine  # llama_cpp, numpy, jinja2

        log.info("loading the local model of %s (%s)", self.card.id, self.config.path)
        loaded = await LoadedEngine.load(
            self.config, self.card, name=self.name, threads=self._threads
        )
        if self._closed:  # closed while it loaded: nobody may use it
            await loaded.aclose()
            raise BackendUnavailable(f"The local engine {self.name} is not running.")
        self._loaded = loaded
        return loaded

    def _load_finished(self, loading: asyncio.Task[LoadedEngine]) -> None:
        if self._loading is loading:
            self._loading = None  # a failed load is tried again by the next request
        if not loading.cancelled():
            loading.exception()  # retrieved: every waiter that is still there has it too

    def _running(self) -> LoadedEngine:
        if self._loaded is None:
            raise BackendUnavailable(f"The local engine {self.name} is not running.")
        return self._loaded


def _file_part(path: str) -> str:
    return path[len(PACKAGE_PREFIX) :] if path.startswith(PACKAGE_PREFIX) else path
