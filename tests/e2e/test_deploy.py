"""The deployment files (docs/deploy.md, "What is tested here") against the code they deploy.

No Docker engine runs where these tests run: the image is never built, compose.yaml never
started. Checked instead: that the Dockerfile runs `make install` on exactly the files the
Makefile's recipe reads and keeps its virtual environment in place, .dockerignore, the
structure of compose.yaml, that every MODELPORT_ name used is a setting, and
`systemd-analyze verify` on the unit. Run for real: deploy/nginx.conf and deploy/Caddyfile
(Debian's nginx and Caddy from scripts/install-deploy-tools.sh; skipped without them) with
only their addresses changed, in front of a real server and a scripted upstream, the clients
connecting from 127.0.0.2, 127.0.0.3, ... (all loopback on Linux) so that the proxy sees
several; deploy/healthcheck.py over HTTP and HTTPS; a stop with SIGTERM; the backups the
page shows.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: llama-cpp-python needs it; no stubs
from tests.e2e.server import RunningServer, free_port
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Script
from tests.support.postgres import fresh_postgres_url, unavailable_reason

from modelport.settings import ENV_FIELDS, Settings, load_settings

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
DEPLOY = ROOT / "deploy"
NGINX_CONF = DEPLOY / "nginx.conf"
CADDYFILE = DEPLOY / "Caddyfile"
UNIT = DEPLOY / "modelport.service"
ENV_EXAMPLE = DEPLOY / "modelport.env"
HEALTHCHECK = DEPLOY / "healthcheck.py"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
# Where the unit and the docs install the clone.
INSTALL_DIR = "/opt/modelport"
DEFAULTS = Settings()

MODEL = "qwen/qwen3-8b"
CONFIG = """\
[[models]]
id = "{model}"
  [[models.backends]]
  kind = "openai_compat"
  url = "{url}"
  dialect = "vllm"
  upstream_model = "Qwen/Qwen3-8B"
"""
AUTH_FAILURE_LIMIT = 3
PIECES = ("One", " two", " three", " four")
PIECE_DELAY = 0.3  # seconds the upstream waits before each piece
_addresses = itertools.count(2)


def client_address() -> str:
    """A loopback address no other test has used: a client of its own for the proxy."""
    return f"127.0.0.{next(_addresses)}"


# ----------------------------------------------------------------------------- the Makefile


def makefile_variables(text: str) -> dict[str, str]:
    variables = {}
    for line in text.splitlines():
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\?=|:=|=)\s*(.*)$", line)
        if match:
            variables[match.group(1)] = match.group(2).strip()
    return variables


def expand(text: str, variables: dict[str, str]) -> str:
    for _ in range(10):
        expanded = re.sub(
            r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: variables.get(m.group(1), ""), text
        )
        if expanded == text:
            return expanded
        text = expanded
    raise AssertionError(f"variables nest too deep: {text}")


@dataclass(frozen=True)
class InstallRule:
    variables: dict[str, str]
    prerequisites: list[str]
    recipe: list[str]  # command lines, variables expanded, comments left out


def install_rule() -> InstallRule:
    """The Makefile's `install` target: the stamp it makes, that rule's prerequisites and
    recipe."""
    text = (ROOT / "Makefile").read_text()
    variables = makefile_variables(text)
    lines = text.splitlines()
    [install] = [line for line in lines if line.startswith("install:")]
    [stamp] = install.removeprefix("install:").split()
    for index, line in enumerate(lines):
        if not line.startswith("\t") and ":" in line:
            target, _, prerequisites = line.partition(":")
            if expand(target.strip(), variables) == expand(stamp, variables):
                recipe = list(itertools.takewhile(lambda x: x.startswith("\t"), lines[index + 1 :]))
                commands = [expand(x.strip(), variables) for x in recipe]
                return InstallRule(
                    variables,
                    expand(prerequisites, variables).split(),
                    [command for command in commands if not command.startswith("#")],
                )
    raise AssertionError(f"no rule makes {stamp}")


def files_the_install_reads(rule: InstallRule) -> set[str]:
    """Paths in the repository the install recipe needs: its prerequisites, files it names,
    and for `pip install -e .` the project (pyproject.toml, its readme, its package
    directories)."""
    needed = set(rule.prerequisites)
    made = rule.variables["VENV"] + "/"  # what the recipe makes, not what it reads
    for command in rule.recipe:
        words = shlex.split(command)
        needed.update(w for w in words if not w.startswith(made) and (ROOT / w).is_file())
        if "-e" in words and words[words.index("-e") + 1] == ".":
            project = tomllib.loads((ROOT / "pyproject.toml").read_text())
            needed.add("pyproject.toml")
            needed.add(project["project"]["readme"])
            needed.update(project["tool"]["setuptools"]["packages"]["find"]["where"])
    return needed


# ----------------------------------------------------------------------------- the Dockerfile


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case
    args: str


def dockerfile_stages() -> tuple[dict[str, str], list[list[Instruction]]]:
    """The global ARG defaults and the instructions of each stage (from its FROM on)."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    for line in joined:
        name, _, rest = line.strip().partition(" ")
        instruction = Instruction(name.upper(), rest.strip())
        if instruction.name == "FROM":
            stages.append([])
        if not stages:
            assert instruction.name == "ARG", f"only ARG may come before FROM: {line}"
            key, _, value = instruction.args.partition("=")
            args[key] = value
            continue
        stages[-1].append(instruction)
    return args, stages


def of(stage: list[Instruction], name: str) -> list[str]:
    return [instruction.args for instruction in stage if instruction.name == name]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in of(stage, "ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def workdir_of(stage: list[Instruction]) -> str:
    [workdir] = of(stage, "WORKDIR")
    return workdir


def copies(stage: list[Instruction]) -> list[tuple[list[str], str, str | None]]:
    """Each COPY as (sources, destination, the stage it copies from or None)."""
    found = []
    for args in of(stage, "COPY"):
        words = shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        found.append((paths[:-1], paths[-1], source_stage))
    return found


def copied_into_image(stage: list[Instruction]) -> dict[str, str]:
    """Each source from the build context -> where it lands in the image."""
    workdir = workdir_of(stage)
    landed = {}
    for sources, destination, source_stage in copies(stage):
        if source_stage is not None:
            continue
        target = destination if destination.startswith("/") else f"{workdir}/{destination}"
        target = os.path.normpath(target)
        for source in sources:
            into_dir = len(sources) > 1 or destination.endswith("/")
            landed[source.rstrip("/")] = f"{target}/{Path(source).name}" if into_dir else target
    return landed


def test_the_image_installs_by_running_make_install_on_what_its_recipe_reads() -> None:
    """The build stage runs `make install` in a copy of every file the recipe reads, each at
    its place in the repository; so a change to the recipe that needs another file fails
    here until the Dockerfile copies it."""
    _args, stages = dockerfile_stages()
    build = stages[0]
    rule = install_rule()
    runs = of(build, "RUN")
    assert any(re.search(r"(^|\s)make install(\s|$)", run) for run in runs), runs
    workdir = workdir_of(build)
    landed = copied_into_image(build)
    for needed in sorted(files_the_install_reads(rule)):
        source = next(
            (s for s in landed if needed == s or needed.startswith(s + "/")),
            None,
        )
        assert source is not None, f"the build stage does not copy {needed}"
        at = landed[source] + needed.removeprefix(source)
        assert at == f"{workdir}/{needed}", f"{needed} lands at {at}"


def test_the_build_stage_has_what_make_install_needs_on_the_python_tested_here() -> None:
    args, stages = dockerfile_stages()
    build = stages[0]
    rule = install_rule()
    packages: set[str] = set()
    for run in of(build, "RUN"):
        for command in run.split("&&"):
            words = command.split()
            if "apt-get" in words and "install" in words:
                packages.update(w for w in words[words.index("install") + 1 :] if w[0] != "-")
    # make itself, a C++ compiler and CMake for llama.cpp (README.md).
    assert "cmake" in packages
    assert "build-essential" in packages or {"make", "g++"} <= packages
    # The recipe makes its virtual environment with the image's own `python3`.
    assert rule.variables["PYTHON"] == "python3"
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], build[0].args.split()[0])
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", image)
    assert match, f"the base image is not python:X.Y-slim: {image}"
    assert (int(match.group(1)), int(match.group(2))) == sys.version_info[:2]


def test_the_runtime_stage_keeps_the_virtual_environment_where_it_was_made() -> None:
    """The project is installed in editable mode, and the venv's scripts name its Python by
    path: both only work at the path the build used. It runs the server as it should."""
    _args, stages = dockerfile_stages()
    build, runtime = stages[0], stages[-1]
    workdir = workdir_of(build)
    assert ([workdir], workdir, "build") in copies(runtime), copies(runtime)
    venv_bin = f"{workdir}/" + expand("$(BIN)", install_rule().variables)
    assert env_of(runtime)["PATH"].split(":")[0] == venv_bin
    assert workdir_of(runtime) == workdir
    # It serves as a non-root user, on every address, its data on a volume, its health
    # checked by the script it has.
    landed = copied_into_image(runtime)
    assert landed["deploy/healthcheck.py"] == f"{workdir}/deploy/healthcheck.py"
    env = env_of(runtime)
    settings = load_settings({k: v for k, v in env.items() if k.startswith("MODELPORT_")})
    assert settings.host == "0.0.0.0"
    [user] = of(runtime, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert of(runtime, "EXPOSE") == [str(settings.port)]
    assert json.loads(of(runtime, "VOLUME")[0]) == [settings.data_dir]
    assert json.loads(of(runtime, "CMD")[0]) == ["modelport", "serve"]
    [healthcheck] = of(runtime, "HEALTHCHECK")
    command = json.loads(healthcheck.partition("CMD")[2])
    assert command[-2:] == [f"{workdir_of(runtime)}/deploy/healthcheck.py", "/healthz"]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent
    directories decides; `*` stays within a path segment, `**` crosses them."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
        translated = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(translated.get(p, re.escape(p)) for p in parts))

    segments = path.split("/")
    prefixes = ["/".join(segments[: n + 1]) for n in range(len(segments))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        matcher = regex(raw.removeprefix("!"))
        if any(matcher.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_sends_what_the_build_copies_and_none_of_the_hosts_state() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    _args, stages = dockerfile_stages()
    sources = {
        source
        for stage in stages
        for sources, _, source_stage in copies(stage)
        if source_stage is None
        for source in sources
    }
    for source in sorted(sources):
        files = [source] if (ROOT / source).is_file() else []
        files += [
            str(p.relative_to(ROOT))
            for p in (ROOT / source).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
        ]
        for file in files:
            assert not dockerignore_excludes(file, patterns), f"{file} is left out"
    for state in (
        ".venv/bin/python",
        ".git/HEAD",
        "data/modelport.db",
        ".env",
        "tests/browser/node_modules/axe-core/package.json",
        ".sample-tools/node/node_modules/axios/package.json",
        "src/modelport/__pycache__/cli.cpython-311.pyc",
        "src/modelport.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(state, patterns), f"{state} goes into the build context"


# ----------------------------------------------------------------------------- compose.yaml


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def replicas(services: dict[str, Any]) -> dict[str, Any]:
    """The services that run the image the Dockerfile builds."""
    return {
        name: service
        for name, service in services.items()
        if service.get("build") in (".", {"context": "."})
    }


def interpolated(value: str) -> str:
    """compose's ${NAME}, ${NAME:-default} and ${NAME:?error}: the default, else a filler."""
    return re.sub(
        r"\$\{(\w+)(?::?([-?])([^}]*))?\}",
        lambda m: m.group(3) if m.group(2) == "-" else f"x-{m.group(1).lower()}",
        value,
    )


def test_compose_runs_postgres_redis_two_replicas_and_nginx() -> None:
    services = compose()["services"]
    images = {name: str(service.get("image", "")) for name, service in services.items()}
    [postgres] = [name for name, image in images.items() if image.startswith("postgres:16")]
    [redis] = [name for name, image in images.items() if image.startswith("redis:7")]
    [nginx] = [name for name, image in images.items() if image.startswith("nginx:")]
    modelports = replicas(services)
    assert len(modelports) == 2, sorted(services)
    assert set(services) == {postgres, redis, nginx, *modelports}
    for name in (postgres, redis):
        assert services[name]["healthcheck"]["test"], name
    database = services[postgres]["environment"]
    for name, replica in modelports.items():
        env = {key: interpolated(str(value)) for key, value in replica["environment"].items()}
        settings = load_settings(env)
        url = httpx.URL(settings.resolved_database_url.replace("+psycopg", ""))
        assert settings.resolved_database_url.startswith("postgresql+psycopg://"), name
        assert (url.host, url.port, url.path) == (postgres, 5432, "/" + database["POSTGRES_DB"])
        assert url.username == database["POSTGRES_USER"]
        assert url.password == interpolated(database["POSTGRES_PASSWORD"])
        assert settings.redis_url is not None
        assert httpx.URL(settings.redis_url).host == redis
        # The replicas trust the compose network, where nginx is, and only it.
        subnets = [c["subnet"] for c in compose()["networks"]["default"]["ipam"]["config"]]
        assert list(settings.trusted_proxies) == subnets
        assert replica["healthcheck"]["test"][-2:] == [
            f"{INSTALL_DIR}/deploy/healthcheck.py",
            "/readyz",
        ]
        assert replica["depends_on"][postgres]["condition"] == "service_healthy"
        assert replica["depends_on"][redis]["condition"] == "service_healthy"
    # One replica migrates (and prints the first admin key) before the other starts.
    first, second = sorted(modelports)
    assert modelports[second]["depends_on"][first]["condition"] == "service_healthy"
    # nginx starts when both replicas are ready, with deploy/nginx.conf.
    waits_for = {name: d["condition"] for name, d in services[nginx]["depends_on"].items()}
    assert waits_for == dict.fromkeys(modelports, "service_healthy")
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in services[nginx]["volumes"]


def test_nginx_balances_over_the_compose_replicas_and_stops_them_as_the_unit_does() -> None:
    services = compose()["services"]
    modelports = replicas(services)
    _args, stages = dockerfile_stages()
    port = env_of(stages[-1])["MODELPORT_PORT"]
    [upstream] = [block for block in nginx_blocks(NGINX_CONF.read_text()) if block[0] == "upstream"]
    servers = [args[0] for name, args, _ in upstream[2] if name == "server"]
    assert servers == [f"{name}:{port}" for name in sorted(modelports)]
    # The time a stop gives streams to finish: the same in compose and the systemd unit.
    [timeout] = re.findall(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.MULTILINE)
    for replica in modelports.values():
        assert replica["stop_grace_period"] == f"{timeout}s"


# ----------------------------------------------------------------------------- settings


def test_every_setting_the_deployment_files_name_is_one_the_server_knows() -> None:
    files = [DOCKERFILE, COMPOSE, NGINX_CONF, CADDYFILE, UNIT, ENV_EXAMPLE, HEALTHCHECK]
    files.append(DEPLOY_DOC)
    for path in files:
        names = set(re.findall(r"\bMODELPORT_[A-Z0-9_]+", path.read_text()))
        unknown = sorted(n for n in names if n.removeprefix("MODELPORT_").lower() not in ENV_FIELDS)
        assert not unknown, f"{path.name}: not settings: {unknown}"


def test_the_example_environment_file_loads() -> None:
    """Its active lines load as settings; so do its commented-out ones, but for the files
    (the config, the TLS certificate and key), which must exist."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    active = dict(line.split("=", 1) for line in lines if re.match(r"MODELPORT_\w+=", line))
    settings = load_settings(active)
    assert settings.data_dir == "/var/lib/modelport"
    assert "127.0.0.1" in settings.trusted_proxies
    commented = dict(
        line[1:].split("=", 1)
        for line in lines
        if re.match(r"#MODELPORT_\w+=", line) and not re.match(r"#MODELPORT_(TLS_|CONFIG=)", line)
    )
    load_settings({**active, **commented})


# ----------------------------------------------------------------------------- nginx's file


def nginx_blocks(text: str) -> list[tuple[str, list[str], list[Any]]]:
    """nginx's configuration as a tree: (directive, arguments, children) per directive."""
    tokens = re.findall(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};"\']+', re.sub(r"#[^\n]*", "", text))
    root: list[Any] = []
    stack = [root]
    words: list[str] = []
    for token in tokens:
        if token == ";":
            stack[-1].append((words[0], words[1:], []))
            words = []
        elif token == "{":
            block: list[Any] = []
            stack[-1].append((words[0], words[1:], block))
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token.strip("\"'"))
    assert len(stack) == 1 and not words, "unbalanced nginx configuration"
    return root


def directive(block: list[Any], name: str) -> list[str]:
    [found] = [args for directive_name, args, _ in block if directive_name == name]
    return list(found)


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, value
    return int(match.group(1)) * units[match.group(2) or "s"]


def size_bytes(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "kib": 1024, "mib": 1024**2}
    match = re.fullmatch(r"(\d+)([a-z]*)", value.lower())
    assert match, value
    return int(match.group(1)) * units[match.group(2)]


def test_nginx_conf_streams_and_agrees_with_the_servers_limits() -> None:
    tree = nginx_blocks(NGINX_CONF.read_text())
    [upstream] = [children for name, _, children in tree if name == "upstream"]
    [server] = [children for name, _, children in tree if name == "server"]
    assert size_bytes(directive(server, "client_max_body_size")[0]) == DEFAULTS.max_request_bytes
    # nginx drops an idle connection to a replica before the replica does.
    assert seconds(directive(upstream, "keepalive_timeout")[0]) < DEFAULTS.header_timeout
    assert directive(server, "proxy_http_version") == ["1.1"]
    assert directive(server, "proxy_buffering") == ["off"]
    assert directive(server, "gzip") == ["off"]
    assert seconds(directive(server, "proxy_read_timeout")[0]) >= 600
    headers = {args[0].lower(): args[1] for name, args, _ in server if name == "proxy_set_header"}
    assert headers["connection"] == ""
    assert headers["x-forwarded-for"] == "$proxy_add_x_forwarded_for"
    assert headers["x-request-id"] == "$modelport_request_id"


def test_the_caddyfile_streams_and_agrees_with_the_servers_limits() -> None:
    text = CADDYFILE.read_text()
    [max_size] = re.findall(r"^\s*max_size\s+(\S+)$", text, re.MULTILINE)
    assert size_bytes(max_size) == DEFAULTS.max_request_bytes
    [keepalive] = re.findall(r"^\s*keepalive\s+(\S+)$", text, re.MULTILINE)
    assert seconds(keepalive) < DEFAULTS.header_timeout
    assert re.search(r"^\s*flush_interval\s+-1$", text, re.MULTILINE)
    assert not re.search(r"^\s*encode\b", text, re.MULTILINE)


# ----------------------------------------------------------------------------- systemd


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit as shipped, but for the install directory, which
    is this checkout (verify checks that ExecStart's program exists). It prints nothing for a
    unit it has nothing to say about, and a warning (not a failure) for an unknown key."""
    unit = UNIT.read_text()
    [workdir] = re.findall(r"^WorkingDirectory=(.+)$", unit, re.MULTILINE)
    [exec_start] = re.findall(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    bin_dir = expand("$(BIN)", install_rule().variables)
    assert workdir == INSTALL_DIR
    assert exec_start == f"{INSTALL_DIR}/{bin_dir}/modelport serve"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    if not (ROOT / bin_dir / "modelport").exists():
        pytest.skip(f"{bin_dir}/modelport is missing: run `make install`")
    (tmp_path / "modelport.service").write_text(unit.replace(INSTALL_DIR, str(ROOT)))
    done = run(analyze, "verify", "--man=no", tmp_path / "modelport.service")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == "", done.stdout + done.stderr


# ----------------------------------------------------------------------------- running servers


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(models=("Qwen/Qwen3-8B",))
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[RunningServer]:
    """The server as deploy/modelport.env sets it up behind a proxy on the same machine: it
    trusts 127.0.0.1, where the proxies connect from. Authentication failures are throttled
    after a few, so that the tests can see which client an address was counted for."""
    data_dir: Path = tmp_path_factory.mktemp("deploy")
    config = data_dir / "modelport.toml"
    config.write_text(CONFIG.format(model=MODEL, url=upstream.base_url))
    env = {
        "MODELPORT_TRUSTED_PROXIES": "127.0.0.1",
        "MODELPORT_AUTH_FAILURE_LIMIT": str(AUTH_FAILURE_LIMIT),
    }
    with RunningServer(data_dir, config=config, env=env) as running:
        yield running


@dataclass(frozen=True)
class Proxy:
    url: str
    made_id: str  # the form of the request ids the proxy makes (a regex)


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the proxy did not answer:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def replace_once(text: str, old: str, new: str, count: int = 1) -> str:
    assert text.count(old) == count, f"expected {old!r} {count} time(s) in the shipped file"
    return text.replace(old, new)


def nginx_config(work: Path, listen_port: int, server_port: int) -> Path:
    """deploy/nginx.conf with its listen port, its upstream servers and its access log moved
    here, inside a minimal main configuration (what nginx.conf's http block gives it)."""
    shipped = NGINX_CONF.read_text()
    shipped = replace_once(shipped, "listen 80;", f"listen 127.0.0.1:{listen_port};")
    shipped = re.sub(r"server modelport-\d:8000;", f"server 127.0.0.1:{server_port};", shipped)
    assert shipped.count(f"server 127.0.0.1:{server_port};") == 2
    shipped = replace_once(shipped, "/var/log/nginx/access.log", str(work / "access.log"))
    (work / "modelport.conf").write_text(shipped)
    temp_paths = ""
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / kind).mkdir()
        temp_paths += f"{kind}_temp_path {work / kind};\n"
    # As root, the workers would switch to `nobody`, who cannot enter pytest's directories.
    user = "user root;" if os.geteuid() == 0 else ""
    main = work / "nginx.conf"
    main.write_text(
        f"""\
daemon off;
worker_processes 1;
{user}
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
{temp_paths}include {work / "modelport.conf"};
}}
"""
    )
    return main


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, server: RunningServer) -> Iterator[Proxy]:
    # Debian's nginx is in /usr/sbin, which a user's PATH may lack.
    binary = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None:
        pytest.skip("nginx is not installed (scripts/install-deploy-tools.sh installs it)")
    work: Path = tmp_path_factory.mktemp("nginx")
    port = free_port()
    main = nginx_config(work, port, server.port)
    command = [binary, "-p", str(work), "-e", str(work / "error.log"), "-c", str(main)]
    checked = run(*command, "-t")
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, process, work / "error.log")
        yield Proxy(url, r"[0-9a-f]{32}")
    finally:
        stop(process)


def caddy_config(work: Path, listen_port: int, server_port: int) -> Path:
    """deploy/Caddyfile with its site address and its upstream moved here, Caddy's admin
    endpoint off and its listeners on 127.0.0.1."""
    shipped = CADDYFILE.read_text()
    shipped = replace_once(shipped, "api.example.com {", f"http://127.0.0.1:{listen_port} {{")
    shipped = replace_once(
        shipped, "reverse_proxy 127.0.0.1:8000 {", f"reverse_proxy 127.0.0.1:{server_port} {{"
    )
    path = work / "Caddyfile"
    path.write_text("{\n\tadmin off\n\tdefault_bind 127.0.0.1\n}\n\n" + shipped)
    return path


@pytest.fixture(scope="module")
def caddy(tmp_path_factory: pytest.TempPathFactory, server: RunningServer) -> Iterator[Proxy]:
    binary = shutil.which("caddy")
    if binary is None:
        pytest.skip("Caddy is not installed (scripts/install-deploy-tools.sh installs it)")
    work: Path = tmp_path_factory.mktemp("caddy")
    port = free_port()
    config = caddy_config(work, port, server.port)
    env = {**os.environ} | dict.fromkeys(("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"), str(work))
    log = work / "caddy.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [binary, "run", "--config", str(config), "--adapter", "caddyfile"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, process, log)
        yield Proxy(url, r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    finally:
        stop(process)


@pytest.fixture(params=["nginx", "caddy"])
def proxy(request: pytest.FixtureRequest) -> Proxy:
    found: Proxy = request.getfixturevalue(request.param)
    return found


def client_from(address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address`."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def chat(marker: str, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{marker} say four words"}],
        "stream": stream,
    }


def pieces_of(lines: Iterator[str]) -> Iterator[str]:
    """The text pieces of an OpenAI chat stream as they arrive, then "[DONE]"."""
    for line in lines:
        if line == "data: [DONE]":
            yield "[DONE]"
        elif line.startswith("data: {"):
            choices = json.loads(line.removeprefix("data: "))["choices"]
            if choices and choices[0]["delta"].get("content"):
                yield choices[0]["delta"]["content"]


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(word) for word in command], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_stream_arrives_event_by_event_through_the_proxy(
    proxy: Proxy, server: RunningServer, upstream: FakeOpenAIUpstream
) -> None:
    """The upstream sends a piece every PIECE_DELAY seconds; a proxy that buffered or
    compressed the stream would hand them over together at its end."""
    marker = f"[{uuid.uuid4().hex[:12]}]"
    upstream.on(marker, Script(text=PIECES, delay=PIECE_DELAY, usage=(6, len(PIECES))))
    arrivals: list[tuple[float, str]] = []
    headers = {"Authorization": f"Bearer {server.admin_key}", "Accept-Encoding": "gzip"}
    with (
        client_from(client_address()) as http,
        http.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            json=chat(marker, stream=True),
            headers=headers,
        ) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in answer.headers
        arrivals += [(time.monotonic(), piece) for piece in pieces_of(answer.iter_lines())]
    assert [piece for _, piece in arrivals] == [*PIECES, "[DONE]"]
    arrivals.pop()
    spread = arrivals[-1][0] - arrivals[0][0]
    assert spread >= (len(PIECES) - 1) * PIECE_DELAY * 0.7, arrivals


def test_the_client_is_the_address_the_proxy_saw_not_what_it_wrote(proxy: Proxy) -> None:
    """Failed authentications are counted per client address: behind a trusted proxy, per
    address the proxy saw, never per what a client wrote in X-Forwarded-For itself."""
    url = proxy.url + "/v1/chat/completions"
    body = chat("no key")
    with client_from(client_address()) as first, client_from(client_address()) as second:
        for _ in range(AUTH_FAILURE_LIMIT):
            assert first.post(url, json=body).status_code == 401
        refused = first.post(url, json=body)
        assert refused.status_code == 429, refused.text
        assert "retry-after" in refused.headers
        spoofed = first.post(url, json=body, headers={"X-Forwarded-For": "198.51.100.7"})
        assert spoofed.status_code == 429, spoofed.text
        assert second.post(url, json=body).status_code == 401


def test_a_request_id_passes_through_the_proxy_or_the_proxy_makes_one(
    proxy: Proxy, server: RunningServer, upstream: FakeOpenAIUpstream
) -> None:
    marker = f"[{uuid.uuid4().hex[:12]}]"
    upstream.on(marker, Script(text=["Hi"], usage=(6, 1)))
    chosen = f"deploy-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {server.admin_key}", "X-Request-Id": chosen}
    with client_from(client_address()) as http:
        answer = http.post(proxy.url + "/v1/chat/completions", json=chat(marker), headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-request-id"] == chosen
        [received] = [r for r in upstream.requests if marker in json.dumps(r.body)]
        assert {k.lower(): v for k, v in received.headers.items()}["x-request-id"] == chosen
        made = http.get(proxy.url + "/v1/models")
        assert made.status_code == 200
        assert re.fullmatch(proxy.made_id, made.headers["x-request-id"]), made.headers


def test_metrics_are_closed_at_the_proxy(proxy: Proxy, server: RunningServer) -> None:
    """Replicas are scraped directly; through the proxy /metrics is refused to everyone."""
    with client_from("127.0.0.1") as local, client_from(client_address()) as other:
        assert other.get(proxy.url + "/metrics").status_code == 403
        assert local.get(proxy.url + "/metrics").status_code == 403
        answer = local.get(server.base_url + "/metrics")
        assert answer.status_code == 200, answer.text
        assert "# TYPE" in answer.text


def health_check(path: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """deploy/healthcheck.py, as the image runs it."""
    command = [sys.executable, str(HEALTHCHECK), path]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)


def test_the_health_check_asks_the_server_its_settings_name(server: RunningServer) -> None:
    for path in ("/healthz", "/readyz"):
        done = health_check(path, server.env)
        assert done.returncode == 0, done.stdout + done.stderr
    elsewhere = health_check("/healthz", {**server.env, "MODELPORT_PORT": str(free_port())})
    assert elsewhere.returncode == 1
    assert "/healthz" in elsewhere.stdout
    missing = health_check("/no-such-probe", server.env)
    assert missing.returncode == 1
    assert "HTTP 404" in missing.stdout


def test_the_health_check_speaks_https_to_a_server_that_serves_it(tmp_path: Path) -> None:
    """MODELPORT_TLS_CERT and MODELPORT_TLS_KEY: the server answers over HTTPS only, and the
    health check, reading the same settings, asks it over HTTPS."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (it makes the test's certificate)")
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    new_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    subject = ("-days", "1", "-subj", "/CN=api.example.com")
    made = run(openssl, "req", "-x509", *new_key, *subject, "-keyout", key, "-out", cert)
    assert made.returncode == 0, made.stderr
    tls = {"MODELPORT_TLS_CERT": str(cert), "MODELPORT_TLS_KEY": str(key)}
    running = RunningServer(tmp_path / "data", env=tls)
    running.data_dir.mkdir()
    # Not RunningServer.start(): it waits for an answer over plain HTTP.
    with open(running.data_dir / "stdout.txt", "w") as out, open(running.log_path, "w") as err:
        command = [sys.executable, "-m", "modelport", "serve"]
        process = subprocess.Popen(command, env=running.env, stdout=out, stderr=err, text=True)
    running.process = process
    try:
        deadline = time.monotonic() + 60
        done = health_check("/healthz", running.env)
        while done.returncode != 0 and time.monotonic() < deadline:
            assert process.poll() is None, running.output()
            time.sleep(0.2)
            done = health_check("/healthz", running.env)
        assert done.returncode == 0, done.stdout + running.output()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{running.port}/healthz", timeout=5)
    finally:
        running.stop()


# ----------------------------------------------------------------------------- stopping


def test_sigterm_lets_a_stream_finish_and_refuses_new_connections(
    tmp_path: Path, upstream: FakeOpenAIUpstream
) -> None:
    """What the unit's KillMode=mixed / TimeoutStopSec and compose's stop_grace_period rely
    on: SIGTERM to `modelport serve` alone."""
    marker = f"[{uuid.uuid4().hex[:12]}]"
    pieces = [f" w{n}" for n in range(8)]
    upstream.on(marker, Script(text=pieces, delay=0.25, usage=(6, len(pieces))))
    config = tmp_path / "modelport.toml"
    config.write_text(CONFIG.format(model=MODEL, url=upstream.base_url))
    received: list[str] = []
    with RunningServer(tmp_path / "data", config=config) as running:
        assert running.process is not None
        headers = {"Authorization": f"Bearer {running.admin_key}"}
        url = running.base_url + "/v1/chat/completions"
        with (
            httpx.Client(timeout=30) as http,
            http.stream("POST", url, json=chat(marker, stream=True), headers=headers) as answer,
        ):
            for piece in pieces_of(answer.iter_lines()):
                received.append(piece)
                if len(received) == 1:
                    running.process.send_signal(signal.SIGTERM)
                    assert refuses_connections(running.base_url), "still accepting after SIGTERM"
        assert running.process.wait(15) == 0, running.output()
    assert received == [*pieces, "[DONE]"]


def refuses_connections(base_url: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            httpx.get(base_url + "/healthz", timeout=1)
        except httpx.ConnectError:
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------- backups


def test_a_sqlite_backup_made_while_the_server_runs_serves_the_same_keys(
    server: RunningServer, tmp_path: Path
) -> None:
    """docs/deploy.md's `sqlite3 .backup`, restored as a data directory of its own."""
    sqlite = shutil.which("sqlite3")
    if sqlite is None:
        pytest.skip("the sqlite3 command is not installed")
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    backup = f".backup '{restored_dir / 'modelport.db'}'"
    done = run(sqlite, server.data_dir / "modelport.db", backup)
    assert done.returncode == 0, done.stderr
    with RunningServer(restored_dir) as restored:
        assert_serves(restored, server.admin_key)


def assert_serves(restored: RunningServer, key: str) -> None:
    """A restored database is not a first start (no new admin key), and its keys work."""
    assert restored.admin_key == ""
    me = httpx.get(
        restored.base_url + "/api/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert me.status_code == 200, me.text


def test_a_postgres_dump_restored_elsewhere_serves_the_same_keys(tmp_path: Path) -> None:
    """docs/deploy.md's pg_dump and pg_restore, into an empty database."""
    pg_dump, pg_restore = shutil.which("pg_dump"), shutil.which("pg_restore")
    if pg_dump is None or pg_restore is None:
        pytest.skip("pg_dump and pg_restore are not installed")
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    dump = tmp_path / "modelport.dump"
    with fresh_postgres_url() as url, fresh_postgres_url() as restored_url:
        env = {"MODELPORT_DATABASE_URL": url}
        with RunningServer(tmp_path / "original", env=env) as original:
            key = original.admin_key
            assert key
            done = run(pg_dump, "--format=custom", f"--file={dump}", url.replace("+psycopg", ""))
            assert done.returncode == 0, done.stderr
        target = restored_url.replace("+psycopg", "")
        done = run(pg_restore, "--no-owner", f"--dbname={target}", dump)
        assert done.returncode == 0, done.stderr
        env = {"MODELPORT_DATABASE_URL": restored_url}
        with RunningServer(tmp_path / "restored", env=env) as restored:
            assert_serves(restored, key)
