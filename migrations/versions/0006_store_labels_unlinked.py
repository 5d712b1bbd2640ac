"""store labels; unlinked stores get their own status

Revision ID: 0006_labels
Revises: 0005_sessions
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_labels"
down_revision = "0005_sessions"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("store_links") as batch:
        batch.add_column(sa.Column("label", sa.String(length=100), nullable=True))
    # Unlinking used to mark a store revoked with the error text "unlinked".
    op.execute("UPDATE store_links SET status = 'unlinked', last_error = NULL "
               "WHERE status = 'revoked' AND last_error = 'unlinked'")


def downgrade():
    op.execute("UPDATE store_links SET status = 'revoked', last_error = 'unlinked' WHERE status = 'unlinked'")
    with op.batch_alter_table("store_links") as batch:
        batch.drop_column("label")
