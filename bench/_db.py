"""A fresh, migrated database for a benchmark run."""

from __future__ import annotations

from sqlalchemy import text


def fresh_schema(app) -> None:
    """Migrate ``app``'s database from nothing; on PostgreSQL the public schema is dropped first."""
    from flask_migrate import upgrade

    from integration.extensions import db

    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            _create_database_if_missing(db.engine.url)
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        upgrade()


def _create_database_if_missing(url) -> None:
    """A benchmark's scratch database (``…/scratch`` in the README) need not exist beforehand."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    try:
        create_engine(url).connect().close()
        return
    except OperationalError as error:
        if "does not exist" not in str(error):
            raise
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    server.dispose()
