"""Settings, read from ``INTEGRATION_*`` environment variables (see the README's table), and from
``settings.env`` in the instance folder for those the environment does not set."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet
from dotenv import load_dotenv
from limits import parse

PREFIX = "INTEGRATION_"
SETTINGS_FILE = "settings.env"
#: Well inside activation.STALE_CLAIM (90 s), after which another worker may take an exchange over.
MAX_STORE_DEADLINE = 60.0


class ConfigError(RuntimeError):
    """The app cannot start with this configuration; the message says how to fix it."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(PREFIX + name)
    return value if value not in (None, "") else default


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _number(name: str, default: str, kind: type = float):
    value = _env(name, default)
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name} must be a{'n integer' if kind is int else ' number'}, "
                          f"not {value!r}") from None


def from_environment(instance_path: str) -> dict:
    # ./scripts/run writes the development settings here, so every entry point (flask run, the
    # CLI in another terminal, gunicorn) sees the same ones. The environment wins over the file.
    load_dotenv(Path(instance_path) / SETTINGS_FILE, override=False)
    env = _env("ENV", "production")
    if env not in ("production", "development"):
        raise ConfigError(f"{PREFIX}ENV must be 'production' or 'development', not {env!r}")
    instance = Path(instance_path)
    config = {
        "ENV_NAME": env,
        "SQLALCHEMY_DATABASE_URI": _env("DATABASE_URL", f"sqlite:///{instance / 'integration.sqlite'}"),
        "SECRET_KEY": _env("SECRET_KEY"),
        "ENCRYPTION_KEYS": _list(_env("ENCRYPTION_KEYS")),
        "PUBLIC_URL": (_env("PUBLIC_URL") or "").rstrip("/"),
        "ALLOWED_STORE_HOSTS": _list(_env("ALLOWED_STORE_HOSTS")),
        "STRICT_STORE_HOSTS": _flag(_env("STRICT_STORE_HOSTS")),
        "DNS_SERVERS": _list(_env("DNS_SERVERS")),
        "SELF_REGISTRATION": _flag(_env("SELF_REGISTRATION")),
        "RATELIMIT_STORAGE_URI": _env("REDIS_URL", "memory://"),
        "STORE_TIMEOUT": _number("STORE_TIMEOUT", "20"),
        "STORE_DEADLINE": _number("STORE_DEADLINE", "30"),
        "PENDING_EXPIRY_HOURS": _number("PENDING_EXPIRY_HOURS", "24"),
        # Magento's oauth/consumer/expiration_period: what the pop-up counts down.
        "ACTIVATION_WINDOW": _number("ACTIVATION_WINDOW", "300", int),
        "LOGIN_RATE_LIMIT": _env("LOGIN_RATE_LIMIT", "10 per minute"),
        "ACCOUNT_RATE_LIMIT": _env("ACCOUNT_RATE_LIMIT", "30 per hour"),
        "CALLBACK_RATE_LIMIT": _env("CALLBACK_RATE_LIMIT", "30 per minute"),
        "IDENTITY_RATE_LIMIT": _env("IDENTITY_RATE_LIMIT", "60 per minute"),
        "DEVICE_RATE_LIMIT": _env("DEVICE_RATE_LIMIT", "10 per hour"),
        "SESSION_COOKIE_SECURE": (_env("PUBLIC_URL") or "").startswith("https://"),
        "TRUSTED_PROXIES": _number("TRUSTED_PROXIES", "0", int),
        "JOBS_REDIS_URL": _env("REDIS_URL"),
        "JOBS_EMBEDDED_THREADS": _number("JOBS_THREADS", "2", int),
        # Under gunicorn, without Redis: the embedded runner in a niced process of each worker.
        "JOBS_PROCESS": _flag(_env("JOBS_PROCESS", "1")),
        "JOBS_NICE": _number("JOBS_NICE", "10", int),
        # RQ stops a job running longer than this; long work goes on in a new job well before.
        "JOBS_TIMEOUT": _number("JOBS_TIMEOUT", "600", int),
        # A job queued this long that the runner no longer holds (Redis restarted) is queued again.
        "JOBS_REQUEUE_AFTER": _number("JOBS_REQUEUE_AFTER", "30"),
        # Read again by password_hashing when its pool starts (from the environment, which
        # settings.env has filled by then); read here so that a bad value stops the start.
        "HASH_PROCESSES": _number("HASH_PROCESSES", "1", int),
        "HASH_NICE": _number("HASH_NICE", "8", int),
        "ALLOWED_WEBHOOK_HOSTS": _list(_env("ALLOWED_WEBHOOK_HOSTS")),
        "WEBHOOK_RETRY_CAP": _number("WEBHOOK_RETRY_CAP", "3600"),
        "REDIS_URL": _env("REDIS_URL"),
        "STORE_CONCURRENCY": _number("STORE_CONCURRENCY", "8", int),
        "STORE_CAP_WAIT": _number("STORE_CAP_WAIT", "1"),
        "API_RATE_LIMIT": _env("API_RATE_LIMIT", "3000 per minute"),
        "API_CACHE_SECONDS": _number("API_CACHE_SECONDS", "5"),
        "API_AUDIT_FLUSH_SECONDS": _number("API_AUDIT_FLUSH_SECONDS", "1"),
        "OPS_RATE_LIMIT": _env("OPS_RATE_LIMIT", "300 per minute"),
        "METRICS_ALLOW": _list(_env("METRICS_ALLOW", "127.0.0.0/8,::1")),
        # Development (./scripts/run's sandbox demo) links a store without a phone app in the way.
        "REQUIRE_2FA": (_env("REQUIRE_2FA", "off" if env == "development" else "admins") or "").strip().lower(),
        "SYNC_INTERVAL": _number("SYNC_INTERVAL", "300"),
        "SYNC_PAGE_SIZE": _number("SYNC_PAGE_SIZE", "100", int),
        "SYNC_OVERLAP": _number("SYNC_OVERLAP", "120"),
        "SYNC_RECONCILE_INTERVAL": _number("SYNC_RECONCILE_INTERVAL", "3600"),
        "SYNC_LEASE": _number("SYNC_LEASE", "600"),
        "SYNC_SLICE": _number("SYNC_SLICE", "120"),
        "SYNC_BACKOFF_BASE": _number("SYNC_BACKOFF_BASE", "60"),
        "SYNC_RECORD_MAX_KB": _number("SYNC_RECORD_MAX_KB", "64", int),
        "INTAKE_RATE_LIMIT": _env("INTAKE_RATE_LIMIT", "1200 per minute"),
        "INTAKE_MAX_BYTES": _number("INTAKE_MAX_BYTES", str(256 * 1024), int),
        "INTAKE_KEEP_HOURS": _number("INTAKE_KEEP_HOURS", "72"),
        "EVENT_RETENTION_DAYS": _number("EVENT_RETENTION_DAYS", "30"),
        "INTAKE_QUARANTINE_HOURS": _number("INTAKE_QUARANTINE_HOURS", "24"),
        "INTAKE_QUARANTINE_MAX": _number("INTAKE_QUARANTINE_MAX", "200", int),
        "INTAKE_AUTO_SUBSCRIBE": _flag(_env("INTAKE_AUTO_SUBSCRIBE", "on")),
        "INTAKE_ASYNC_EVENTS": _list(_env("INTAKE_ASYNC_EVENTS")),
        "EXPORT_RETENTION_HOURS": _number("EXPORT_RETENTION_HOURS", "24"),
        "EXPORT_PAGE_SIZE": _number("EXPORT_PAGE_SIZE", "100", int),
        # How often due feeds are looked for (once across all workers with RQ); a change waits
        # at most the interval plus this before its sync starts.
        "SYNC_TICK": _number("SYNC_TICK", "5"),
        "SYNC_ENTITIES": _list(_env("SYNC_ENTITIES")),
    }
    if env == "development":
        instance.mkdir(parents=True, exist_ok=True)
        config["SECRET_KEY"] = config["SECRET_KEY"] or _kept(instance / "secret_key", lambda: secrets.token_hex(32))
        config["ENCRYPTION_KEYS"] = config["ENCRYPTION_KEYS"] or (
            _kept(instance / "encryption_key", lambda: Fernet.generate_key().decode()),)
    return config


def check(config: dict) -> None:
    """Refuse to run on missing or placeholder secrets."""
    key = config.get("SECRET_KEY") or ""
    if len(key) < 32 or key.lower() in ("dev", "changeme", "secret"):
        raise ConfigError(
            f"{PREFIX}SECRET_KEY must be set to a random value of at least 32 characters "
            f"(for example: python3 -c 'import secrets; print(secrets.token_hex(32))'), "
            f"or run with {PREFIX}ENV=development to have one created in the instance folder."
        )
    for name in ("LOGIN_RATE_LIMIT", "ACCOUNT_RATE_LIMIT", "DEVICE_RATE_LIMIT", "IDENTITY_RATE_LIMIT",
                 "API_RATE_LIMIT"):
        try:
            parse(str(config.get(name)))
        except ValueError:
            raise ConfigError(f"{PREFIX}{name} must be a rate like '30 per hour', not {config.get(name)!r}") from None
    if int(config.get("ACTIVATION_WINDOW", 300)) < 1:
        raise ConfigError(f"{PREFIX}ACTIVATION_WINDOW must be at least 1 second (Magento's "
                          "oauth/consumer/expiration_period, 300 unless the store changed it)")
    if int(config.get("STORE_CONCURRENCY", 8)) < 1:
        raise ConfigError(f"{PREFIX}STORE_CONCURRENCY must be at least 1 (calls at once to one store)")
    unknown = set(config.get("SYNC_ENTITIES") or ()) - {"products", "orders", "customers", "stock"}
    if unknown:
        raise ConfigError(f"{PREFIX}SYNC_ENTITIES: {', '.join(sorted(unknown))} not known; "
                          "choose from products, orders, customers, stock")
    if float(config.get("SYNC_TICK", 5)) <= 0:
        raise ConfigError(f"{PREFIX}SYNC_TICK must be a positive number of seconds")
    for name in ("API_CACHE_SECONDS", "API_AUDIT_FLUSH_SECONDS"):  # bounds the README promises
        if not 0 <= float(config.get(name, 0)) <= 60:
            raise ConfigError(f"{PREFIX}{name} must be between 0 and 60 seconds, not {config.get(name)!r}")
    for entry in config.get("METRICS_ALLOW") or ():
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{PREFIX}METRICS_ALLOW: {entry!r} is not an address or CIDR network") from None
    keys = config.get("ENCRYPTION_KEYS") or ()
    if not keys:
        raise ConfigError(
            f"{PREFIX}ENCRYPTION_KEYS must list at least one Fernet key, newest first "
            f"(make one with: .venv/bin/python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')."
        )
    for k in keys:
        try:
            Fernet(k)
        except (ValueError, TypeError):
            raise ConfigError(f"{PREFIX}ENCRYPTION_KEYS contains a value that is not a Fernet key "
                              "(32 url-safe base64-encoded bytes)") from None
    if config.get("REQUIRE_2FA", "admins") not in ("admins", "all", "off"):
        raise ConfigError(f"{PREFIX}REQUIRE_2FA must be 'admins', 'all' or 'off', not {config.get('REQUIRE_2FA')!r}")
    _check_dns_servers(config)
    deadline = config.get("STORE_DEADLINE", 30)
    if not 1 <= deadline <= MAX_STORE_DEADLINE:
        raise ConfigError(f"{PREFIX}STORE_DEADLINE must be between 1 and {MAX_STORE_DEADLINE:g} seconds: a token "
                          "exchange runs under it, and a longer one could be taken for a dead one and run twice")


def _check_dns_servers(config: dict) -> None:
    from .magento.store_url import nameserver

    for text in config.get("DNS_SERVERS") or ():
        try:
            nameserver(text)
        except ValueError:
            raise ConfigError(f"{PREFIX}DNS_SERVERS: {text!r} is not an IP address with an optional :port") from None


def _kept(path: Path, make) -> str:
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()
