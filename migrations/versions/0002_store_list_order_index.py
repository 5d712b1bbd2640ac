"""index the store list's order (updated_at, id)

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("store_links") as batch:
        batch.drop_index("ix_store_links_updated_at")
        batch.create_index("ix_store_links_updated_at_id", ["updated_at", "id"])


def downgrade():
    with op.batch_alter_table("store_links") as batch:
        batch.drop_index("ix_store_links_updated_at_id")
        batch.create_index("ix_store_links_updated_at", ["updated_at"])
