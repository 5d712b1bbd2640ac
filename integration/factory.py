"""The application factory: configuration, extensions, blueprints."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from . import config as settings
from . import ratelimit_memory

ROOT = Path(__file__).resolve().parent.parent


class App(Flask):
    """Flask, remembering which hooks and views are plain functions: Flask asks ``inspect`` for
    each of them on every request (thirteen times for a proxied call, ~4% of its CPU)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._plain: set = set()

    def ensure_sync(self, func):
        try:
            if func in self._plain:
                return func
        except TypeError:  # not hashable: asked every time, as Flask does
            return super().ensure_sync(func)
        wrapped = super().ensure_sync(func)
        if wrapped is func and len(self._plain) < 10_000:  # registered functions: a bounded set
            self._plain.add(func)
        return wrapped


def create_app(test_config: dict | None = None) -> Flask:
    app = App(__name__, instance_path=os.environ.get("INTEGRATION_INSTANCE_PATH") or str(ROOT / "instance"),
                template_folder=str(ROOT / "templates"), static_folder="static")
    app.config.update(
        MAX_CONTENT_LENGTH=1024 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        WTF_CSRF_TIME_LIMIT=None,
        RATELIMIT_HEADERS_ENABLED=True,
        # Redis down must not lock everyone out: count in memory until it is back.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
    )
    app.config.update(settings.from_environment(app.instance_path))
    if test_config:
        app.config.update(test_config)
    settings.check(app.config)
    _size_pool(app.config)
    app.config["RATELIMIT_STORAGE_URI"] = ratelimit_memory.storage_uri(app.config.get("RATELIMIT_STORAGE_URI"))
    app.config["REMEMBER_COOKIE_SECURE"] = app.config["SESSION_COOKIE_SECURE"]

    from .crypto import Vault
    from .extensions import csrf, db, limiter, login_manager, migrate

    app.extensions["vault"] = Vault(tuple(app.config["ENCRYPTION_KEYS"]))
    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.session_protection = "strong"

    with app.app_context():
        _tune_sqlite(db.engine)

    from . import accounts, api, apikeys, auth, callback, cli, dashboard, errors, explorer, feeds, identity, intake, jobs, logs, ops, store_cap, web, webhooks

    app.url_map.converters["int"] = web.IdConverter
    app.register_blueprint(accounts.bp)
    app.register_blueprint(apikeys.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(callback.bp)
    app.register_blueprint(identity.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(ops.bp)
    api.init_app(app)
    store_cap.init_app(app)
    errors.init_app(app)
    web.init_app(app)
    cli.init_app(app)
    jobs.init_app(app)
    webhooks.init_app(app)
    feeds.init_app(app)
    explorer.init_app(app)
    intake.init_app(app)
    logs.init_app(app)
    # Last, once every hook and error handler is registered: the API's calls get an app of their
    # own with the same ones (integration/api/lean.py).
    api.lean.mount(app)

    if app.config.get("TRUSTED_PROXIES"):
        # Behind N proxies: client address and scheme from their X-Forwarded-* headers
        # (rate limits and the audit trail need the real address). Outermost: for the API's
        # calls as for the rest.
        from werkzeug.middleware.proxy_fix import ProxyFix

        from .web import forwarded_address_checked

        n = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(forwarded_address_checked(app.wsgi_app), x_for=n, x_proto=n, x_host=n)
    return app


def _size_pool(config: dict) -> None:
    """Keep a connection per request thread (gunicorn.conf.py runs 8): past the pool's size,
    every checkout opened a new connection and closed it again. SQLite's connections take the
    writer gate (sqlite_gate.py)."""
    from sqlalchemy.engine import make_url

    url = make_url(config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return  # one shared in-memory connection (StaticPool), nothing to size
    options = config["SQLALCHEMY_ENGINE_OPTIONS"] = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    options.setdefault("pool_size", 16)
    options.setdefault("max_overflow", 16)
    if url.get_backend_name() == "sqlite":
        from .sqlite_gate import GatedConnection

        options["connect_args"] = {"factory": GatedConnection, **options.get("connect_args", {})}


def _tune_sqlite(engine) -> None:
    """WAL and a busy timeout, so several threads or workers can share the file."""
    if engine.dialect.name != "sqlite":
        return
    from sqlalchemy import event

    from . import sqlite_gate

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(sqlite_gate.BUSY_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    sqlite_gate.install(engine)
