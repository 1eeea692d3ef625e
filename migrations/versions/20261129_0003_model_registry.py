"""model registry: tags, datasets, deletion, imports

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 07:29:18.762581
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("base_model_id", sa.String(length=40), nullable=True))
    op.create_index(op.f("ix_jobs_base_model_id"), "jobs", ["base_model_id"], unique=False)
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("spec", sa.JSON),
                    sa.column("base_model_id", sa.String))  # fmt: skip
    connection = op.get_bind()
    for id_, spec in connection.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        if spec.get("base_model_id"):
            connection.execute(
                jobs.update().where(jobs.c.id == id_).values(base_model_id=spec["base_model_id"])
            )
    # Batch mode: SQLite can only change a column's nullability by rebuilding the table.
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("datasets", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch.alter_column("source_job_id", existing_type=sa.String(length=40), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.alter_column("source_job_id", existing_type=sa.String(length=40), nullable=False)
        batch.drop_column("deleted_at")
        batch.drop_column("datasets")
        batch.drop_column("tags")
    op.drop_index(op.f("ix_jobs_base_model_id"), table_name="jobs")
    op.drop_column("jobs", "base_model_id")
