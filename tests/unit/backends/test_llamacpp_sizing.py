"""How a local model is loaded (`backends/llamacpp/sizing.py`): its context, stretched by RoPE
scaling only when the backend asks, and its instances sized to the machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.backends.llamacpp import sizing
from modelport.backends.llamacpp.sizing import load_spec, machine_instances, memory_available
from modelport.core.catalog import LlamaCppBackend, ModelCard

PATH = Path("model.gguf")


def card(context_length: int) -> ModelCard:
    return ModelCard(id="t/m", name="m", description="", context_length=context_length)


def test_the_context_is_capped_by_the_trained_one_unless_extended() -> None:
    plain = load_spec(LlamaCppBackend(path="x"), card(32768), path=PATH, trained=8192, threads=1)
    assert plain.n_ctx == 8192 and plain.extension == "none"
    assert "rope_scaling_type" not in plain.llama_kwargs()

    yarn = load_spec(
        LlamaCppBackend(path="x", context_extension="yarn"),
        card(32768),
        path=PATH,
        trained=8192,
        threads=1,
    )
    assert yarn.n_ctx == 32768
    kwargs = yarn.llama_kwargs()
    assert kwargs["rope_scaling_type"] == 2  # LLAMA_ROPE_SCALING_TYPE_YARN
    assert kwargs["rope_freq_scale"] == 0.25 and kwargs["yarn_orig_ctx"] == 8192


def test_an_extension_within_the_trained_context_changes_nothing() -> None:
    spec = load_spec(
        LlamaCppBackend(path="x", n_ctx=4096, context_extension="yarn"),
        card(32768),
        path=PATH,
        trained=8192,
        threads=1,
    )
    assert spec.n_ctx == 4096 and spec.extension == "none"
    assert "rope_freq_scale" not in spec.llama_kwargs()


def test_instances_follow_the_cpus_and_the_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sizing, "usable_cpus", lambda: 16)
    monkeypatch.setattr(sizing, "memory_available", lambda: 64 << 30)
    assert machine_instances(1, 1 << 30) == sizing.MAX_AUTO_INSTANCES
    assert machine_instances(4, 1 << 30) == 4  # 16 CPUs, 4 threads each
    # Half of 4 GiB left holds two more 1 GiB instances beside the first.
    monkeypatch.setattr(sizing, "memory_available", lambda: 4 << 30)
    assert machine_instances(1, 1 << 30) == 3
    monkeypatch.setattr(sizing, "memory_available", lambda: 0)
    assert machine_instances(1, 1 << 30) == 1
    monkeypatch.setattr(sizing, "usable_cpus", lambda: 2)
    monkeypatch.setattr(sizing, "memory_available", lambda: None)
    assert machine_instances(1, 1 << 30) == 2
    assert machine_instances(4, 1 << 30) == 1


def test_memory_available_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   1000 kB\n")
    assert memory_available(meminfo) == 1000 * 1024
    assert memory_available(tmp_path / "absent") is None
