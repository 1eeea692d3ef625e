"""token counts of chat datasets uploaded with a tokenizer; targets of regression datasets

A chat or preference upload may name a model (`tokenizer`: a configured Hugging Face causal LM
or a tunery causal_lm model) whose tokenizer and chat template count its tokens; the record
keeps them (`token_counts`), null for every other dataset, the datasets recorded before this
included. A regression upload's record names its numeric target columns (`targets`), null for
every other dataset.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-27 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as datasets:
        datasets.add_column(sa.Column("token_counts", sa.JSON(), nullable=True))
        datasets.add_column(sa.Column("targets", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as datasets:
        datasets.drop_column("targets")
        datasets.drop_column("token_counts")
