"""OpenAI fine-tuning's metadata and suffix on jobs

A job made by `POST /v1/fine_tuning/jobs` keeps the request's `metadata` (up to 16 string
pairs, returned and filtered on) and `suffix` (part of the result model's name, returned as
`user_provided_suffix`); both null for every other job, the jobs recorded before this included.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-20 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("user_metadata", sa.JSON(), nullable=True))
        jobs.add_column(sa.Column("suffix", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("suffix")
        jobs.drop_column("user_metadata")
