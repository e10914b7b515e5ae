"""Engine construction: one place that knows per-database connection settings.

SQLite gets WAL journaling (readers never block the writer) with synchronous=NORMAL, and a
busy timeout (a second writer waits instead of failing at once); its directory is created on
first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Engine

from modelport.store.base import StoreError

SQLITE_BUSY_TIMEOUT_MS = 5000


def redacted(url: str | URL) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparseable database URL>"


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL syncs at checkpoints rather than at every commit: a committed
        # transaction survives the process being killed (the OS has it), and only an OS crash
        # or power loss can take the last ones. Every request commits its usage row, so FULL's
        # fsync per commit would cost each request a disk flush.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_engine(url: str) -> Engine:
    """A sync engine for `url`; raises `StoreError` with a readable message if it cannot."""
    try:
        parsed = sa.make_url(url)
    except exc.ArgumentError as error:
        raise StoreError(f"invalid database URL {redacted(url)!r}: {error}") from None
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database and parsed.database != ":memory:":
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the data directory: {error}") from None
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=not is_sqlite)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
        raise StoreError(f"cannot use database {redacted(parsed)}: {error}") from None
    if is_sqlite:
        event.listen(engine, "connect", _on_sqlite_connect)
    return engine
