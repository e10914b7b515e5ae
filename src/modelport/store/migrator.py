"""Runs the packaged Alembic migrations from code: no alembic.ini, no working-directory rules.

The migration scripts live in `migrations/` inside this package and are the same for SQLite
and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import exc

from modelport.store.base import StoreError
from modelport.store.engine import make_engine, redacted

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """An Alembic configuration pointing at the packaged migrations."""
    config = Config()
    # Config values go through configparser interpolation, where "%" is special.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def upgrade_to_head(url: str) -> None:
    """Apply every migration not yet applied to the database at `url`."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except exc.SQLAlchemyError as error:
        raise StoreError(f"cannot migrate database {redacted(url)}: {error}") from None
    finally:
        engine.dispose()
