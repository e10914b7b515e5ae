"""Each usage row keeps the HTTP request's id (its X-Request-Id: the client's, or the one the
server made), so that a request in the logs can be found among the usage rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("trace_id", sa.String(128), nullable=True))
        batch.create_index("ix_usage_trace_id", ["trace_id"])


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_index("ix_usage_trace_id")
        batch.drop_column("trace_id")
