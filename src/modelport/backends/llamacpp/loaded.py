"""`LoadedEngine`: a local model once it is loaded, with its worker threads running.

`LlamaCppEngine` (engine.py) builds one on first use. `config.instances` workers (one `Llama`
and one thread each) take jobs from a dispatcher that sends each conversation's next turn to
the instance whose KV cache already holds its earlier turns (dispatch.py); `stream` renders the
prompt, submits a job and relays the worker's messages as canonical events. The event loop
never calls into llama.cpp: messages cross over with `loop.call_soon_threadsafe`.

Usage travels as events only: `Start` carries the prompt's size (the worker tokenizes before it
generates), a running `Usage` follows every token the worker reports, and the final one from
`Done` comes right before `Stop`. The running ones are yielded as they arrive, not held by the
output parser, so a consumer that stops iterating (a client that left) has seen what was
generated up to then.

Imports llama_cpp, numpy and jinja2 (through the worker and the template): engine.py imports
this module only when it loads the model.
"""

from __future__ import annotations

import asyncio
import threading
import unicodedata
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from modelport.backends.base import CallContext
from modelport.backends.llamacpp.dispatch import Dispatcher
from modelport.backends.llamacpp.logprobs import MAX_TOP
from modelport.backends.llamacpp.model_file import read_train_context, resolve_model_path
from modelport.backends.llamacpp.output_grammar import output_grammar
from modelport.backends.llamacpp.sampling import plan_sampling
from modelport.backends.llamacpp.worker import (
    Done,
    Failed,
    Job,
    LoadSpec,
    ModelInfo,
    Piece,
    Ready,
    VocabCounter,
    Worker,
    WorkerMessage,
)
from modelport.core.catalog import LlamaCppBackend, ModelCard
from modelport.core.errors import InvalidRequest, Overloaded
from modelport.core.events import Error, Event, Logprobs, Start, Stop, TextDelta, Usage
from modelport.core.reasoning import thinking_budget
from modelport.core.types import ChatRequest, ImagePart
from modelport.parsers.relay import ParsedRelay, output_parser_for, think_mode

# How long a client told "overloaded" should wait: a short generation on a small model.
RETRY_AFTER_S = 3.0


class LoadedEngine:
    """The worker threads of one local model, loaded by `load` and stopped by `aclose`."""

    def __init__(
        self,
        config: LlamaCppBackend,
        card: ModelCard,
        *,
        name: str,
        path: Path,
        dispatcher: Dispatcher[Job],
        stopping: threading.Event,
        workers: list[Worker],
        info: ModelInfo,
    ) -> None:
        self.config = config
        self.card = card
        self.name = name
        self.info = info
        self._path = path
        self._dispatcher = dispatcher
        self._stopping = stopping
        self._workers = workers
        self._counter: VocabCounter | None = None
        self._counter_lock = asyncio.Lock()

    @classmethod
    async def load(
        cls, config: LlamaCppBackend, card: ModelCard, *, name: str, threads: int
    ) -> LoadedEngine:
        """Load every instance, each in its own thread; `ConfigError` if the model is unusable
        (with every thread stopped again)."""
        path = await asyncio.to_thread(resolve_model_path, config.path)
        trained = await asyncio.to_thread(read_train_context, path)
        limit = config.n_ctx or trained or card.context_length
        spec = LoadSpec(
            path=path,
            n_ctx=min(card.context_length, limit),
            n_threads=threads,
            chat_template=config.chat_template,
        )
        stopping = threading.Event()

        def at_capacity(waiting: int) -> Overloaded:
            return Overloaded(
                f"The local engine for {card.id} is at capacity "
                f"({waiting} requests already waiting); retry shortly.",
                retry_after=RETRY_AFTER_S,
            )

        dispatcher = Dispatcher[Job](config.max_queue, overloaded=at_capacity)
        workers = [
            Worker(spec, dispatcher, stopping, name=f"{name}#{i}") for i in range(config.instances)
        ]
        for worker in workers:
            worker.start()
        # Wait for every instance, failed or not, so that none is left loading behind us.
        results = await asyncio.gather(
            *(asyncio.wrap_future(worker.loaded) for worker in workers), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                await _stop(stopping, dispatcher, workers)
                raise result
        info = results[0]
        assert isinstance(info, ModelInfo)
        return cls(
            config,
            card,
            name=name,
            path=path,
            dispatcher=dispatcher,
            stopping=stopping,
            workers=workers,
            info=info,
        )

    async def aclose(self) -> None:
        """Stop the workers: queued jobs fail with Overloaded, running ones stop at a token."""
        workers, self._workers = self._workers, []
        await _stop(self._stopping, self._dispatcher, workers)
        counter, self._counter = self._counter, None
        if counter is not None:
            await asyncio.to_thread(counter.close)

    async def count_text(self, text: str) -> int:
        """Tokens in generated text, with the model's tokenizer (no BOS, no special tokens)."""
        counter = await self._vocab_counter()
        return await asyncio.to_thread(counter.count_text, text)

    async def count_tokens(self, request: ChatRequest) -> int:
        """The request's prompt tokens, exactly as generation would count them: the same
        template rendering and tokenizer, without taking a worker from generation."""
        check_request(request)
        prompt = self.render_prompt(request)
        counter = await self._vocab_counter()
        return await asyncio.to_thread(counter.count, prompt)

    async def _vocab_counter(self) -> VocabCounter:
        async with self._counter_lock:
            if self._counter is None:
                self._counter = await asyncio.to_thread(VocabCounter, self._path, self.info)
            return self._counter

    def render_prompt(self, request: ChatRequest) -> str:
        """The prompt text the engine tokenizes for `request`."""
        info = self.info
        prompt = info.template.render(request, defaults=self._template_defaults(request))
        return unicodedata.normalize("NFC", prompt) if info.nfc else prompt

    async def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        info = self.info
        check_request(request)
        prompt = self.render_prompt(request)
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
            assert isinstance(first, Ready)  # the worker's first message is Ready or Failed
            n_prompt, cached = first.prompt_tokens, first.cached_tokens
            yield Start(model=self.card.id, backend=self.name, prompt_tokens=n_prompt)
            parser = output_parser_for(self.card, request, preopened=job.starts_thinking)
            relay = None if parser is None else ParsedRelay(parser, request, keep_logprobs=True)
            counted = 0
            while True:
                message = await inbox.get()
                for event in _events_of(message, parsed=relay is not None):
                    if relay is None:
                        yield event
                    else:
                        for parsed in relay.feed(event):
                            yield parsed
                if isinstance(message, Piece):
                    if message.generated > counted:
                        counted = message.generated
                        yield Usage(n_prompt, counted, message.reasoning, cached_tokens=cached)
                elif isinstance(message, Done | Failed):
                    return
        finally:
            # Whether finished, failed, closed or cancelled: the worker stops at the next token
            # (or skips the job if it is still queued).
            cancel.set()

    def _submit(self, job: Job) -> None:
        if self._stopping.is_set():
            raise Overloaded("The local engine is shutting down.", retry_after=RETRY_AFTER_S)
        self._dispatcher.submit(job)

    def _template_defaults(self, request: ChatRequest) -> dict[str, Any]:
        # Hybrid-thinking templates (Qwen3) switch thinking off with enable_thinking=False.
        if self.card.thinking_turned_off(request.reasoning):
            return {"enable_thinking": False}
        return {}


async def _stop(
    stopping: threading.Event, dispatcher: Dispatcher[Job], workers: list[Worker]
) -> None:
    stopping.set()
    for job in dispatcher.close():
        job.emit(Failed(Overloaded("The local engine is shutting down.", retry_after=5.0)))
    for worker in workers:
        worker.slot.inbox.put(None)
    for worker in workers:
        await asyncio.to_thread(worker.join)


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


def _events_of(message: WorkerMessage, *, parsed: bool) -> list[Event]:
    """A worker message as canonical events with the raw text in block 0. The worker sends no
    logprobs before the first text, so block 0 is open; when the text is parsed, entries that
    come without text are dropped (they would attach to whatever block the parser has open)."""
    if isinstance(message, Piece):
        if not message.text:
            if message.logprobs and not parsed:
                return [Logprobs(index=0, entries=message.logprobs)]
            return []
        events: list[Event] = [TextDelta(index=0, text=message.text)]
        if message.logprobs:
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
