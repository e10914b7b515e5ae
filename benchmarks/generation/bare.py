"""Starting and driving the bare llama-cpp-python process (bare_engine.py) from the runner.

The child is started once and kept for the whole run, beside the server, so both sides keep
their models loaded and their prompt caches warm the same way. Calls block while the child
generates; the runner calls them from a thread so its event loop stays free.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from benchmarks.generation.timing import Stream
from benchmarks.procs import BenchError, cpu_seconds, log_tail, rss_bytes
from benchmarks.targets import ROOT, clean_env

LOAD_TIMEOUT_S = 120.0


class BareProcess:
    def __init__(self, config: Path, request_file: Path, log_path: Path, clients: int) -> None:
        """Start the child on the server's config file and the request body's file, with a
        `Llama` for each of `clients` concurrent clients."""
        self.log_path = log_path
        argv = [
            *(sys.executable, "-m", "benchmarks.generation.bare_engine"),
            *("--config", str(config), "--request", str(request_file)),
            *("--clients", str(clients)),
        ]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=clean_env({"OMP_WAIT_POLICY": "PASSIVE"}),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        try:
            ready = self._answer()
            self.prompt = str(ready["prompt"])
            self.prompt_tokens = int(ready["prompt_tokens"])
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        if self.process.stdin is None or self.process.stdout is None:
            raise BenchError("bare: the process has no pipes")
        return self.process.stdin, self.process.stdout

    def _answer(self) -> dict[str, Any]:
        line = self._pipes()[1].readline()
        if not line:
            self.process.wait(timeout=10)
            raise BenchError(
                f"bare llama-cpp-python exited with status {self.process.returncode}; its log "
                f"({self.log_path}) ends with:\n{self.log_tail()}"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, clients: int) -> list[Stream]:
        """`clients` generations at once (one per instance); blocks until all have ended."""
        stdin, _ = self._pipes()
        stdin.write(json.dumps({"clients": clients}).encode() + b"\n")
        stdin.flush()
        return [Stream.from_dict(item) for item in self._answer()["streams"]]

    def cpu_seconds(self) -> float:
        return cpu_seconds([self.pid])

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            stdin, _ = self._pipes()
            stdin.close()  # the child exits at the end of its input
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
