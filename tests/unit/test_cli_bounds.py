"""A bad value on the command line is one error line and a non-zero exit, never a traceback
(issue 13): amounts, limits, ids, ports and times beyond what the store holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelport.cli import main


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("MODELPORT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one error line `argv` ends with (argparse's usage lines may come before it)."""
    try:
        code = main(list(argv))
    except SystemExit as exit:  # argparse refuses a value with exit status 2
        code = exit.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code not in (0, None), err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert len(errors[0]) < 400, errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "argv",
    [
        ("users", "create", "rich", "--balance", "1e400"),
        ("users", "create", "rich", "--balance", "1e20"),
        ("users", "create", "rich", "--balance", str(2**63 - 1)),
        ("users", "create", "rich", "--balance", "9" * 5000),
        ("keys", "create", "--name", "k", "--limit", "1e400"),
    ],
)
def test_amounts_beyond_what_a_balance_holds(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert "CNY" in refused(capsys, *argv)


def test_a_top_up_beyond_what_a_balance_holds(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["users", "create", "someone"]) == 0
    for amount in ("1e309", "-1e400", str(2**63 - 1)):
        argv = ("users", "topup", "someone", "--reason", "x", "--", amount)
        assert "amount" in refused(capsys, *argv)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("keys", "create", "--name", "k", "--rpm", str(2**70)), "--rpm"),
        (("keys", "create", "--name", "k", "--tpm", "9" * 5000), "--tpm"),
        (("keys", "create", "--name", "k", "--rpm", "0"), "--rpm"),
        (("usage", "--key", str(10**23)), "--key"),
        (("usage", "--key", str(2**31)), "--key"),  # a 32-bit INTEGER column on PostgreSQL
        (("usage", "--key", "-1"), "--key"),
        (("serve", "--port", str(2**64)), "--port"),
        (("serve", "--port", "70000"), "--port"),
    ],
)
def test_numeric_options_beyond_range(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    assert says in refused(capsys, *argv)


@pytest.mark.parametrize(
    "argv",
    [
        ("keys", "create", "--name", "k", "--expires", "9999-12-31T23:59:59-14:00"),
        ("usage", "--since", "0001-01-01T00:00:00+14:00"),
    ],
)
def test_times_without_a_utc_time(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert "out of range" in refused(capsys, *argv)
