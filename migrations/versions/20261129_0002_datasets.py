"""uploaded datasets and the jobs that read them

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 06:57:48.478358
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("num_examples", sa.BigInteger(), nullable=False),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("feature_names", sa.JSON(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("class_counts", sa.JSON(), nullable=False),
        sa.Column("splits", sa.JSON(), nullable=False),
        sa.Column("label_column", sa.String(length=200), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_datasets_created_at_id", "datasets", ["created_at", "id"], unique=False)
    op.create_index(op.f("ix_datasets_sha256"), "datasets", ["sha256"], unique=False)
    op.create_table(
        "job_datasets",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "dataset_id"),
    )
    op.create_index(
        op.f("ix_job_datasets_dataset_id"), "job_datasets", ["dataset_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_job_datasets_dataset_id"), table_name="job_datasets")
    op.drop_table("job_datasets")
    op.drop_index(op.f("ix_datasets_sha256"), table_name="datasets")
    op.drop_index("ix_datasets_created_at_id", table_name="datasets")
    op.drop_table("datasets")
