"""tenants and api keys; jobs, models and datasets belong to a tenant

Rows made before tenants existed go to a tenant named `default` (created only if there are any).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:30:00
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNED = ("jobs", "models", "datasets")
# table -> (index on created_at before tenants, its columns)
LISTING_INDEXES = {
    "jobs": ("ix_jobs_created_at_id", ["created_at", "id"]),
    "models": ("ix_models_created_at", ["created_at"]),
    "datasets": ("ix_datasets_created_at_id", ["created_at", "id"]),
}


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("max_running_jobs", sa.Integer(), nullable=True),
        sa.Column("max_queued_jobs", sa.Integer(), nullable=True),
        sa.Column("max_storage_bytes", sa.BigInteger(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_sha256"),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"], unique=False)

    connection = op.get_bind()
    owned_rows = sum(
        connection.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar_one()
        for t in OWNED
    )
    default_tenant = None
    if owned_rows:
        default_tenant = f"tenant_{uuid.uuid4().hex}"
        tenants = sa.table("tenants", sa.column("id"), sa.column("name"), sa.column("created_at"))
        connection.execute(
            tenants.insert().values(id=default_tenant, name="default", created_at=datetime.now(UTC))
        )
    for table in OWNED:
        old_index, _ = LISTING_INDEXES[table]
        op.drop_index(old_index, table_name=table)
        op.add_column(table, sa.Column("tenant_id", sa.String(length=40), nullable=True))
        if default_tenant:
            connection.execute(sa.table(table, sa.column("tenant_id")).update().values(
                tenant_id=default_tenant))  # fmt: skip
        # Batch mode: SQLite changes nullability and adds foreign keys by rebuilding the table.
        with op.batch_alter_table(table) as batch:
            batch.alter_column("tenant_id", existing_type=sa.String(length=40), nullable=False)
            batch.create_foreign_key(f"fk_{table}_tenant_id", "tenants", ["tenant_id"], ["id"])
        op.create_index(
            f"ix_{table}_tenant_created_at_id", table, ["tenant_id", "created_at", "id"]
        )
    op.create_index("ix_jobs_tenant_status", "jobs", ["tenant_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_status", table_name="jobs")
    for table in OWNED:
        op.drop_index(f"ix_{table}_tenant_created_at_id", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_tenant_id", type_="foreignkey")
            batch.drop_column("tenant_id")
        old_index, columns = LISTING_INDEXES[table]
        op.create_index(old_index, table, columns)
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
