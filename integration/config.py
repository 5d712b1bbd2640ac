"""Settings, read from ``INTEGRATION_*`` environment variables (see the README's table)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet

PREFIX = "INTEGRATION_"


class ConfigError(RuntimeError):
    """The app cannot start with this configuration; the message says how to fix it."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(PREFIX + name)
    return value if value not in (None, "") else default


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def from_environment(instance_path: str) -> dict:
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
        "SELF_REGISTRATION": _flag(_env("SELF_REGISTRATION")),
        "RATELIMIT_STORAGE_URI": _env("REDIS_URL", "memory://"),
        "STORE_TIMEOUT": float(_env("STORE_TIMEOUT", "20")),
        "LOGIN_RATE_LIMIT": _env("LOGIN_RATE_LIMIT", "10 per minute"),
        "ACCOUNT_RATE_LIMIT": _env("ACCOUNT_RATE_LIMIT", "30 per hour"),
        "SESSION_COOKIE_SECURE": (_env("PUBLIC_URL") or "").startswith("https://"),
        "TRUSTED_PROXIES": int(_env("TRUSTED_PROXIES", "0")),
        "REDIS_URL": _env("REDIS_URL"),
        "STORE_CONCURRENCY": int(_env("STORE_CONCURRENCY", "8")),
        "STORE_CAP_WAIT": float(_env("STORE_CAP_WAIT", "1")),
        "API_RATE_LIMIT": _env("API_RATE_LIMIT", "3000 per minute"),
        "OPS_RATE_LIMIT": _env("OPS_RATE_LIMIT", "300 per minute"),
        "METRICS_ALLOW": _list(_env("METRICS_ALLOW", "127.0.0.0/8,::1")),
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
            f"(for example: python -c 'import secrets; print(secrets.token_hex(32))'), "
            f"or run with {PREFIX}ENV=development to have one created in the instance folder."
        )
    if int(config.get("STORE_CONCURRENCY") or 0) < 1:
        raise ConfigError(f"{PREFIX}STORE_CONCURRENCY must be at least 1 (calls at once to one store)")
    for entry in config.get("METRICS_ALLOW") or ():
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{PREFIX}METRICS_ALLOW: {entry!r} is not an address or CIDR network") from None
    keys = config.get("ENCRYPTION_KEYS") or ()
    if not keys:
        raise ConfigError(
            f"{PREFIX}ENCRYPTION_KEYS must list at least one Fernet key, newest first "
            f"(make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')."
        )
    for k in keys:
        try:
            Fernet(k)
        except (ValueError, TypeError):
            raise ConfigError(f"{PREFIX}ENCRYPTION_KEYS contains a value that is not a Fernet key "
                              "(32 url-safe base64-encoded bytes)") from None


def _kept(path: Path, make) -> str:
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()
