"""The server side: the real `python -m modelport serve`, one worker, SQLite in a temporary data
directory, auth on with a key from `python -m modelport keys create`, and the shipped local
model's backends replaced by one llamacpp backend with the benchmark's threads and context
(and instances, if given; otherwise the engine's default, sized to the machine). The other
shipped models have no backends and load nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.generation.params import MODEL_ID, MODEL_PATH, Parameters
from benchmarks.probe import wait_until_healthy
from benchmarks.procs import Server, free_port, start, wait_for_port
from benchmarks.targets import ROOT, clean_env, create_key


def write_config(work: Path, params: Parameters) -> Path:
    """The server's configuration file (the bare side reads it too). Unless `--instances`
    says otherwise, the instances are the engine's default: sized to the machine, as a fresh
    install serves (fewer instances than clients: the rest wait in the queue)."""
    path = work / "modelport-generation.toml"
    instances = "" if params.instances is None else f"  instances = {params.instances}\n"
    path.write_text(
        f'[[models]]\nid = "{MODEL_ID}"\n\n'
        "  [[models.backends]]\n"
        '  kind = "llamacpp"\n'
        f'  path = "{MODEL_PATH}"\n'
        f"{instances}"
        f"  n_threads = {params.threads}\n"
        f"  n_ctx = {params.n_ctx}\n"
        # Every client of a batch gets a place; nothing is refused.
        f"  max_queue = {params.clients}\n"
    )
    return path


def start_server(work: Path, config: Path) -> tuple[Server, str]:
    """The server started on `config`, and an API key for it; returns once /health answers."""
    port = free_port()
    env = clean_env(
        {
            "MODELPORT_HOST": "127.0.0.1",
            "MODELPORT_PORT": str(port),
            "MODELPORT_WORKERS": "1",
            "MODELPORT_DATA_DIR": str(work / "server-data"),
            "MODELPORT_LOG_LEVEL": "warning",
            "MODELPORT_CONFIG": str(config),
        }
    )
    key = create_key(env, "bench-generation")
    server = start("server", [sys.executable, "-m", "modelport", "serve"], port, env, work, ROOT)
    try:
        # Loading the engine's instances can take a while on a cold disk.
        wait_for_port(server, timeout=180.0)
        wait_until_healthy(server, "/health")
    except BaseException:
        server.stop()
        raise
    return server, key
