"""how a forecasting dataset's series is read

A time-series upload (`task: forecasting`) keeps its time column, its season, its windows'
default context and horizon and the rows of its train, validation and test parts (`series`),
null for every other dataset, the datasets recorded before this included.

Revision ID: 0011
Revises: 0010
Create Date: 2027-01-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as datasets:
        datasets.add_column(sa.Column("series", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as datasets:
        datasets.drop_column("series")
