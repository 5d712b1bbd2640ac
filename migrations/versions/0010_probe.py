"""capability probe: what each linked store can do (version, store views, granted operations,
input limits, async API) and its schema, kept for the API explorer

Revision ID: 0010_probe
Revises: 0009_feeds
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_probe"
down_revision = "0009_feeds"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "store_capabilities",
        sa.Column("store_link_id", sa.Integer(), sa.ForeignKey("store_links.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("probed_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("edition", sa.String(length=64), nullable=True),
        sa.Column("store_views", sa.Text(), nullable=True),
        sa.Column("base_currency", sa.String(length=8), nullable=True),
        sa.Column("operations", sa.Text(), nullable=True),
        sa.Column("max_page_size", sa.Integer(), nullable=True),
        sa.Column("input_limits", sa.Boolean(), nullable=True),
        sa.Column("async_api", sa.Boolean(), nullable=True),
        sa.Column("schema_gz", sa.LargeBinary(), nullable=True),
        sa.Column("schema_store_code", sa.String(length=64), nullable=True),
    )


def downgrade():
    op.drop_table("store_capabilities")
