"""One engine instance: a thread that owns one `llama_cpp.Llama` and serves the jobs its
dispatcher (dispatch.py) hands it.

A `Llama` is not thread-safe (two threads on one object segfault), so only its worker thread
ever touches it: loading, evaluating the prompt (in chunks of `EVAL_CHUNK` tokens, so that a
cancelled job stops within one), sampling, detokenizing. The prompt comes tokenized (prepare.py
does it with a `VocabCounter`, a vocabulary-only copy of its own). Results
go back to the asyncio side through the job's `emit` callback as `Ready`, `Piece`, `Done` or
`Failed` messages; nothing else is shared with the event loop (the running token counts travel
in the messages). ctypes releases the GIL inside llama.cpp, so instances run in parallel.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import msgspec
import numpy as np
import numpy.typing as npt
from llama_cpp.llama_grammar import LlamaGrammar

from modelport.backends.llamacpp.dispatch import Dispatcher, Slot
from modelport.backends.llamacpp.logprobs import MAX_TOP, LogprobAligner, TokenScorer
from modelport.backends.llamacpp.sampling import SamplingPlan, logits_processors
from modelport.backends.llamacpp.template import ChatTemplate
from modelport.backends.llamacpp.text_stream import TextAssembler
from modelport.core.catalog import ConfigError
from modelport.core.errors import (
    ContextLengthExceeded,
    InternalError,
    InvalidRequest,
    ModelportError,
    Overloaded,
)
from modelport.core.events import Usage
from modelport.core.types import ChatRequest, FinishReason, TokenLogprob

log = logging.getLogger(__name__)

# `Llama(verbose=False)` points the process's stdout and stderr at /dev/null while it loads and
# restores them afterwards; two threads doing that at once can leave them on /dev/null for
# good (every later log line and traceback lost). Instances therefore load one at a time.
_LOAD_LOCK = threading.Lock()

# GGUF `tokenizer.ggml.pre` values of tokenizers whose Hugging Face originals normalise to NFC.
_NFC_PRETOKENIZERS = frozenset({"qwen2"})

# Prompt tokens evaluated at a time: a cancelled job stops at the next chunk (about half a
# second on SmolLM2 with one thread). Measured: no slower than llama-cpp-python's 512.
# Chunks start at multiples of EVAL_CHUNK, whatever the KV cache holds: see `_evaluate_prompt`.
EVAL_CHUNK = 64


# llama.cpp's rope scaling types (llama.h: LLAMA_ROPE_SCALING_TYPE_*).
_ROPE_SCALING = {"linear": 1, "yarn": 2}


@dataclass(frozen=True)
class LoadSpec:
    path: Path
    n_ctx: int
    n_threads: int
    chat_template: str | None  # overrides the GGUF's own
    extension: str = "none"  # "yarn" or "linear": RoPE scaling from `trained` to `n_ctx`
    trained: int = 0  # the context the model was trained with
    n_batch: int = 512
    n_threads_batch: int = 0  # 0: n_threads

    def llama_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "n_threads_batch": self.n_threads_batch or self.n_threads,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_batch,
        }
        if self.extension in _ROPE_SCALING and self.n_ctx > self.trained > 0:
            kwargs.update(
                rope_scaling_type=_ROPE_SCALING[self.extension],
                rope_freq_scale=self.trained / self.n_ctx,
                yarn_orig_ctx=self.trained,
            )
        return kwargs


@dataclass(frozen=True)
class ModelInfo:
    """What the engine learns from a loaded instance."""

    n_ctx: int
    n_vocab: int
    template: ChatTemplate
    bos_id: int
    add_bos: bool
    # Qwen2/2.5/3 tokenizers apply Unicode NFC before BPE; llama.cpp does not, so the engine
    # normalises the prompt for them (otherwise "e" + U+0301 reaches the model as other tokens).
    nfc: bool = False
    # Single-token <think> / </think> (Qwen3) and the tokens that close a think block the way
    # Qwen3's template writes it ("\n</think>\n\n"); None for models without them.
    think_open: int | None = None
    think_close: int | None = None
    think_close_text: tuple[int, ...] = ()
    # What one more instance costs: its KV cache at n_ctx (f16 keys and values), plus a
    # tenth for buffers.
    instance_bytes: int = 0


# Messages from a worker to the stream that submitted the job, in this order:
# Ready, Piece*, Done -- or Failed at any point. msgspec Structs: a Piece goes out for every
# token, and a Struct is the cheapest object to build and to hand across.
class Ready(msgspec.Struct, frozen=True, gc=False):
    prompt_tokens: int
    cached_tokens: int = 0  # of the prompt, taken from the KV cache


class Piece(msgspec.Struct, frozen=True, gc=False):
    """One sampled token's worth of output, with the running counts once it is sampled."""

    text: str  # empty while text is held back (a partial character or stop string)
    logprobs: tuple[TokenLogprob, ...] = ()
    generated: int = 0  # completion tokens so far, this one included
    reasoning: int = 0  # of which inside the think block


class Done(msgspec.Struct, frozen=True):
    usage: Usage
    finish_reason: FinishReason
    native_finish_reason: str
    stop_sequence: str | None = None


class Failed(msgspec.Struct, frozen=True):
    error: ModelportError


WorkerMessage = Ready | Piece | Done | Failed


@dataclass
class Job:
    request: ChatRequest
    prompt: str  # rendered by the engine with the chat template
    plan: SamplingPlan
    emit: Callable[[WorkerMessage], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    think_budget: int | None = None  # reasoning tokens allowed before the block is closed
    starts_thinking: bool = False  # the prompt ends inside an open think block
    tokens: list[int] | None = None  # the prompt's tokens, when the engine has them already

    def is_cancelled(self) -> bool:
        return self.cancel.is_set()


def _instance_bytes(metadata: dict[str, str], n_ctx: int) -> int:
    """An instance's KV cache and buffers, from the GGUF's hyperparameters (0: unknown)."""
    arch = metadata.get("general.architecture", "")
    try:
        layers = int(metadata[f"{arch}.block_count"])
        embedding = int(metadata[f"{arch}.embedding_length"])
        heads = int(metadata[f"{arch}.attention.head_count"])
        kv_heads = int(metadata.get(f"{arch}.attention.head_count_kv", heads))
        head_size = int(metadata.get(f"{arch}.attention.key_length", embedding // heads))
    except (KeyError, ValueError, ZeroDivisionError):
        return 0
    kv = n_ctx * layers * 2 * kv_heads * head_size * 2
    return kv + kv // 10


def token_bytes(vocab: Any, token: int, *, special: bool) -> bytes:
    # Llama.detokenize uses a fixed 32-byte buffer and mangles longer pieces; size it here.
    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, special)
        if n >= 0:
            return buffer.raw[:n]
        size = -n


class Worker:
    """Loads the model in its own thread, then serves the jobs the dispatcher gives it until
    its inbox reads None."""

    def __init__(
        self,
        spec: LoadSpec,
        dispatcher: Dispatcher[Job],
        stopping: threading.Event,
        name: str,
    ) -> None:
        self._spec = spec
        self._dispatcher = dispatcher
        self.slot: Slot[Job] = Slot(name)
        self._stopping = stopping
        self.loaded: Future[ModelInfo] = Future()
        # A daemon thread: a process that exits without aclose() must not hang on it.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._pieces: dict[int, bytes] = {}
        self._labels: dict[int, bytes] = {}
        # How many leading positions of the KV cache hold what evaluating them as a prompt
        # from scratch would (whole EVAL_CHUNK chunks of a prompt; never generated tokens).
        self._canonical = 0
        # The last prompt evaluated in full, and the logits of its last token: the same prompt
        # again (a retry, another sample) reuses all of it, since every one of its positions
        # was computed as a cold evaluation computes them.
        self._last_prompt: list[int] = []
        self._prompt_logits: npt.NDArray[np.float32] | None = None

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            llm, info = self._load()
        except BaseException as exc:
            self.loaded.set_exception(exc)
            return
        self.loaded.set_result(info)
        try:
            job = self._dispatcher.next_task(self.slot)
            while True:
                if job is None:
                    job = self.slot.inbox.get()
                    if job is None:
                        return
                final = self._serve(llm, info, job)
                # Free first, then say "done": a client that sends its next turn the moment
                # it has the answer finds this instance (and its cache) idle.
                served, job = job, self._dispatcher.next_task(self.slot)
                if final is not None:
                    served.emit(final)
        finally:
            llm.close()

    def _load(self) -> tuple[llama_cpp.Llama, ModelInfo]:
        spec = self._spec
        try:
            with _LOAD_LOCK:
                kwargs = spec.llama_kwargs()
                llm = llama_cpp.Llama(model_path=str(spec.path), verbose=False, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"llama.cpp cannot load {str(spec.path)!r}: {exc}") from None
        try:
            source = spec.chat_template or llm.metadata.get("tokenizer.chat_template")
            if not source:
                raise ConfigError(
                    f"{str(spec.path)!r} has no chat template: set chat_template in its "
                    f"llamacpp backend configuration"
                )
            vocab = llm._model.vocab
            bos_id, eos_id = int(llm.token_bos()), int(llm.token_eos())
            template = ChatTemplate(
                source,
                bos_token=self._special_text(vocab, bos_id),
                eos_token=self._special_text(vocab, eos_id),
            )
            think_open = self._single_token(llm, "<think>")
            think_close = self._single_token(llm, "</think>")
            close_text: tuple[int, ...] = ()
            if think_open is not None and think_close is not None:
                close_text = tuple(llm.tokenize(b"\n</think>\n\n", add_bos=False, special=True))
            info = ModelInfo(
                # llama.cpp rounds the context up (to a multiple of 256): keep the limit asked for.
                n_ctx=min(spec.n_ctx, int(llm.n_ctx())),
                n_vocab=int(llm.n_vocab()),
                template=template,
                bos_id=bos_id,
                add_bos=bool(llm._model.add_bos_token()),
                nfc=llm.metadata.get("tokenizer.ggml.pre") in _NFC_PRETOKENIZERS,
                think_open=think_open if close_text else None,
                think_close=think_close if close_text else None,
                think_close_text=close_text,
                instance_bytes=_instance_bytes(llm.metadata, spec.n_ctx),
            )
        except BaseException:
            llm.close()
            raise
        return llm, info

    @staticmethod
    def _single_token(llm: llama_cpp.Llama, text: str) -> int | None:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        return int(ids[0]) if len(ids) == 1 else None

    @staticmethod
    def _special_text(vocab: Any, token: int) -> str:
        if token < 0:
            return ""
        return token_bytes(vocab, token, special=True).decode("utf-8", errors="replace")

    def _serve(self, llm: llama_cpp.Llama, info: ModelInfo, job: Job) -> Done | Failed | None:
        """Runs `job`; returns its last message (Done or Failed), which the caller sends once
        this instance is free again, or None for a job cancelled before it began."""
        if job.cancel.is_set():
            return None
        if self._stopping.is_set():
            return Failed(Overloaded("The local engine is shutting down.", retry_after=5.0))
        try:
            return self._generate(llm, info, job)
        except ModelportError as exc:
            return Failed(exc)
        except Exception as exc:
            log.exception("llama.cpp generation failed")
            return Failed(InternalError(f"llama.cpp engine failed: {type(exc).__name__}: {exc}"))

    def _tokenize(self, llm: llama_cpp.Llama, info: ModelInfo, prompt: str) -> list[int]:
        return prompt_tokens(llm, info, prompt)

    def _generate(self, llm: llama_cpp.Llama, info: ModelInfo, job: Job) -> Done | Failed:
        request, plan = job.request, job.plan
        tokens = job.tokens if job.tokens is not None else self._tokenize(llm, info, job.prompt)
        n_prompt = len(tokens)
        if n_prompt == 0:
            raise InvalidRequest("The messages rendered to an empty prompt.", param="messages")
        if n_prompt >= info.n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {info.n_ctx} tokens. "
                f"However, your messages resulted in {n_prompt} tokens.",
                param="messages",
                prompt_tokens=n_prompt,
                limit=info.n_ctx,
            )
        room = info.n_ctx - n_prompt
        max_tokens, limit_reason = request.max_output_tokens, "length"
        if max_tokens is None or max_tokens > room:
            # A documented choice: an output limit beyond the context is clamped, not refused.
            max_tokens, limit_reason = room, "context_full"
        grammar = self._grammar(plan.grammar)
        resume_grammar = (
            grammar if plan.resume_grammar == plan.grammar else self._grammar(plan.resume_grammar)
        )
        cached = self._reusable_prefix(llm, tokens)

        job.emit(Ready(n_prompt, cached))
        if not self._evaluate_prompt(llm, tokens, job, cached):
            return self._cancelled(llm, tokens, job)
        llm.set_seed(plan.seed)
        processors = logits_processors(plan)
        vocab = llm._model.vocab
        assembler = TextAssembler(plan.stop)
        scorer = aligner = None
        if request.logprobs:
            scorer = TokenScorer(lambda t: self._piece(vocab, t), lambda t: self._label(vocab, t))
            aligner = LogprobAligner()
        top_k = min(request.top_logprobs or 0, MAX_TOP)
        generated = 0
        output = bytearray()  # what the KV cache holds after the prompt, for the dispatcher
        finish: tuple[FinishReason, str] | None = None
        thinking = ThinkTracker(info, job.starts_thinking, job.think_budget)

        def sample(sequence: list[int], resumed: bool) -> Generator[int, Any, None]:
            # Each call starts the grammar afresh: after the engine closed a think block, the
            # grammar for the answer alone.
            return llm.generate(
                sequence,
                logits_processor=llama_cpp.LogitsProcessorList(processors) if processors else None,
                grammar=resume_grammar if resumed else grammar,
                **plan.generate_kwargs(),
            )

        tokens_out = self._with_budget(sample, tokens, thinking, info)
        try:
            for token, forced in tokens_out:
                generated += 1
                if job.cancel.is_set() or self._stopping.is_set():
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = ("stop", "eos")
                    break
                start = assembler.decoded
                piece = self._piece(vocab, token)
                output += piece
                text = assembler.feed(piece)
                entries: tuple[TokenLogprob, ...] = ()
                if scorer is not None and aligner is not None and not forced:
                    # Until the next eval, llama.cpp's last logits row is the one this token
                    # was sampled from (samplers work on a copy, so it is still raw).
                    entry = scorer.entry(self._last_logits(llm, info.n_vocab), token, top_k)
                    aligner.add(entry, start, assembler.end)
                    if assembler.stopped:
                        entries = aligner.cut(assembler.released)
                    else:
                        entries = aligner.release(assembler.released)
                # Every token, text or not: the stream's running usage counts each one.
                job.emit(Piece(text, entries, generated, thinking.reasoning_tokens))
                if assembler.stopped:
                    finish = ("stop", "stop_sequence")
                    break
                if generated >= max_tokens:
                    finish = ("length", limit_reason)
                    break
        finally:
            tokens_out.close()
            # What a next prompt can reuse: the prompt's whole chunks (generated tokens are
            # evaluated one at a time, which ggml computes differently; see _evaluate_prompt).
            self.slot.cached_text = job.prompt
        if finish is None:
            return self._stopped()
        tail = assembler.finish()
        rest = aligner.finish(assembler.released) if aligner is not None else ()
        if tail or rest:
            job.emit(Piece(tail, rest, generated, thinking.reasoning_tokens))
        usage = Usage(n_prompt, generated, thinking.reasoning_tokens, cached_tokens=cached)
        return Done(usage, finish[0], finish[1], assembler.matched)

    def _stopped(self) -> Failed:
        # Cancelled: the consumer is usually gone, but an engine shutdown has one waiting.
        stopping = self._stopping.is_set()
        reason = "The local engine is shutting down." if stopping else "Generation was cancelled."
        return Failed(Overloaded(reason, retry_after=5.0))

    def _cancelled(self, llm: llama_cpp.Llama, tokens: list[int], job: Job) -> Failed:
        """A job cancelled while its prompt was evaluated: the cache holds what was done."""
        done = tokens[: self._canonical]
        text = llm.detokenize(done, special=True).decode("utf-8", errors="ignore")
        self.slot.cached_text = text
        return self._stopped()

    def _evaluate_prompt(
        self, llm: llama_cpp.Llama, tokens: list[int], job: Job, reuse: int
    ) -> bool:
        """Evaluate the prompt past the `reuse` tokens `_reusable_prefix` found in the cache,
        `EVAL_CHUNK` tokens at a time, checking between chunks whether
        the job was cancelled (False: it was; the cache keeps the chunks done). `generate`
        then finds the whole prompt evaluated and samples at once from its logits.

        The same prompt gives the same logits whatever the cache held before, so that greedy
        output and seeded sampling repeat (an instance's history must not show through).
        ggml does not compute a token's keys and values the same in every batch shape: a
        token evaluated alone (as every generated token is) differs in the last bits from
        the same token evaluated in a batch, and over a few hundred tokens that flips greedy
        choices. So chunks always start at multiples of EVAL_CHUNK, as from scratch, and
        only whole chunks of an earlier prompt are reused: every position the prompt's
        logits depend on is computed exactly as a cold evaluation computes it. The cost: up
        to EVAL_CHUNK - 1 tokens evaluated again, and the previous answer of a conversation
        read as part of its next prompt (docs/performance.md)."""
        n = len(tokens)
        if reuse == n and llm._ctx.kv_cache_seq_rm(-1, n, -1):
            llm.n_tokens = n
            assert self._prompt_logits is not None
            # Into the context's output row, where the sampler reads: as after the prompt.
            ctypes.memmove(
                llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1),
                self._prompt_logits.ctypes.data,
                self._prompt_logits.nbytes,
            )
            return True
        self._last_prompt, self._prompt_logits = [], None
        start = min(reuse, n - 1)
        start -= start % EVAL_CHUNK
        if start > 0 and llm._ctx.kv_cache_seq_rm(-1, start, -1):
            llm.n_tokens = start
        else:
            llm.reset()  # type: ignore[no-untyped-call]
            start = 0
        self._canonical = start
        for begin in range(start, n, EVAL_CHUNK):
            if job.cancel.is_set() or self._stopping.is_set():
                return False
            end = min(begin + EVAL_CHUNK, n)
            llm.eval(tokens[begin:end])
            if end - begin == EVAL_CHUNK:
                self._canonical = end
        self._last_prompt = list(tokens)
        self._prompt_logits = self._last_logits(llm, int(llm.n_vocab())).copy()
        return True

    def _repeats_last_prompt(self, llm: llama_cpp.Llama, tokens: list[int]) -> bool:
        """Whether `tokens` is the last prompt evaluated in full, still in the KV cache."""
        n = len(tokens)
        return (
            self._prompt_logits is not None
            and self._last_prompt == tokens
            and llm.n_tokens >= n
            and self._common_prefix(llm, tokens) == n
        )

    @staticmethod
    def _common_prefix(llm: llama_cpp.Llama, tokens: list[int]) -> int:
        held = llm.input_ids[: llm.n_tokens]
        n = min(len(held), len(tokens))
        if n == 0:
            return 0
        differs = np.flatnonzero(held[:n] != np.asarray(tokens[:n], dtype=held.dtype))
        return int(differs[0]) if differs.size else n

    @staticmethod
    def _with_budget(
        sample: Callable[[list[int], bool], Generator[int, Any, None]],
        prompt: list[int],
        thinking: ThinkTracker,
        info: ModelInfo,
    ) -> Generator[tuple[int, bool], None, None]:
        """The tokens of the answer as (token, forced) pairs. When the thinking budget is
        spent inside a think block, the block is closed by writing Qwen's closing tokens
        (forced=True) and sampling goes on from there: llama.cpp reuses the KV cache, so only
        the closing tokens are evaluated anew."""
        history = list(prompt)
        resumed = False
        while True:
            if thinking.must_close():
                for token in info.think_close_text:
                    thinking.observe(token)
                    history.append(token)
                    yield token, True
                resumed = True
            tokens = sample(history, resumed)
            try:
                for token in tokens:
                    thinking.observe(token)
                    history.append(token)
                    yield token, False
                    if thinking.must_close():
                        break
                else:
                    return
            finally:
                tokens.close()

    def _reusable_prefix(self, llm: llama_cpp.Llama, tokens: list[int]) -> int:
        """How many prompt tokens `_evaluate_prompt` will take from the KV cache: all of them
        when it repeats the last prompt, else the whole chunks shared with an earlier one."""
        if self._repeats_last_prompt(llm, tokens):
            return len(tokens)
        common = min(self._common_prefix(llm, tokens), self._canonical, len(tokens) - 1)
        return max(common - common % EVAL_CHUNK, 0)

    def _piece(self, vocab: Any, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_bytes(vocab, token, special=False)
        return piece

    def _label(self, vocab: Any, token: int) -> bytes:
        label = self._labels.get(token)
        if label is None:
            label = self._labels[token] = token_bytes(vocab, token, special=True)
        return label

    @staticmethod
    def _last_logits(llm: llama_cpp.Llama, n_vocab: int) -> npt.NDArray[np.float32]:
        pointer = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        if not pointer:
            raise InternalError("llama.cpp has no logits for the last token")
        return np.ctypeslib.as_array(pointer, shape=(n_vocab,))

    @staticmethod
    def _grammar(gbnf: str | None) -> LlamaGrammar | None:
        # llama.cpp's parser has checked it (prepare.py): a grammar it rejects would put a
        # NULL sampler in the chain and crash the process.
        return None if gbnf is None else LlamaGrammar.from_string(gbnf)


class ThinkTracker:
    """Follows the think block through the generated tokens: counts reasoning tokens (the
    block's tokens, its tags included) and says when the budget (tokens inside the block,
    tags excluded) is spent."""

    def __init__(self, info: ModelInfo, inside: bool, budget: int | None) -> None:
        self._open = info.think_open
        self._close = info.think_close
        self.inside = inside and self._close is not None
        self._budget = budget if self._close is not None else None
        self._spent = 0
        self.reasoning_tokens = 0

    def observe(self, token: int) -> None:
        if not self.inside:
            if token == self._open and self._open is not None:
                self.inside = True
                self.reasoning_tokens += 1
            return
        self.reasoning_tokens += 1
        if token == self._close:
            self.inside = False
        else:
            self._spent += 1

    def must_close(self) -> bool:
        return self.inside and self._budget is not None and self._spent >= self._budget


def prompt_tokens(llm: llama_cpp.Llama, info: ModelInfo, prompt: str) -> list[int]:
    """The prompt's tokens as the engine feeds them. special=True: the template's control
    tokens (<|im_start|>…) map to their ids; BOS is added by hand, per the GGUF, unless the
    template already wrote it."""
    tokens = list(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
    if info.add_bos and info.bos_id >= 0 and tokens[:1] != [info.bos_id]:
        tokens.insert(0, info.bos_id)
    return tokens


def piece_tokens(
    llm: llama_cpp.Llama, info: ModelInfo, pieces: list[tuple[str, bool]]
) -> list[int]:
    """The prompt's tokens from its pieces (`Literals.pieces`): special tokens' strings parsed,
    the text between them tokenized as text, as llama.cpp cuts a prompt when it parses special
    tokens, but with the client's control-token strings left as text."""
    tokens: list[int] = []
    for text, special in pieces:
        tokens.extend(llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))
    if info.add_bos and info.bos_id >= 0 and tokens[:1] != [info.bos_id]:
        tokens.insert(0, info.bos_id)
    return tokens


class VocabCounter:
    """Counts prompt tokens with the model's own tokenizer, beside the workers: a vocab-only
    `Llama` (no weights, a fraction of a second to load), used by one thread at a time."""

    def __init__(self, path: Path, info: ModelInfo) -> None:
        with _LOAD_LOCK:
            self._llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        self._info = info
        self._lock = threading.Lock()

    def count(self, prompt: str) -> int:
        return len(self.tokens(prompt))

    def tokens(self, prompt: str) -> list[int]:
        with self._lock:
            return prompt_tokens(self._llm, self._info, prompt)

    def piece_tokens(self, pieces: list[tuple[str, bool]]) -> list[int]:
        with self._lock:
            return piece_tokens(self._llm, self._info, pieces)

    def grammar_parses(self, gbnf: str) -> bool:
        """Whether llama.cpp's grammar parser accepts `gbnf` (start rule `root`)."""
        with self._lock:
            grammar = llama_cpp.llama_sampler_init_grammar(
                self._llm._model.vocab, gbnf.encode(), b"root"
            )
            if not grammar:
                return False
            llama_cpp.llama_sampler_free(grammar)
            return True

    def vocabulary_bounds(self) -> tuple[int, list[tuple[str, int]], set[str]]:
        """What bounds a prompt's token count from below, read from the vocabulary: the most
        bytes one token stands for (no prompt has fewer tokens than its UTF-8 size over
        this), and the texts llama.cpp reads as special tokens (control and user-defined),
        each with the most times it occurs in one special token's text (a prompt has at least
        as many tokens as its occurrences of the text, over that). Also the control tokens'
        texts, which client text may not produce (`prompt_literals.py`)."""
        with self._lock:
            vocab = self._llm._model.vocab
            special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
            size = 256
            buffer = ctypes.create_string_buffer(size)
            longest = 0
            texts: set[str] = set()
            control: set[str] = set()
            for token in range(int(self._llm.n_vocab())):
                n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, True)
                if n < 0:
                    n = len(token_bytes(vocab, token, special=True))
                longest = max(longest, n)
                attributes = llama_cpp.llama_vocab_get_attr(vocab, token)
                if attributes & special:
                    raw = llama_cpp.llama_vocab_get_text(vocab, token)
                    if raw:
                        text = raw.decode("utf-8", errors="ignore")
                        texts.add(text)
                        if attributes & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
                            control.add(text)
        counts = [(text, max(other.count(text) for other in texts)) for text in texts]
        return longest, counts, control

    def count_text(self, text: str) -> int:
        with self._lock:
            return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def close(self) -> None:
        with self._lock:
            self._llm.close()
