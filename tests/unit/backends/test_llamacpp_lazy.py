"""The local engine loads its model on first use: never before, once under concurrent first
requests, again after a failed load; and building it imports no llama.cpp at all."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.unit.backends.test_llamacpp import MODEL, card, complete, new_ctx, request

from modelport.backends.llamacpp import LlamaCppEngine
from modelport.backends.llamacpp.loaded import LoadedEngine
from modelport.backends.llamacpp.sizing import usable_cpus
from modelport.core.catalog import ConfigError, LlamaCppBackend
from modelport.core.collect import Completion
from modelport.core.errors import BackendUnavailable
from modelport.core.events import Start, Stop

pytestmark = pytest.mark.engine


def worker_threads(engine: LlamaCppEngine) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(engine.name + "#")]


def counting_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patches LoadedEngine.load to record each call; returns the record."""
    calls: list[int] = []
    load = LoadedEngine.load.__func__  # type: ignore[attr-defined]

    async def counted(cls: type[LoadedEngine], *args: object, **kwargs: object) -> LoadedEngine:
        calls.append(1)
        return await load(cls, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(LoadedEngine, "load", classmethod(counted))
    return calls


@pytest.mark.asyncio
async def test_an_unused_engine_has_no_threads_and_the_first_stream_loads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads = counting_loads(monkeypatch)
    engine = LlamaCppEngine(LlamaCppBackend(path=MODEL, name="lazy-a"), card(), default_threads=1)
    assert not engine.loaded
    assert worker_threads(engine) == []
    with pytest.raises(BackendUnavailable):
        engine.render_prompt(request())  # nothing to render with until it is loaded
    try:
        events = [event async for event in engine.stream(request(max_tokens=2), new_ctx())]
        assert isinstance(events[0], Start) and isinstance(events[-1], Stop)
        # Unset, the instances are sized to the machine: one per CPU (within its memory).
        assert engine.loaded and len(worker_threads(engine)) == usable_cpus()
        await complete(engine, request(max_tokens=1))
        assert len(loads) == 1
    finally:
        await engine.aclose()
    assert not engine.loaded


@pytest.mark.asyncio
async def test_concurrent_first_requests_load_the_model_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads = counting_loads(monkeypatch)
    config = LlamaCppBackend(path=MODEL, name="lazy-b", instances=2)
    engine = LlamaCppEngine(config, card(), default_threads=1)
    try:
        results = await asyncio.gather(
            complete(engine, request(max_tokens=2)),
            complete(engine, request(max_tokens=2)),
            engine.count_tokens(request(), local_only=True),
            engine.count_text("hello there"),
        )
        assert isinstance(results[0], Completion) and isinstance(results[1], Completion)
        assert isinstance(results[2], int) and results[2] > 0
        assert results[3] == 2
        assert len(loads) == 1
        assert len(worker_threads(engine)) == 2
    finally:
        await engine.aclose()
    assert worker_threads(engine) == []


@pytest.mark.asyncio
async def test_a_client_that_leaves_while_the_model_loads_does_not_abort_the_load() -> None:
    engine = LlamaCppEngine(LlamaCppBackend(path=MODEL, name="lazy-c"), card(), default_threads=1)
    try:
        impatient = asyncio.ensure_future(complete(engine, request(max_tokens=1)))
        patient = asyncio.ensure_future(complete(engine, request(max_tokens=1)))
        await asyncio.sleep(0)  # both wait for the load now
        impatient.cancel()
        done = await patient
        assert done.usage.completion_tokens == 1
        assert impatient.cancelled()
    finally:
        await engine.aclose()


@pytest.mark.asyncio
async def test_a_failed_load_fails_its_requests_and_the_next_request_tries_again(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "model.gguf"
    broken.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))  # a header and nothing else
    engine = LlamaCppEngine(LlamaCppBackend(path=str(broken)), card(), default_threads=1)
    first = await asyncio.gather(
        complete(engine, request()), complete(engine, request()), return_exceptions=True
    )
    assert all(isinstance(result, BackendUnavailable) for result in first)
    assert "could not load" in str(first[0]) and str(broken) not in str(first[0])
    assert not engine.loaded and worker_threads(engine) == []
    # The operator puts the right file in place: the next request loads it.
    await asyncio.to_thread(shutil.copyfile, _resolved(MODEL), broken)
    try:
        assert (await complete(engine, request(max_tokens=1))).usage.completion_tokens == 1
    finally:
        await engine.aclose()


@pytest.mark.asyncio
async def test_start_still_loads_at_once_and_reports_an_unusable_model(tmp_path: Path) -> None:
    engine = LlamaCppEngine(LlamaCppBackend(path=MODEL, name="lazy-d"), card(), default_threads=1)
    await engine.start()
    try:
        assert engine.loaded and engine.n_ctx == 2048
    finally:
        await engine.aclose()
    # Closed: requests are refused (nothing loads behind a shutdown) until start() again.
    with pytest.raises(BackendUnavailable):
        await complete(engine, request())
    assert not engine.loaded
    missing = LlamaCppEngine(
        LlamaCppBackend(path=str(tmp_path / "absent.gguf")), card(), default_threads=1
    )
    with pytest.raises(ConfigError, match="does not exist"):
        await missing.start()


def _resolved(path: str) -> Path:
    from modelport.backends.llamacpp.model_file import resolve_model_path

    return resolve_model_path(path)


def test_building_the_shipped_catalog_imports_no_engine_library() -> None:
    """The routes of the shipped catalog (whose local model has a llamacpp backend) are built
    without importing llama_cpp, numpy or jinja2: an idle gateway does not carry them."""
    code = (
        "import sys\n"
        "from modelport.backends.registry import build_routes\n"
        "from modelport.services.catalog import load_catalog\n"
        "from modelport.settings import load_settings\n"
        "settings = load_settings({})\n"
        "routes = build_routes(load_catalog(settings), settings)\n"
        "assert any(r.backend.name.startswith('llamacpp:') for rs in routes.values() for r in rs)\n"
        "print(sorted({'llama_cpp', 'numpy', 'jinja2'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
