"""Throwaway PostgreSQL databases for tests, on the local server (127.0.0.1:5432, user
postgres, trust authentication).

`fresh_postgres_url()` creates a uniquely named database and drops it afterwards;
`postgres_url_or_skip()` does the same inside a test, skipping it (with the reason) when no
server answers. Reuse them from any test module:

    @pytest.fixture
    def url() -> Iterator[str]:
        with postgres_url_or_skip() as url:
            yield url
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

HOST = "127.0.0.1"
PORT = 5432
USER = "postgres"
_CONNECT_TIMEOUT_S = 3


def _admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the `postgres` database (CREATE DATABASE needs one)."""
    return psycopg.connect(
        host=HOST,
        port=PORT,
        user=USER,
        dbname="postgres",
        autocommit=True,
        connect_timeout=_CONNECT_TIMEOUT_S,
    )


@functools.cache
def unavailable_reason() -> str | None:
    """Why the local PostgreSQL server cannot be used, or None when it can. Asked once."""
    try:
        with _admin_connection() as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return f"no PostgreSQL server usable at {USER}@{HOST}:{PORT}: {error}".strip()
    return None


@contextmanager
def fresh_postgres_url() -> Iterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, drop it when the block ends."""
    name = f"modelport_test_{os.getpid()}_{secrets.token_hex(4)}"
    with _admin_connection() as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{name}"
    finally:
        with _admin_connection() as connection:
            # Pools a test forgot to dispose of would otherwise block the drop.
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@contextmanager
def postgres_url_or_skip() -> Iterator[str]:
    """`fresh_postgres_url()`, or skip the calling test when there is no server to use."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with fresh_postgres_url() as url:
        yield url
