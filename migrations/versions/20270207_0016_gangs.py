"""gangs: the machines gathered for one attempt of a job of several nodes

Revision ID: 0016
Revises: 0015
Create Date: 2027-02-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gangs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("leader", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("endpoint", sa.String(300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gangs_job_id", "gangs", ["job_id"])
    op.create_table(
        "gang_members",
        sa.Column(
            "gang_id",
            sa.String(40),
            sa.ForeignKey("gangs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("slot", sa.Integer(), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended", sa.String(8), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("gang_members")
    op.drop_index("ix_gangs_job_id", table_name="gangs")
    op.drop_table("gangs")
