"""exports from the dashboard as jobs: the format and since-date asked for, the file made

Revision ID: 0013_feeds_exports
Revises: 0012_intake
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_feeds_exports"
down_revision = "0012_intake"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("export_format", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("export_since", sa.String(length=19), nullable=True))
        batch.add_column(sa.Column("file_name", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("file_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("file_expires_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("jobs") as batch:
        for column in ("file_expires_at", "file_size", "file_name", "export_since", "export_format"):
            batch.drop_column(column)
