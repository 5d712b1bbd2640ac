"""For load balancers and monitoring: ``/healthz`` (the process answers), ``/readyz`` (it can
serve: database, migrations, Redis) and ``/metrics`` (Prometheus, from allowed addresses)."""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import text

from . import metrics
from .extensions import db, limiter

bp = Blueprint("ops", __name__)
log = logging.getLogger("integration.ops")


def _ops_limit() -> str:
    return current_app.config["OPS_RATE_LIMIT"]


# One budget per address for the three endpoints together (not three budgets of the same size).
limiter.shared_limit(_ops_limit, scope="ops")(bp)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    checks = {"database": _database(), "migrations": "skipped", "redis": "not configured"}
    if checks["database"] == "ok":
        checks["migrations"] = _migrations()
    if current_app.config.get("REDIS_URL"):
        checks["redis"] = _redis(current_app.config["REDIS_URL"])
    failing = [name for name, state in checks.items() if state not in ("ok", "skipped", "not configured")]
    return jsonify(status="failing" if failing else "ok", failing=failing, checks=checks), 503 if failing else 200


@bp.get("/metrics")
def prometheus():
    if not _metrics_allowed(request.remote_addr):
        return Response("metrics are served only to the addresses in INTEGRATION_METRICS_ALLOW\n", 403,
                        content_type="text/plain; charset=utf-8")
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


def _metrics_allowed(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in _networks(tuple(current_app.config["METRICS_ALLOW"])))


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _database() -> str:
    try:
        db.session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which kind
        db.session.rollback()
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return "unreachable"
    finally:
        db.session.commit()


def _migrations() -> str:
    try:
        current = set(db.session.scalars(text("SELECT version_num FROM alembic_version")))
    except Exception:  # noqa: BLE001 - no version table: never migrated
        db.session.rollback()
        return "not migrated (run: flask --app app db upgrade)"
    finally:
        db.session.commit()
    if current != _heads():
        return f"at {', '.join(sorted(current)) or 'nothing'}, not at head {', '.join(sorted(_heads()))} " \
               "(run: flask --app app db upgrade)"
    return "ok"


@lru_cache(maxsize=1)
def _heads() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from .factory import ROOT

    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return set(ScriptDirectory.from_config(config).get_heads())


def _redis(url: str) -> str:
    import redis

    try:
        _redis_client(url).ping()
        return "ok"
    except redis.RedisError as exc:
        log.warning("readiness: Redis unreachable (%s)", type(exc).__name__)
        return "unreachable"


@lru_cache(maxsize=4)
def _redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
