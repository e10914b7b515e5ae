"""The bare side: llama-cpp-python with nothing of the server around it, in its own process.

`python -m benchmarks.generation.bare_engine --config FILE --request FILE` reads the server's
own configuration file and takes from it what the server's engine would use: the model file,
the number of instances, threads and context (as the engine computes it). It has modelport's
engine render the request body in FILE into the prompt text (a one-instance `LlamaCppEngine`,
started for that and closed), so the prompt is the server's to the byte; then it loads that
many `Llama` objects with the worker's arguments, tokenizes by the worker's rule and samples
with the same `Llama.generate` arguments (greedy). What it measures is the same work minus the
server: no HTTP, no event loop, no dispatcher, no thread hops.

Protocol (JSON lines): once loaded it writes `{"prompt": TEXT, "prompt_tokens": N}`; each line
`{"clients": K}` on stdin runs K generations at once, one thread and one `Llama` each (as the
server's instances work), and answers `{"streams": [...]}`. It exits at the end of stdin.
Anything llama.cpp prints goes to stderr: stdout carries only the protocol.

OMP_WAIT_POLICY=PASSIVE must be in the environment before llama_cpp is imported (the parent
sets it, as the server's CLI does for itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import llama_cpp
import msgspec

from benchmarks.generation.params import MODEL_ID
from benchmarks.generation.timing import Stream
from modelport.backends.llamacpp.engine import LlamaCppEngine
from modelport.backends.llamacpp.model_file import read_train_context, resolve_model_path
from modelport.backends.llamacpp.sampling import plan_sampling
from modelport.backends.llamacpp.sizing import load_spec
from modelport.core.catalog import LlamaCppBackend
from modelport.core.types import ChatRequest
from modelport.protocols.openai.decode import decode_chat_request
from modelport.services.catalog import load_catalog
from modelport.settings import load_settings


@dataclass(frozen=True)
class Setup:
    """What the server's configuration and engine make of the request."""

    path: Path
    llama_kwargs: dict[str, Any]  # the worker's constructor arguments (context, threads, batch)
    request: ChatRequest
    prompt: str


@dataclass(frozen=True)
class Work:
    """One generation's inputs, the same for every call."""

    prompt: str
    max_tokens: int
    kwargs: dict[str, Any]  # Llama.generate's sampling arguments


async def _setup(config: Path, body: bytes) -> Setup:
    """Read the config as the server does, and let a real engine render the prompt: copying
    the rendering here would measure a prompt the server might no longer send."""
    settings = load_settings({"MODELPORT_CONFIG": str(config)})
    card = load_catalog(settings).get(MODEL_ID)
    if card is None or not card.backends or not isinstance(card.backends[0], LlamaCppBackend):
        raise SystemExit(f"{config}: {MODEL_ID} has no llamacpp backend")
    backend = card.backends[0]
    request, _ = decode_chat_request(body)
    engine = LlamaCppEngine(
        msgspec.structs.replace(backend, instances=1), card, default_threads=settings.llama_threads
    )
    await engine.start()
    try:
        prompt = engine.render_prompt(request)
    finally:
        await engine.aclose()
    path = resolve_model_path(backend.path)
    threads = backend.n_threads or settings.llama_threads
    spec = load_spec(backend, card, path=path, trained=read_train_context(path), threads=threads)
    return Setup(path=path, llama_kwargs=spec.llama_kwargs(), request=request, prompt=prompt)


def tokenize(llm: llama_cpp.Llama, prompt: str) -> list[int]:
    """The prompt's tokens, by the same rule as the server's worker."""
    tokens = list(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
    bos = int(llm.token_bos())
    if llm._model.add_bos_token() and bos >= 0 and tokens[:1] != [bos]:
        tokens.insert(0, bos)
    return tokens


def generate(llm: llama_cpp.Llama, work: Work) -> Stream:
    """One generation as a plain llama-cpp-python program streams it, timed from the call."""
    vocab = llm._model.vocab
    started = time.perf_counter()
    tokens = tokenize(llm, work.prompt)
    first = last = 0.0
    generated = 0
    finish = "length"
    pieces: list[bytes] = []
    tokens_out = llm.generate(tokens, **work.kwargs)
    try:
        for token in tokens_out:
            generated += 1
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            pieces.append(llm.detokenize([token]))
            last = time.perf_counter()
            if not first:
                first = last
            if generated >= work.max_tokens:
                break
    finally:
        tokens_out.close()
    if not pieces:  # no text at all: zero-length timings rather than nonsense
        first = last = time.perf_counter()
    return Stream(
        started=started,
        first=first,
        last=last,
        completion_tokens=generated,
        finish_reason=finish,
        prompt_tokens=len(tokens),
        text=b"".join(pieces).decode("utf-8", errors="replace"),
    )


def run_batch(models: list[llama_cpp.Llama], work: Work, clients: int) -> list[Stream]:
    """`clients` generations at once, one thread and one model each, released together."""
    if clients > len(models):
        raise ValueError(f"{clients} clients but only {len(models)} instances")
    results: list[Stream | BaseException | None] = [None] * clients
    gate = threading.Barrier(clients)

    def client(index: int) -> None:
        try:
            gate.wait()
            results[index] = generate(models[index], work)
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    streams: list[Stream] = []
    for result in results:
        if not isinstance(result, Stream):
            raise RuntimeError(f"a bare generation failed: {result!r}")
        streams.append(result)
    return streams


def _protocol_out() -> TextIO:
    """A private copy of stdout for the protocol; fd 1 itself goes to stderr from here on."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generation.bare_engine")
    parser.add_argument("--config", type=Path, required=True, help="the server's config file")
    parser.add_argument("--request", type=Path, required=True, help="the request body (JSON)")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients (a Llama each)")
    args = parser.parse_args(argv)
    out = _protocol_out()
    setup = asyncio.run(_setup(args.config, args.request.read_bytes()))
    # The worker's constructor arguments (modelport/backends/llamacpp/worker.py, sizing.py).
    models = [
        llama_cpp.Llama(model_path=str(setup.path), verbose=False, **setup.llama_kwargs)
        for _ in range(max(1, args.clients))
    ]
    plan = plan_sampling(setup.request, n_vocab=int(models[0].n_vocab()))
    work = Work(setup.prompt, setup.request.max_output_tokens or 1, plan.generate_kwargs())
    ready = {"prompt": setup.prompt, "prompt_tokens": len(tokenize(models[0], setup.prompt))}
    out.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        streams = run_batch(models, work, int(command["clients"]))
        out.write(json.dumps({"streams": [s.as_dict() for s in streams]}) + "\n")
    for model in models:
        model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
