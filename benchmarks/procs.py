"""Server processes for the benchmark: starting, waiting until ready, stopping, and reading
their CPU time and memory from /proc (no psutil).

A server is a process tree: granian runs its worker in a child process, so CPU time is summed
over the whole tree and memory is read for the worker (the deepest process) and for the tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A benchmark step failed; the message says what and where to look."""


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, or "" if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ")".
    return text[text.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, parents before children."""
    children = _children_map()
    tree = [root]
    for pid in tree:
        tree.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the given processes (those still alive)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def maps_gguf(pid: int) -> bool:
    """Whether the process has a GGUF file mapped: a local model is loaded in it (llama.cpp
    memory-maps the weights)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return any(line.rstrip().endswith(".gguf") for line in maps)
    except OSError:
        return False


@dataclass
class Memory:
    worker_rss: int
    tree_rss: int
    # Processes of the tree with a local model loaded (a GGUF mapped).
    models_loaded: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "worker_rss_bytes": self.worker_rss,
            "tree_rss_bytes": self.tree_rss,
            "processes_with_a_local_model": self.models_loaded,
        }


@dataclass
class Server:
    """One started server process tree and its log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settle_tree(self) -> None:
        """Record the process tree once it is up (granian forks its worker after start)."""
        self.pids = process_tree(self.process.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids)

    def memory(self) -> Memory:
        worker = self.pids[-1] if self.pids else self.process.pid
        return Memory(
            rss_bytes(worker),
            sum(rss_bytes(pid) for pid in self.pids),
            sum(maps_gguf(pid) for pid in self.pids),
        )

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.process.returncode}; "
                f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # Our own session group: the worker must not outlive its parent.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for pid in self.pids[1:]:
            if _stat_fields(pid) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def start(
    name: str, argv: list[str], port: int, env: dict[str, str], log_dir: Path, cwd: Path
) -> Server:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, port, process, log_path)


def wait_for_port(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{server.name} did not listen on port {server.port} within {timeout:g}s")
