"""How a local model is loaded: its context (stretched past what it was trained on when the
backend asks for RoPE scaling), and how many instances the machine runs in parallel when the
backend does not say.

- **Context.** `n_ctx` defaults to the card's `context_length`, capped by the context the model
  was trained with (its GGUF header says), since positions beyond it are ones the model never
  saw. `context_extension = "yarn"` (or `"linear"`) lifts the cap: llama.cpp scales the
  rotary positions by trained / n_ctx, YaRN keeping the short-range ones nearly as trained,
  so the model reads a prompt up to `n_ctx` long. What that costs, in memory and speed, is in
  docs/engine.md.
- **Instances.** One instance (one `Llama`, one thread) decodes one sequence at a time, and a
  small model's decoding is bound by one core: parallel requests need parallel instances.
  Unset, `instances` is the machine's usable CPUs over the threads per instance, at most
  `MAX_AUTO_INSTANCES`, and no more than half the memory available when the model loads can
  hold (each instance has its own KV cache and buffers, `ModelInfo.instance_bytes`).

No llama_cpp here: plain arithmetic and /proc.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelport.backends.llamacpp.worker import EVAL_CHUNK, LoadSpec
from modelport.core.catalog import ConfigError, LlamaCppBackend, ModelCard

MAX_AUTO_INSTANCES = 8
# Of the memory available when the first instance has loaded, the share further ones may take.
MEMORY_SHARE = 0.5


def load_spec(
    config: LlamaCppBackend, card: ModelCard, *, path: Path, trained: int | None, threads: int
) -> LoadSpec:
    """What each instance loads: the context is the card's, capped by the backend's `n_ctx`
    and, unless the backend extends it, by the model's trained context."""
    n_ctx = min(card.context_length, config.n_ctx or card.context_length)
    extension = config.context_extension
    if trained and n_ctx > trained:
        if extension == "none":
            n_ctx = trained
    else:
        extension = "none"  # nothing to stretch
    if extension != "none" and not trained:
        raise ConfigError(
            f"{card.id}: context_extension needs the model's trained context, which "
            f"{str(path)!r} does not state"
        )
    return LoadSpec(
        path=path,
        n_ctx=n_ctx,
        n_threads=threads,
        chat_template=config.chat_template,
        extension=extension,
        trained=trained or n_ctx,
        # Prompts are evaluated EVAL_CHUNK tokens at a time: a larger batch would only size
        # llama.cpp's compute buffers (attention scores: n_ctx x batch per head) for nothing.
        n_batch=EVAL_CHUNK,
        # A prompt is a batch: its matrix products split across threads (1.7x faster with 2
        # threads than 1 on a 2-core machine), and no token's result depends on how many.
        n_threads_batch=config.n_threads_batch or max(threads, usable_cpus()),
    )


def machine_instances(threads: int, instance_bytes: int) -> int:
    """Instances for a backend that does not set `instances`: one per `threads` usable CPUs,
    within `MAX_AUTO_INSTANCES` and the memory available."""
    by_cpu = max(1, usable_cpus() // max(threads, 1))
    count = min(by_cpu, MAX_AUTO_INSTANCES)
    available = memory_available()
    if available is not None and instance_bytes > 0:
        # The first instance is loaded already; the others share the budget.
        count = min(count, 1 + int(available * MEMORY_SHARE) // instance_bytes)
    return max(1, count)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes (Linux), None where it cannot be read."""
    try:
        with meminfo.open() as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
