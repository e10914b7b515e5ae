"""Credit leases replace per-request holds; usage rows say when counts are estimates and why a
cost differs from what the upstream reported.

Holds still in the table (their requests were in flight when the old version stopped) are
given back first: the balance gets the amount again and the key's spending loses it, so the
books balance without them. The new `accounts.balance_nano` is the free balance, and
`api_keys.spent_nano` counts settled spending plus what is leased for the key.

Revision ID: 0003
Revises: 0002
Create Date: 2025-09-01
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _timestamp(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _give_back(table: str) -> None:
    """Every row of `table` (holds or credit leases): its amount back to its account's
    balance and out of its key's spending. Correlated subqueries: plain SQL on both
    databases."""
    rows = sa.table(table, sa.column("account_id"), sa.column("key_id"), sa.column("amount_nano"))
    accounts = sa.table("accounts", sa.column("id"), sa.column("balance_nano"))
    keys = sa.table("api_keys", sa.column("id"), sa.column("spent_nano"))
    to_account = (
        sa.select(sa.func.coalesce(sa.func.sum(rows.c.amount_nano), 0))
        .where(rows.c.account_id == accounts.c.id)
        .scalar_subquery()
    )
    to_key = (
        sa.select(sa.func.coalesce(sa.func.sum(rows.c.amount_nano), 0))
        .where(rows.c.key_id == keys.c.id)
        .scalar_subquery()
    )
    held_accounts = sa.select(rows.c.account_id)
    held_keys = sa.select(rows.c.key_id)
    op.execute(
        accounts.update()
        .where(accounts.c.id.in_(held_accounts))
        .values(balance_nano=accounts.c.balance_nano + to_account)
    )
    op.execute(
        keys.update().where(keys.c.id.in_(held_keys)).values(spent_nano=keys.c.spent_nano - to_key)
    )


def upgrade() -> None:
    _give_back("holds")
    op.drop_index("ix_holds_expires_at", table_name="holds")
    op.drop_table("holds")

    op.create_table(
        "credit_leases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "account_id",
            sa.Integer,
            sa.ForeignKey("accounts.id", name="fk_credit_leases_account_id"),
            nullable=False,
        ),
        sa.Column(
            "key_id",
            sa.Integer,
            sa.ForeignKey("api_keys.id", name="fk_credit_leases_key_id"),
            nullable=False,
        ),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("amount_nano", sa.BigInteger, nullable=False),
        _timestamp("created_at"),
        _timestamp("expires_at"),
        sqlite_autoincrement=True,  # ids never reused: a stale id cannot reach another lease
    )
    op.create_index("ix_credit_leases_expires_at", "credit_leases", ["expires_at"])
    op.create_index("ix_credit_leases_owner", "credit_leases", ["owner"])
    op.create_index("ix_credit_leases_account_id", "credit_leases", ["account_id"])
    op.create_index("ix_credit_leases_key_id", "credit_leases", ["key_id"])

    # NOT NULL with a default: existing rows read false. SQLite adds both in place.
    with op.batch_alter_table("usage") as batch:
        batch.add_column(
            sa.Column("estimated", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("anomaly", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("anomaly")
        batch.drop_column("estimated")
    _give_back("credit_leases")
    op.drop_table("credit_leases")  # dropping a table drops its indexes
    op.create_table(
        "holds",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column(
            "account_id",
            sa.Integer,
            sa.ForeignKey("accounts.id", name="fk_holds_account_id"),
            nullable=False,
        ),
        sa.Column(
            "key_id",
            sa.Integer,
            sa.ForeignKey("api_keys.id", name="fk_holds_key_id"),
            nullable=False,
        ),
        sa.Column("amount_nano", sa.BigInteger, nullable=False),
        _timestamp("created_at"),
        _timestamp("expires_at"),
    )
    op.create_index("ix_holds_expires_at", "holds", ["expires_at"])
