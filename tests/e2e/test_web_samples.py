"""The model pages' code samples, run as a reader would run them: the real server on the default
local model, a real API key in place of `API_KEY`, and each sample's own toolchain (curl, Python,
Node.js with axios, Go, gcc with libcurl, PHP, Ruby). Each run must exit 0 and print the
answer. A missing toolchain skips its sample; scripts/install-sample-tools.sh installs them all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.server import RunningServer

from modelport.services.catalog import load_catalog
from modelport.settings import load_settings
from modelport.web.samples import API_KEY, Sample, code_samples

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

LOCAL = "local/smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".sample-tools" / "node" / "node_modules"
INSTALL = "scripts/install-sample-tools.sh"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default local model with its answers capped at 128 tokens by the operator's
    configuration, so that no sample waits on a long ramble; the samples themselves are made
    from the shipped card, unchanged."""
    data_dir = tmp_path_factory.mktemp("web-samples")
    config = data_dir / "models.toml"
    config.write_text(f'[[models]]\nid = "{LOCAL}"\nmax_output_tokens = 128\n')
    with RunningServer(data_dir, config=config) as running:
        yield running


@pytest.fixture(scope="module")
def user_key(server: RunningServer) -> str:
    """A fresh key made with the CLI, as a user would get one."""
    created = server.cli("keys", "create", "--name", "web-samples")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("sk-")
    return secret


@pytest.fixture(scope="module")
def local_samples(server: RunningServer, user_key: str) -> dict[str, Sample]:
    card = load_catalog(load_settings({})).get(LOCAL)
    assert card is not None
    assert card.max_output_tokens is None  # the cap above is the test's, not the page's
    return {
        sample.key: Sample(
            sample.key, sample.label, sample.syntax, sample.code.replace(API_KEY, user_key)
        )
        for sample in code_samples(server.base_url, card)
    }


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed: run {INSTALL}")
    return path


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a sample; it must succeed and print something."""
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, (
        f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    assert done.stdout.strip(), f"{command} printed nothing; stderr:\n{done.stderr}"
    return done.stdout


def write(directory: Path, name: str, sample: Sample) -> Path:
    path = directory / name
    path.write_text(sample.code)
    return path


def chat_answer(text: str) -> str:
    """The answer in a chat-completion body that a sample printed as it came."""
    body: dict[str, Any] = json.loads(text)
    content: str = body["choices"][0]["message"]["content"]
    assert body["model"] == LOCAL
    assert body["usage"]["completion_tokens"] <= 128  # the server's cap (see `server`)
    return content


# --- Printing the raw response ------------------------------------------------------------------


def test_curl(local_samples: dict[str, Sample], tmp_path: Path) -> None:
    need("curl")
    output = run(["bash", str(write(tmp_path, "sample.sh", local_samples["curl"]))], tmp_path)
    assert chat_answer(output).strip()


def test_curl_stream(local_samples: dict[str, Sample], tmp_path: Path) -> None:
    need("curl")
    path = write(tmp_path, "sample.sh", local_samples["curl-stream"])
    output = run(["bash", str(path)], tmp_path)
    events = [line.removeprefix("data: ") for line in output.splitlines() if line.strip()]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    text = "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"]
    )
    assert text.strip()


def test_curl_anthropic(local_samples: dict[str, Sample], tmp_path: Path) -> None:
    need("curl")
    path = write(tmp_path, "sample.sh", local_samples["curl-anthropic"])
    body = json.loads(run(["bash", str(path)], tmp_path))
    assert body["type"] == "message"
    assert "".join(block["text"] for block in body["content"] if block["type"] == "text").strip()


def test_c_libcurl(local_samples: dict[str, Sample], tmp_path: Path) -> None:
    gcc = need("gcc")
    source = write(tmp_path, "main.c", local_samples["c-libcurl"])
    built = subprocess.run(
        [gcc, str(source), "-o", str(tmp_path / "main"), "-lcurl"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "curl/curl.h" in built.stderr:
        pytest.skip(f"libcurl's headers are not installed: run {INSTALL}")
    assert built.returncode == 0, built.stderr
    assert chat_answer(run([str(tmp_path / "main")], tmp_path)).strip()


# --- Printing the answer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["python-requests", "python-openai", "python-openai-stream", "python-anthropic"]
)
def test_python(key: str, local_samples: dict[str, Sample], tmp_path: Path) -> None:
    run([sys.executable, str(write(tmp_path, "sample.py", local_samples[key]))], tmp_path)


def test_node_axios(local_samples: dict[str, Sample], tmp_path: Path) -> None:
    node = need("node")
    if not (NODE_MODULES / "axios" / "package.json").is_file():
        pytest.skip(f"axios is not installed in {NODE_MODULES}: run {INSTALL}")
    path = write(tmp_path, "sample.js", local_samples["node-axios"])
    run([node, str(path)], tmp_path, env={"NODE_PATH": str(NODE_MODULES)})


def test_go(local_samples: dict[str, Sample], tmp_path: Path) -> None:
    go = need("go")
    path = write(tmp_path, "main.go", local_samples["go"])
    # No module and no network: the sample needs the standard library only.
    run([go, "run", str(path)], tmp_path, env={"GOPROXY": "off"})


def test_php_curl(local_samples: dict[str, Sample], tmp_path: Path) -> None:
    php = need("php")
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, check=False).stdout
    if "curl" not in modules.split():
        pytest.skip(f"PHP's curl extension is not installed: run {INSTALL}")
    run([php, str(write(tmp_path, "sample.php", local_samples["php-curl"]))], tmp_path)


def test_ruby(local_samples: dict[str, Sample], tmp_path: Path) -> None:
    ruby = need("ruby")
    run([ruby, str(write(tmp_path, "sample.rb", local_samples["ruby"]))], tmp_path)


def test_a_wrong_key_fails_loudly(local_samples: dict[str, Sample], tmp_path: Path) -> None:
    """The samples' error handling: a refused request exits non-zero (here, Python's)."""
    code = local_samples["python-requests"].code.replace("Bearer sk-", "Bearer sk-wrong")
    path = tmp_path / "sample.py"
    path.write_text(code)
    done = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "401" in done.stderr
