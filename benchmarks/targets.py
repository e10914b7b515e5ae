"""The three things measured side by side, started for one run and stopped after it:

- `direct`: the mock upstream itself (the floor, and the mock's and wrk's ceiling);
- `bare`: the bare passthrough proxy in front of the mock (the Python ceiling);
- `gateway`: the real `python -m modelport serve`, one worker, SQLite in a temporary data
  directory, auth on with a key of a paying user made with the CLI, and the model
  `bench/mock`, whose only backend is the mock, beside the shipped catalog (whose local model
  stays configured: it loads on first use, and no request of the run uses it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.probe import wait_until_healthy
from benchmarks.procs import BenchError, Server, free_port, start, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench/mock"
BARE_KEY = "bench-bare-proxy-key"
# The shipped catalog's local model, left configured: the memory targets are measured with it
# configured and never used (it must not be loaded), as on a gateway that only proxies.
LOCAL_MODEL = "local/smollm2-135m-instruct"


@dataclass
class Target:
    name: str
    port: int
    key: str | None
    server: Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any MODELPORT_* setting of the caller's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelport", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def create_key(env: dict[str, str], name: str) -> str:
    """An API key made with the CLI against the data dir and config in `env`: a user's key
    with a balance that covers the whole run, so every request takes the billed path (a hold
    at admission, a settlement at the end), as a paying user's requests do. Builds without
    accounts (a side-by-side run of an older commit) get a plain key."""
    user = _cli(env, "users", "create", name, "--balance", "1000000000")
    if user.returncode == 0:
        created = _cli(env, "keys", "create", "--name", name, "--user", name)
    else:
        created = _cli(env, "keys", "create", "--name", name)
    lines = created.stdout.strip().splitlines()
    if created.returncode != 0 or not lines:
        raise BenchError(f"modelport keys create failed: {created.stderr.strip()}")
    return lines[-1].strip()


def start_mock(work: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.mock_upstream", "--port", str(port)]
    server = start("mock", argv, port, clean_env({}), work, ROOT)
    wait_for_port(server)
    wait_until_healthy(server, "/health")
    server.settle_tree()
    return server


def start_bare(work: Path, mock: Server) -> Target:
    port = free_port()
    argv = [
        *(sys.executable, "-m", "benchmarks.bare_proxy", "--port", str(port)),
        *("--upstream", f"{mock.url}/v1", "--key", BARE_KEY),
    ]
    server = start("bare", argv, port, clean_env({}), work, ROOT)
    wait_for_port(server)
    return Target("bare", port, BARE_KEY, server)


def _gateway_config(work: Path, mock: Server) -> Path:
    path = work / "modelport.toml"
    path.write_text(
        f'[[models]]\nid = "{MODEL}"\nname = "Benchmark mock"\n'
        'description = "The benchmark\'s mock upstream."\ncontext_length = 32768\n'
        'pricing = { input_per_1k = "0.0005", output_per_1k = "0.002" }\n\n'
        "  [[models.backends]]\n"
        '  kind = "openai_compat"\n'
        f'  url = "{mock.url}/v1"\n'
    )
    return path


def start_gateway(work: Path, mock: Server) -> Target:
    port = free_port()
    data_dir = work / "gateway-data"
    env = clean_env(
        {
            "MODELPORT_HOST": "127.0.0.1",
            "MODELPORT_PORT": str(port),
            "MODELPORT_WORKERS": "1",
            "MODELPORT_DATA_DIR": str(data_dir),
            "MODELPORT_LOG_LEVEL": "warning",
            "MODELPORT_CONFIG": str(_gateway_config(work, mock)),
        }
    )
    key = create_key(env, "bench")
    argv = [sys.executable, "-m", "modelport", "serve"]
    server = start("gateway", argv, port, env, work, ROOT)
    wait_for_port(server)
    wait_until_healthy(server, "/health")
    return Target("gateway", port, key, server)


def direct_target(mock: Server) -> Target:
    return Target("direct", mock.port, None, mock)
