"""The command line, run in-process with a temporary data directory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import types
from pathlib import Path

import msgspec
import pytest

from modelport.cli import main
from modelport.services.keys import KeyService, Principal
from modelport.settings import Settings
from modelport.store.sql import SqlStore


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("MODELPORT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stands in for modelport.http.server so `serve` returns instead of serving."""
    calls: list[Settings] = []
    module = types.ModuleType("modelport.http.server")
    module.run_server = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelport.http.server", module)
    for name in ("MODELPORT_HOST", "MODELPORT_PORT", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    return calls


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def authenticate(data_dir: Path, secret: str) -> Principal:
    with SqlStore(f"sqlite:///{data_dir / 'modelport.db'}") as store:
        return await KeyService(store, ttl=0).authenticate(secret)


@pytest.mark.asyncio
async def test_keys_create_prints_the_secret_alone_on_the_last_line(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = run(capsys, "keys", "create", "--name", "ci")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) >= 2
    secret = lines[-1]
    assert secret.startswith("sk-")
    assert secret == secret.strip()
    assert "ci" in lines[0]
    principal = await authenticate(data_dir, secret)
    assert (principal.name, principal.role) == ("ci", "user")


@pytest.mark.asyncio
async def test_keys_create_admin_and_json(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = run(capsys, "keys", "create", "--name", "ops", "--admin", "--json")
    assert code == 0
    created = msgspec.json.decode(out)
    assert created["role"] == "admin"
    principal = await authenticate(data_dir, created["secret"])
    assert principal.role == "admin"


def test_keys_list_shows_prefixes_never_secrets(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _code, out, _err = run(capsys, "keys", "create", "--name", "alice")
    secret = out.splitlines()[-1]
    code, table, _err = run(capsys, "keys", "list")
    assert code == 0
    assert "alice" in table
    assert secret[:12] in table
    assert secret not in table
    assert secret[12:20] not in table
    code, listing, _err = run(capsys, "keys", "list", "--json")
    assert code == 0
    (entry,) = msgspec.json.decode(listing)
    assert entry["prefix"] == secret[:12]
    assert secret not in listing
    assert "secret_hash" not in entry


def test_keys_revoke(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "keys", "create", "--name", "alice")
    run(capsys, "keys", "create", "--name", "bob")
    code, out, _err = run(capsys, "keys", "revoke", "alice")
    assert code == 0
    assert "Revoked" in out
    assert "alice" in out
    _code, table, _err = run(capsys, "keys", "list")
    assert "alice" not in table
    assert "bob" in table
    _code, everything, _err = run(capsys, "keys", "list", "--all")
    assert "alice" in everything


def test_keys_revoke_unknown_or_ambiguous_fails(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run(capsys, "keys", "revoke", "nobody")
    assert code == 1
    assert "no API key matches name 'nobody'" in err
    run(capsys, "keys", "create", "--name", "twin")
    run(capsys, "keys", "create", "--name", "twin")
    code, _out, err = run(capsys, "keys", "revoke", "twin")
    assert code == 1
    assert "revoke one by its id" in err
    _code, table, _err = run(capsys, "keys", "list")
    assert table.count("twin") == 2
    code, _out, _err = run(capsys, "keys", "revoke", "1")
    assert code == 0


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MODELPORT_PORT", "not-a-number", "port"),
        ("MODELPORT_NO_SUCH_SETTING", "1", "MODELPORT_NO_SUCH_SETTING"),
    ],
)
def test_bad_settings_exit_2_with_the_reason(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    expected: str,
) -> None:
    monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "keys", "list")
    assert code == 2
    assert expected in err
    assert out == ""
    assert not data_dir.exists()  # nothing touched before the settings were valid


def test_serve_prints_the_admin_key_on_first_start_only(
    data_dir: Path, capsys: pytest.CaptureFixture[str], fake_server: list[Settings]
) -> None:
    code, out, _err = run(capsys, "serve", "--host", "0.0.0.0", "--port", "9123")
    assert code == 0
    lines = out.splitlines()
    assert "Admin API key (shown once, store it now):" in lines
    secret = lines[lines.index("Admin API key (shown once, store it now):") + 1]
    assert secret.startswith("sk-mp-")
    (settings,) = fake_server
    assert (settings.host, settings.port) == ("0.0.0.0", 9123)
    assert os.environ["MODELPORT_PORT"] == "9123"  # for worker processes
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"

    code, out, _err = run(capsys, "serve")
    assert code == 0
    assert "Admin API key" not in out
    assert "sk-" not in out
    assert len(fake_server) == 2
    _code, table, _err = run(capsys, "keys", "list")
    assert table.count("admin") == 2  # one row: name "admin", role "admin"


def test_python_dash_m_runs_the_cli(data_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelport", "keys", "list", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert msgspec.json.decode(result.stdout) == []


def test_serve_with_a_broken_catalog_entry_exits_2_before_starting(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_server: list[Settings],
) -> None:
    config = tmp_path / "broken.toml"
    config.write_text('[[models]]\nid = "acme/new"\nname = "New"\ncontext_length = 4096\n')
    monkeypatch.setenv("MODELPORT_CONFIG", str(config))
    code, _out, err = run(capsys, "serve")
    assert code == 2
    assert "description" in err
    assert "acme/new" in err
    assert fake_server == []


def test_keys_revoke_tells_running_replicas_through_redis(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Replicas trust their key cache for its TTL; a revocation made with the CLI is announced
    # on the key-change channel so that they forget the key at once.
    redis = pytest.importorskip("redis")
    prefix = f"cli-test-{os.getpid()}"
    monkeypatch.setenv("MODELPORT_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("MODELPORT_REDIS_PREFIX", prefix)
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        subscriber = client.pubsub()
        subscriber.subscribe(f"{prefix}:keys")
    except redis.RedisError as error:
        pytest.skip(f"Redis is not reachable on 127.0.0.1:6379: {error}")
    try:
        assert subscriber.get_message(timeout=2)["type"] == "subscribe"
        code, out, _ = run(capsys, "keys", "create", "--name", "leaving")
        assert code == 0
        secret = out.strip().splitlines()[-1]
        code, _, _ = run(capsys, "keys", "revoke", "leaving")
        assert code == 0
        message = subscriber.get_message(timeout=5)
        assert message is not None and message["type"] == "message"
        assert message["data"].decode() == hashlib.sha256(secret.encode()).hexdigest()
    finally:
        subscriber.close()
        client.close()
