"""Persistence: SQLAlchemy Core tables, Alembic migrations and the SQL store.

`base` holds the interfaces and records that services depend on; it imports no database code,
so importing this package (which `services` do, through `base`) never loads SQLAlchemy: the
two entry points below import the database modules when called.
`sql` is the SQLAlchemy implementation (SQLite by default, PostgreSQL by URL) and `migrator`
runs the packaged Alembic migrations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelport.settings import Settings
    from modelport.store.sql import SqlStore


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the newest schema; a no-op when it is current."""
    from modelport.store.migrator import upgrade_to_head

    upgrade_to_head(url)


def open_store(settings: Settings) -> SqlStore:
    """Migrate the configured database and open a store on it; the caller closes it."""
    from modelport.store.sql import SqlStore

    url = settings.resolved_database_url
    migrate(url)
    return SqlStore(url, linger=settings.write_behind_ms / 1000)
