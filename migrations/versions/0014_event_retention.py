"""events are kept for a retention period: an index on when they happened, for the purge

Revision ID: 0014_event_retention
Revises: 0013_feeds_exports
"""
from alembic import op

revision = "0014_event_retention"
down_revision = "0013_feeds_exports"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_events_created_at", "events", ["created_at"])


def downgrade():
    op.drop_index("ix_events_created_at", table_name="events")
