"""a job's checkpoints, kept by its retention policy; pausing a running job

`checkpoints` lists each checkpoint a job's trainer saved that its retention policy keeps:
while the job runs and after it ends. `jobs.pause_requested_at` is set when a running job is
asked to pause: its trainer checkpoints and stops, and the job becomes `paused`.
`jobs.base_checkpoint_job_id`: the job whose checkpoint a job started from, kept for its
lineage after that checkpoint is dropped.

Revision ID: 0012
Revises: 0011
Create Date: 2027-01-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),
    )
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("pause_requested_at", sa.DateTime(timezone=True), nullable=True))
        jobs.add_column(sa.Column("base_checkpoint_job_id", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("base_checkpoint_job_id")
        jobs.drop_column("pause_requested_at")
    op.drop_table("checkpoints")
