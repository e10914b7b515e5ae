"""`LoadedEngine`: a local model once it is loaded, with its worker threads running.

`LlamaCppEngine` (engine.py) builds one on first use. `config.instances` workers (one `Llama`
and one thread each) take jobs from a dispatcher that sends each conversation's next turn to
the instance whose KV cache already holds its earlier turns (dispatch.py); `stream` has the
request prepared (prepare.py: the prompt rendered and tokenized, a prompt that cannot fit
refused, the grammar built, all on threads of their own), submits a job and relays the
worker's messages as canonical events. The event loop never calls into llama.cpp, nor renders
or tokenizes: messages cross over with `loop.call_soon_threadsafe`.

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
import logging
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

from modelport.backends.base import CallContext
from modelport.backends.llamacpp.dispatch import Dispatcher
from modelport.backends.llamacpp.model_file import read_train_context, resolve_model_path
from modelport.backends.llamacpp.prepare import Preparer
from modelport.backends.llamacpp.sampling import plan_sampling
from modelport.backends.llamacpp.sizing import load_spec, machine_instances
from modelport.backends.llamacpp.worker import (
    Done,
    Failed,
    Job,
    ModelInfo,
    Piece,
    Ready,
    Worker,
    WorkerMessage,
)
from modelport.core.catalog import LlamaCppBackend, ModelCard
from modelport.core.errors import Overloaded
from modelport.core.events import Error, Event, Logprobs, Start, Stop, TextDelta, Usage
from modelport.core.reasoning import thinking_budget
from modelport.core.types import ChatRequest
from modelport.parsers.relay import ParsedRelay, output_parser_for

log = logging.getLogger(__name__)

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
        dispatcher: Dispatcher[Job],
        stopping: threading.Event,
        workers: list[Worker],
        info: ModelInfo,
        preparer: Preparer,
    ) -> None:
        self.config = config
        self.card = card
        self.name = name
        self.info = info
        self._dispatcher = dispatcher
        self._stopping = stopping
        self._workers = workers
        self._prep = preparer

    @property
    def waiting(self) -> int:
        """Jobs in the queue, waiting for an instance."""
        return self._dispatcher.waiting

    @classmethod
    async def load(
        cls, config: LlamaCppBackend, card: ModelCard, *, name: str, threads: int
    ) -> LoadedEngine:
        """Load every instance, each in its own thread; `ConfigError` if the model is unusable
        (with every thread stopped again)."""
        began = time.perf_counter()
        path = await asyncio.to_thread(resolve_model_path, config.path)
        trained = await asyncio.to_thread(read_train_context, path)
        spec = load_spec(config, card, path=path, trained=trained, threads=threads)
        stopping = threading.Event()

        def at_capacity(waiting: int) -> Overloaded:
            return Overloaded(
                f"The local engine for {card.id} is at capacity "
                f"({waiting} requests already waiting); retry shortly.",
                retry_after=RETRY_AFTER_S,
            )

        dispatcher = Dispatcher[Job](config.max_queue, overloaded=at_capacity)
        workers: list[Worker] = []

        async def start(count: int) -> ModelInfo:
            # Wait for every instance, failed or not, so that none is left loading behind us.
            new = [
                Worker(spec, dispatcher, stopping, name=f"{name}#{len(workers) + i}")
                for i in range(count)
            ]
            workers.extend(new)
            for worker in new:
                worker.start()
            results = await asyncio.gather(
                *(asyncio.wrap_future(worker.loaded) for worker in new), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    await _stop(stopping, dispatcher, workers)
                    raise result
            info = results[0]
            assert isinstance(info, ModelInfo)
            return info

        # The first instance says what one costs; the machine says how many fit (engine.py).
        info = await start(1)
        count = config.instances or machine_instances(threads, info.instance_bytes)
        if count > 1:
            await start(count - 1)
        preparer = Preparer(path, info, card, name=name)
        try:
            await preparer.start()
        except BaseException:
            await preparer.aclose()
            await _stop(stopping, dispatcher, workers)
            raise
        log.info(
            "loaded the local model of %s in %.1f s: %d instance(s) of %d thread(s), "
            "a context of %d tokens%s",
            card.id,
            time.perf_counter() - began,
            count,
            threads,
            info.n_ctx,
            f" ({spec.extension} from {spec.trained})" if spec.extension != "none" else "",
        )
        return cls(
            config,
            card,
            name=name,
            dispatcher=dispatcher,
            stopping=stopping,
            workers=workers,
            info=info,
            preparer=preparer,
        )

    async def aclose(self) -> None:
        """Stop the workers: queued jobs fail with Overloaded, running ones stop at a token."""
        workers, self._workers = self._workers, []
        await _stop(self._stopping, self._dispatcher, workers)
        await self._prep.aclose()

    async def count_text(self, text: str) -> int:
        """Tokens in generated text, with the model's tokenizer (no BOS, no special tokens)."""
        return await self._prep.count_text(text)

    async def count_tokens(self, request: ChatRequest) -> int:
        """The request's prompt tokens, exactly as generation would count them: the same
        template rendering and tokenizer, off the event loop and without taking a worker
        from generation. A prompt far too long to count is `ContextLengthExceeded`."""
        return await self._prep.count(request, self._template_defaults(request))

    def render_prompt(self, request: ChatRequest) -> str:
        """The prompt text the engine tokenizes for `request`."""
        return self._prep.render(request, self._template_defaults(request))

    async def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncGenerator[Event, None]:
        # Rendered, tokenized (a prompt that cannot fit is refused here) and its grammar
        # built off the event loop, before the job takes a place in the queue.
        prepared = await self._prep.prepare(request, self._template_defaults(request))
        plan = plan_sampling(request, n_vocab=self.info.n_vocab, grammar=prepared.grammar)
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
            prompt=prepared.prompt,
            plan=plan,
            emit=emit,
            cancel=cancel,
            think_budget=thinking_budget(self.card, request),
            # Thinking-2507's template ends the prompt inside an open think block.
            starts_thinking=prepared.starts_thinking,
            tokens=prepared.tokens,
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
