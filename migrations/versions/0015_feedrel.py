"""jobs that outlive their worker and their queue: a lease on each job (exports), the key of its
queue entry and when it was queued (found again when Redis lost it), how often it was taken up
again; a first pass from nothing kept where it stands between jobs

Revision ID: 0015_feedrel
Revises: 0014_event_retention
"""
import sqlalchemy as sa
from alembic import op

revision = "0015_feedrel"
down_revision = "0014_event_retention"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("queue_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("queued_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("takeovers", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("feed_states") as batch:
        batch.add_column(sa.Column("pass_offset", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pass_started_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("pass_newest", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("pass_read", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("pass_total", sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table("feed_states") as batch:
        for column in ("pass_total", "pass_read", "pass_newest", "pass_started_at", "pass_offset"):
            batch.drop_column(column)
    with op.batch_alter_table("jobs") as batch:
        for column in ("takeovers", "queued_at", "queue_key", "lease_expires_at", "lease_owner"):
            batch.drop_column(column)
