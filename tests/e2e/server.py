"""Starting the real server in a subprocess, as `modelport serve` does for users."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RunningServer:
    """`python -m modelport serve` on a free port with its own data dir; the admin key it
    prints on first start is captured from stdout."""

    def __init__(
        self, data_dir: Path, config: Path | None = None, env: dict[str, str] | None = None
    ):
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith("MODELPORT_")
        }
        self.env.update(
            MODELPORT_DATA_DIR=str(data_dir),
            MODELPORT_PORT=str(self.port),
            MODELPORT_LOG_LEVEL="warning",
            OMP_WAIT_POLICY="PASSIVE",
        )
        if config is not None:
            self.env["MODELPORT_CONFIG"] = str(config)
        self.env.update(env or {})
        self.admin_key = ""
        self.process: subprocess.Popen[str] | None = None
        self.log_path = data_dir / "server.log"

    def start(self, timeout: float = 60.0) -> RunningServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stdout_path = self.data_dir / "stdout.txt"
        with open(stdout_path, "w") as stdout, open(self.log_path, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelport", "serve"],
                env=self.env,
                stdout=stdout,
                stderr=stderr,
                text=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"server did not become healthy:\n{self.output()}")
        match = re.search(r"^(sk-\S+)$", stdout_path.read_text(), re.MULTILINE)
        self.admin_key = match.group(1) if match else ""
        return self

    def output(self) -> str:
        stdout = (self.data_dir / "stdout.txt").read_text()
        return stdout + "\n--- stderr ---\n" + self.log_path.read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelport", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
