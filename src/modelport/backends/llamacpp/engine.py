"""`LlamaCppEngine`: the in-process llama.cpp backend.

`config.instances` workers (one `Llama` and one thread each) take jobs from a dispatcher that
sends each conversation's next turn to the instance whose KV cache already holds its earlier
turns (dispatch.py); `stream` renders the prompt, submits a job and relays the worker's
messages as canonical events. The event loop never calls into llama.cpp: messages cross over
with `loop.call_soon_threadsafe`.

Choices worth knowing:
- an output limit beyond the remaining context is clamped to it, never refused;
- completion_tokens counts every token sampled, the end-of-generation token and the tokens of
  a stop string that was cut from the text included;
- a request without a seed gets a fresh random one (llama.cpp's default repeats across runs);
- usage reports the prompt tokens taken from the KV cache as cached_tokens, and the tokens of
  the think block (tags included) as reasoning_tokens;
- a thinking budget (core/reasoning.py) is enforced: when the tokens inside the think block
  reach it, the engine writes "\n</think>\n\n" itself and the model goes on to the answer
  (those closing tokens count as completion tokens and carry no logprobs);
- logprobs are the raw model distribution's (before bias, penalties, grammar, temperature and
  truncation); there is one entry per token in the text: none for the end-of-generation token,
  none for tokens that begin inside a stop string that was cut (a token that straddles the cut
  keeps its entry with its full text).
"""

from __future__ import annotations

import asyncio
import threading
import unicodedata
from collections.abc import AsyncGenerator
from pathlib import Path, PurePosixPath
from typing import Any

from modelport.backends.base import CallContext
from modelport.backends.llamacpp.dispatch import Dispatcher
from modelport.backends.llamacpp.logprobs import MAX_TOP
from modelport.backends.llamacpp.model_file import (
    PACKAGE_PREFIX,
    read_train_context,
    resolve_model_path,
)
from modelport.backends.llamacpp.output_grammar import output_grammar
from modelport.backends.llamacpp.sampling import plan_sampling
from modelport.backends.llamacpp.worker import (
    Done,
    Failed,
    Job,
    LoadSpec,
    ModelInfo,
    Piece,
    VocabCounter,
    Worker,
    WorkerMessage,
)
from modelport.core.catalog import LlamaCppBackend, ModelCard
from modelport.core.errors import BackendUnavailable, InvalidRequest, Overloaded
from modelport.core.events import Error, Event, Logprobs, Start, Stop, TextDelta
from modelport.core.reasoning import thinking_budget
from modelport.core.types import ChatRequest, ImagePart
from modelport.parsers.relay import ParsedRelay, output_parser_for, think_mode

# How long a client told "overloaded" should wait: a short generation on a small model.
_RETRY_AFTER_S = 3.0


class LlamaCppEngine:
    """A local GGUF model served by llama.cpp worker threads."""

    def __init__(self, config: LlamaCppBackend, card: ModelCard, *, default_threads: int) -> None:
        if config.instances < 1:
            raise ValueError("instances must be >= 1")
        self.config = config
        self.card = card
        self.name = config.name or f"llamacpp:{PurePosixPath(_file_part(config.path)).name}"
        self._threads = config.n_threads or default_threads
        self._dispatcher: Dispatcher[Job] | None = None
        self._stopping = threading.Event()
        self._workers: list[Worker] = []
        self._info: ModelInfo | None = None
        self._path: Path | None = None
        self._counter: VocabCounter | None = None
        self._counter_lock = asyncio.Lock()

    @property
    def n_ctx(self) -> int:
        return self._started().n_ctx

    async def start(self) -> None:
        """Load every instance, each in its own thread; `ConfigError` if the model is unusable."""
        if self._workers:
            return
        self._stopping.clear()  # a closed engine may be started again
        path = self._path = await asyncio.to_thread(resolve_model_path, self.config.path)
        trained = await asyncio.to_thread(read_train_context, path)
        limit = self.config.n_ctx or trained or self.card.context_length
        spec = LoadSpec(
            path=path,
            n_ctx=min(self.card.context_length, limit),
            n_threads=self._threads,
            chat_template=self.config.chat_template,
        )
        self._dispatcher = dispatcher = Dispatcher[Job](
            self.config.max_queue, overloaded=self._at_capacity
        )
        workers = [
            Worker(spec, dispatcher, self._stopping, name=f"{self.name}#{i}")
            for i in range(self.config.instances)
        ]
        for worker in workers:
            worker.start()
        self._workers = workers
        try:
            infos = [await asyncio.wrap_future(worker.loaded) for worker in workers]
        except BaseException:
            await self.aclose()
            raise
        self._info = infos[0]

    async def aclose(self) -> None:
        """Stop the workers: queued jobs fail with Overloaded, running ones stop at a token."""
        self._stopping.set()
        if self._dispatcher is not None:
            for job in self._dispatcher.close():
                job.emit(Failed(Overloaded("The local engine is shutting down.", retry_after=5.0)))
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.slot.inbox.put(None)
        for worker in workers:
            await asyncio.to_thread(worker.join)
        self._info = None
        counter, self._counter = self._counter, None
        if counter is not None:
            await asyncio.to_thread(counter.close)

    async def count_text(self, text: str) -> int:
        """Tokens in generated text, with the model's tokenizer (no BOS, no special tokens)."""
        counter = await self._vocab_counter()
        return await asyncio.to_thread(counter.count_text, text)

    async def _vocab_counter(self) -> VocabCounter:
        info = self._started()
        async with self._counter_lock:
            if self._counter is None:
                assert self._path is not None
                self._counter = await asyncio.to_thread(VocabCounter, self._path, info)
            return self._counter

    async def count_tokens(self, request: ChatRequest) -> int:
        """The request's prompt tokens, exactly as generation would count them: the same
        template rendering and tokenizer, without taking a worker from generation."""
        info = self._started()
        _check_request(request)
        prompt = self._prompt(info, request)
        counter = await self._vocab_counter()
        return await asyncio.to_thread(counter.count, prompt)

    def render_prompt(self, request: ChatRequest) -> str:
        """The prompt text the engine would tokenize for `request` (for tests and debugging)."""
        return self._prompt(self._started(), request)

    def _prompt(self, info: ModelInfo, request: ChatRequest) -> str:
        prompt = info.template.render(request, defaults=self._template_defaults(request))
        return unicodedata.normalize("NFC", prompt) if info.nfc else prompt

    async def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        info = self._started()
        _check_request(request)
        prompt = self._prompt(info, request)
        # Thinking-2507's template ends the prompt inside an open think block.
        starts_thinking = prompt.rstrip().endswith("<think>")
        mode = think_mode(self.card, request, preopened=starts_thinking)
        grammar = output_grammar(request, tool_format=self.card.tool_format, thinking=mode)
        plan = plan_sampling(request, n_vocab=info.n_vocab, grammar=grammar)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[WorkerMessage] = asyncio.Queue()
        cancel = threading.Event()

        def emit(message: WorkerMessage) -> None:  # called on the worker thread
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, message)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        job = Job(
            request=request,
            prompt=prompt,
            plan=plan,
            ctx=ctx,
            emit=emit,
            cancel=cancel,
            think_budget=thinking_budget(self.card, request),
            starts_thinking=starts_thinking,
        )
        self._submit(job)
        try:
            first = await inbox.get()
            if isinstance(first, Failed):
                raise first.error
            yield Start(model=self.card.id, backend=self.name)
            parser = output_parser_for(self.card, request, preopened=job.starts_thinking)
            relay = None if parser is None else ParsedRelay(parser, request, keep_logprobs=True)
            while True:
                message = await inbox.get()
                for event in _events_of(message, parsed=relay is not None):
                    if relay is None:
                        yield event
                    else:
                        for parsed in relay.feed(event):
                            yield parsed
                if isinstance(message, Done | Failed):
                    return
        finally:
            # Whether finished, failed, closed or cancelled: the worker stops at the next token
            # (or skips the job if it is still queued).
            cancel.set()

    def _submit(self, job: Job) -> None:
        if self._stopping.is_set() or self._dispatcher is None:
            raise Overloaded("The local engine is shutting down.", retry_after=_RETRY_AFTER_S)
        self._dispatcher.submit(job)

    def _at_capacity(self, waiting: int) -> Overloaded:
        return Overloaded(
            f"The local engine for {self.card.id} is at capacity "
            f"({waiting} requests already waiting); retry shortly.",
            retry_after=_RETRY_AFTER_S,
        )

    def _template_defaults(self, request: ChatRequest) -> dict[str, Any]:
        # Hybrid-thinking templates (Qwen3) switch thinking off with enable_thinking=False.
        if self.card.thinking_turned_off(request.reasoning):
            return {"enable_thinking": False}
        return {}

    def _started(self) -> ModelInfo:
        if self._info is None:
            raise BackendUnavailable(f"The local engine {self.name} is not running.")
        return self._info


def _file_part(path: str) -> str:
    return path[len(PACKAGE_PREFIX) :] if path.startswith(PACKAGE_PREFIX) else path


def _check_request(request: ChatRequest) -> None:
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


def _events_of(message: WorkerMessage, *, parsed: bool) -> list[Event]:
    """A worker message as canonical events with the raw text in block 0. The worker sends no
    logprobs before the first text, so block 0 is open; when the text is parsed, entries that
    come without text are dropped (they would attach to whatever block the parser has open)."""
    if isinstance(message, Piece):
        events: list[Event] = [TextDelta(index=0, text=message.text)] if message.text else []
        if message.logprobs and (message.text or not parsed):
            events.append(Logprobs(index=0, entries=message.logprobs))
        return events
    if isinstance(message, Done):
        return [
            message.usage,
            Stop(message.finish_reason, message.native_finish_reason, message.stop_sequence),
        ]
    if isinstance(message, Failed):
        return [Error(message.error)]
    return []  # Ready: only the first message, handled before Start
