"""registered models: names with numbered versions, aliases, and every move of an alias

A registered model is a name, unique in its tenant; its versions (1, 2, ...) are the tenant's
models, each registered once per name; an alias points at one version; each move of an alias
(made, moved, deleted) is a row of `model_alias_moves`.

Revision ID: 0014
Revises: 0013
Create Date: 2027-01-24 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_registered_models_tenant_name"),
    )
    op.create_index(
        "ix_registered_models_tenant_created_at_id",
        "registered_models",
        ["tenant_id", "created_at", "id"],
    )
    op.create_table(
        "model_versions",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column(
            "registered_model_id",
            sa.String(40),
            sa.ForeignKey("registered_models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("model_id", sa.String(40), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("registered_by_key_id", sa.String(40)),
        sa.Column("registered_by_job_id", sa.String(40), sa.ForeignKey("jobs.id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("registered_model_id", "number", name="uq_model_versions_number"),
        sa.UniqueConstraint("registered_model_id", "model_id", name="uq_model_versions_model"),
    )
    op.create_index("ix_model_versions_model_id", "model_versions", ["model_id"])
    op.create_table(
        "model_aliases",
        sa.Column(
            "registered_model_id",
            sa.String(40),
            sa.ForeignKey("registered_models.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("alias", sa.String(100), primary_key=True),
        sa.Column("version_id", RowId, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_model_aliases_version_id", "model_aliases", ["version_id"])
    op.create_table(
        "model_alias_moves",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column(
            "registered_model_id",
            sa.String(40),
            sa.ForeignKey("registered_models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_model_alias_moves_registered_model_id", "model_alias_moves", ["registered_model_id"]
    )


def downgrade() -> None:
    op.drop_table("model_alias_moves")
    op.drop_table("model_aliases")
    op.drop_table("model_versions")
    op.drop_table("registered_models")
