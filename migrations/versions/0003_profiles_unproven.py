"""forget signature profiles recorded without proof

Revision ID: 0003_profiles
Revises: 0002

Until now every token exchange recorded 2.4.8+, and a request accepted under one profile
recorded it even when another profile signs that request the same way. None of the stored
values is known to be proven, so they become "not known yet"; the client learns the
profile again from the next requests that tell the profiles apart (2.4.8+ is still tried
first, so a 2.4.8+ store pays nothing for this).
"""
from alembic import op

revision = "0003_profiles"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE store_links SET signature_profile = NULL")


def downgrade():
    pass  # nothing to restore: the values were not evidence
