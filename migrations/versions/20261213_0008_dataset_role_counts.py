"""messages per role of chat and preference datasets

Uploaded jsonl files may hold OpenAI-format chat, prompt/completion or preference examples;
their record counts messages per role (`role_counts`), null for every other dataset, the
datasets recorded before this included.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-13 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as datasets:
        datasets.add_column(sa.Column("role_counts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as datasets:
        datasets.drop_column("role_counts")
