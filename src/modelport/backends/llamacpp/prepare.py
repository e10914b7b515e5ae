"""`Preparer`: what the local engine does to a request before it takes a place in the queue,
on threads of its own, never on the event loop.

Rendering 100,000 messages takes the template half a second, tokenizing 30 MB of text takes
llama.cpp half a minute, and a grammar is built in time that grows with the schema: on the
event loop, any of them stalls every request of the process (health checks included). Here
each runs on one of `PREP_THREADS` threads, and each is bounded:

- the prompt is rendered (the chat template, NFC for Qwen tokenizers), then measured before
  it is tokenized: no token covers more bytes than the vocabulary's longest token, so a prompt
  longer than `n_ctx` times that cannot fit, and is refused (`ContextLengthExceeded`, "at
  least N tokens") without tokenizing it; so is one with more special tokens' texts than
  `n_ctx` (llama.cpp's tokenizer slows down more than linearly with them); anything else is
  tokenized (the count is exact) and refused when it leaves no room in the context. Either
  way before it is queued. The
  tokens go to the worker with the job, and the last few prompts' tokens are kept
  (`TOKENS_KEPT`), so that the count taken at admission is not done again when the same
  request starts;
- the grammar (`output_grammar`) is built from schemas the bounds of `schema_bounds.py`
  allow, checked by llama.cpp's own grammar parser (a grammar it rejects would crash the
  sampler), and kept in a least-recently-used cache keyed by the canonical JSON of what it is
  made from (`grammar_key`): the same schema again costs a lookup. A refusal is cached too.

Each thread tokenizes with its own vocabulary-only `Llama` (`VocabCounter`: no weights, a few
MB), so two requests' prompts are tokenized in parallel and neither waits for a worker.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from modelport.backends.llamacpp.logprobs import MAX_TOP
from modelport.backends.llamacpp.output_grammar import OutputGrammar, grammar_key, output_grammar
from modelport.backends.llamacpp.worker import ModelInfo, VocabCounter
from modelport.backends.prompt_literals import LiteralGuard, Literals, PromptTooLong
from modelport.core.catalog import ModelCard
from modelport.core.errors import BackendUnavailable, ContextLengthExceeded, InvalidRequest
from modelport.core.types import ChatRequest, ImagePart
from modelport.parsers.relay import think_mode
from modelport.parsers.think import ThinkMode

# Threads that render, tokenize and build grammars; each holds a vocabulary-only model.
PREP_THREADS = 2
# Compiled grammars kept, by count and by the size of their text.
GRAMMAR_CACHE_ENTRIES = 256
GRAMMAR_CACHE_BYTES = 32 * 1024 * 1024
# Prompts whose tokens are kept for the request's next step (admission counts, then the
# stream starts): a handful is enough, since the two steps follow each other at once.
TOKENS_KEPT = 8

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered prompt: `marked` as the template wrote it (the client's control-token
    strings as markers), `text` with them put back."""

    marked: str
    literals: Literals

    @property
    def text(self) -> str:
        return self.literals.restore(self.marked)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready to queue: its prompt, the prompt's tokens and the output's grammar."""

    prompt: str
    tokens: list[int]
    grammar: OutputGrammar
    starts_thinking: bool  # the prompt ends inside an open think block (Thinking-2507)


def check_request(request: ChatRequest) -> None:
    """Refuse what this engine cannot do, before the request takes a place in the queue."""
    if not request.messages:
        raise InvalidRequest("messages must not be empty", param="messages")
    if request.top_logprobs is not None and not 0 <= request.top_logprobs <= MAX_TOP:
        raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP}", param="top_logprobs")
    if request.max_output_tokens is not None and request.max_output_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    if any(isinstance(part, ImagePart) for message in request.messages for part in message.parts):
        raise InvalidRequest(
            "This model does not accept images (the local engine has no vision support).",
            param="messages",
        )


class Preparer:
    """Renders, tokenizes and builds grammars for one local model, off the event loop."""

    def __init__(self, path: Path, info: ModelInfo, card: ModelCard, *, name: str) -> None:
        self._path = path
        self._info = info
        self._card = card
        self._executor = ThreadPoolExecutor(PREP_THREADS, thread_name_prefix=f"{name}-prep")
        self._lock = threading.Lock()  # guards what follows, shared by the threads
        self._idle: queue.SimpleQueue[VocabCounter] = queue.SimpleQueue()
        self._counters: list[VocabCounter] = []
        self._grammars: OrderedDict[bytes, Future[OutputGrammar]] = OrderedDict()
        self._grammar_bytes = 0
        self._tokens: OrderedDict[tuple[str, tuple[str, ...]], list[int]] = OrderedDict()
        self._closed = False
        # Set by start(): the most bytes one token stands for, and so the longest prompt
        # worth tokenizing; the special tokens' texts (see `VocabCounter.vocabulary_bounds`).
        self.longest_token = 0
        self._specials: list[tuple[str, int]] = []
        self._guard = LiteralGuard((), ())
        self._generic_tools = card.tool_format == "generic"

    async def start(self) -> None:
        """Load the first tokenizer and read the vocabulary's bounds."""
        await self._run(self._measure)

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        for counter in self._counters:
            counter.close()

    # ------------------------------------------------------------------ on the event loop

    async def prepare(self, request: ChatRequest, template_defaults: dict[str, Any]) -> Prepared:
        """Everything the worker needs; `InvalidRequest` (400) for what cannot be served:
        `ContextLengthExceeded` for a prompt that does not fit, the schema's field for a
        grammar that cannot be built."""
        return await self._run(self._prepare, request, template_defaults)

    async def count(self, request: ChatRequest, template_defaults: dict[str, Any]) -> int:
        """The prompt's tokens, exactly as generation counts them (the tokens are kept for
        the generation that usually follows)."""
        return await self._run(self._count, request, template_defaults)

    async def count_text(self, text: str) -> int:
        """Tokens in generated text (no BOS, no special tokens)."""
        return await self._run(self._count_text, text)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            if self._closed:
                raise RuntimeError("closed")
            running = loop.run_in_executor(self._executor, work, *args)
        except RuntimeError:  # closed, or closing: the executor takes nothing more
            raise BackendUnavailable("The local engine is shutting down.") from None
        return await running

    # ------------------------------------------------------------------ on the threads

    def render(self, request: ChatRequest, template_defaults: dict[str, Any]) -> str:
        """The prompt text the engine tokenizes for `request`."""
        return self._rendered(request, template_defaults, bounded=False).text

    def _rendered(
        self, request: ChatRequest, template_defaults: dict[str, Any], *, bounded: bool = True
    ) -> Rendered:
        info = self._info
        # The client's text alone (read as it is protected) may show the prompt cannot fit.
        literals = self._guard.literals(self._longest_prompt if bounded else None)
        try:
            prompt = info.template.render(
                request,
                defaults=template_defaults,
                generic_tools=self._generic_tools,
                literals=literals,
            )
        except PromptTooLong as exc:
            at_least = exc.characters // self.longest_token
            raise _too_long(info.n_ctx, at_least, at_least=True) from None
        except ValueError as exc:  # more distinct control-token strings than markers
            raise InvalidRequest(f"messages: {exc}", param="messages") from None
        if not info.nfc:
            return Rendered(prompt, literals)
        # NFC (one C call, holding the interpreter's lock) only on text that may fit: it
        # composes at most four code points into one.
        if bounded and len(prompt) > 4 * self._longest_prompt:
            raise _too_long(info.n_ctx, len(prompt) // (4 * self.longest_token), at_least=True)
        return Rendered(unicodedata.normalize("NFC", prompt), literals)

    @property
    def _longest_prompt(self) -> int:
        """The most characters a prompt that fits the context can have."""
        return self._info.n_ctx * self.longest_token

    def _prepare(self, request: ChatRequest, template_defaults: dict[str, Any]) -> Prepared:
        check_request(request)
        rendered = self._rendered(request, template_defaults)
        tokens = self._prompt_tokens(rendered)
        prompt = rendered.text
        starts_thinking = rendered.marked.rstrip().endswith("<think>")
        mode = think_mode(self._card, request, preopened=starts_thinking)
        grammar = self._grammar(request, mode)
        return Prepared(prompt, tokens, grammar, starts_thinking)

    def _count(self, request: ChatRequest, template_defaults: dict[str, Any]) -> int:
        check_request(request)
        rendered = self._rendered(request, template_defaults)
        return len(self._prompt_tokens(rendered, refuse_what_cannot_fit=False))

    def _count_text(self, text: str) -> int:
        with self._counter() as counter:
            return counter.count_text(text)

    def _prompt_tokens(
        self, rendered: Rendered, *, refuse_what_cannot_fit: bool = True
    ) -> list[int]:
        """The prompt's tokens; `ContextLengthExceeded` for a prompt too long to tokenize
        (see the module's docstring) and, `refuse_what_cannot_fit`, for one counted at the
        context's size or more (a count is exact however large: admission refuses it)."""
        n_ctx = self._info.n_ctx
        prompt, table = rendered.marked, rendered.literals.table
        # No token stands for more than `longest_token` bytes, and a character is at least
        # a byte: this refuses only prompts that cannot fit, without tokenizing them.
        size = len(rendered.text) if table else len(prompt)
        if size > self._longest_prompt:
            raise _too_long(n_ctx, size // self.longest_token, at_least=True)
        key = (prompt, tuple(table.values()))
        with self._lock:
            tokens = self._tokens.get(key)
            if tokens is not None:
                self._tokens.move_to_end(key)
        if tokens is None:
            # llama.cpp takes time growing faster than linearly with the special tokens in a
            # text (9.6 s for 32,000 in 650 KB, against 0.5 s for the same text read plainly):
            # a prompt with more of them than fit is refused without tokenizing it.
            for text, per_token in self._specials:
                floor = prompt.count(text) // per_token
                if floor >= n_ctx:
                    raise _too_long(n_ctx, floor, at_least=True)
            with self._counter() as counter:
                if table:
                    pieces = rendered.literals.pieces(prompt, self._guard.split)
                    tokens = counter.piece_tokens(pieces)
                else:
                    tokens = counter.tokens(prompt)
            with self._lock:
                self._tokens[key] = tokens
                while len(self._tokens) > TOKENS_KEPT:
                    self._tokens.popitem(last=False)
        if refuse_what_cannot_fit and len(tokens) >= n_ctx:
            raise _too_long(n_ctx, len(tokens), at_least=False)
        return tokens

    def _grammar(self, request: ChatRequest, mode: ThinkMode) -> OutputGrammar:
        tool_format = self._card.tool_format
        key = grammar_key(request, tool_format=tool_format, thinking=mode)
        if key is None:
            return OutputGrammar()
        with self._lock:
            built = self._grammars.get(key)
            mine = built is None
            if built is None:
                built = self._grammars[key] = Future()
            else:
                self._grammars.move_to_end(key)
        if not mine:
            return built.result()  # built, or being built by another thread: wait for it
        try:
            grammar = output_grammar(request, tool_format=tool_format, thinking=mode)
            self._check_grammar(grammar)
        except InvalidRequest as exc:
            built.set_exception(exc)  # a refusal is as final as a grammar: cached too
            self._cached(key, built)
            raise
        except BaseException as exc:
            built.set_exception(exc)
            with self._lock:
                if self._grammars.get(key) is built:
                    del self._grammars[key]
            raise
        built.set_result(grammar)
        self._cached(key, built)
        return grammar

    def _cached(self, key: bytes, built: Future[OutputGrammar]) -> None:
        """Count a finished entry's size, and evict the least recently used beyond the
        cache's bounds (entries still being built are counted when they finish)."""
        with self._lock:
            if self._grammars.get(key) is not built:
                return  # evicted while it was built
            self._grammar_bytes += _entry_size(key, built)
            while len(self._grammars) > 1 and (
                len(self._grammars) > GRAMMAR_CACHE_ENTRIES
                or self._grammar_bytes > GRAMMAR_CACHE_BYTES
            ):
                old_key, old = self._grammars.popitem(last=False)
                if old.done():
                    self._grammar_bytes -= _entry_size(old_key, old)

    def _check_grammar(self, grammar: OutputGrammar) -> None:
        texts = {text for text in (grammar.first, grammar.after_think) if text is not None}
        with self._counter() as counter:
            for text in texts:
                if not counter.grammar_parses(text):
                    param = grammar.param
                    raise InvalidRequest(
                        f"{param}: the grammar for this schema was rejected by llama.cpp",
                        param=param,
                    )

    @contextmanager
    def _counter(self) -> Iterator[VocabCounter]:
        """A tokenizer of this thread's own (one per thread at most: the pool has as many
        threads as there can be counters)."""
        try:
            counter = self._idle.get_nowait()
        except queue.Empty:
            counter = VocabCounter(self._path, self._info)
            with self._lock:
                self._counters.append(counter)
        try:
            yield counter
        finally:
            self._idle.put(counter)

    def _measure(self) -> None:
        with self._counter() as counter:
            longest, self._specials, control = counter.vocabulary_bounds()
        self.longest_token = max(longest, 1)
        self._guard = LiteralGuard(control, (text for text, _ in self._specials))


def _entry_size(key: bytes, built: Future[OutputGrammar]) -> int:
    if built.exception() is not None:
        return len(key)
    grammar = built.result()
    first, after = grammar.first, grammar.after_think
    return len(key) + len(first or "") + (0 if after is first else len(after or ""))


def _too_long(n_ctx: int, tokens: int, *, at_least: bool) -> ContextLengthExceeded:
    counted = f"at least {tokens}" if at_least else f"{tokens}"
    return ContextLengthExceeded(
        f"This model's maximum context length is {n_ctx} tokens. "
        f"However, your messages resulted in {counted} tokens.",
        param="messages",
        prompt_tokens=tokens,
        limit=n_ctx,
    )
