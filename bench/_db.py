"""A fresh, migrated database for a benchmark run."""

from __future__ import annotations

from sqlalchemy import text


def fresh_schema(app) -> None:
    """Migrate ``app``'s database from nothing; on PostgreSQL the public schema is dropped first."""
    from flask_migrate import upgrade

    from integration.extensions import db

    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        upgrade()
