"""How the app reaches stores: the address policy, timeouts and deadline from the settings,
and the clients built from them. Everything that calls a store gets its client here."""

from __future__ import annotations

import threading

import requests
from flask import current_app

from .magento.client import Credentials, StoreClient
from .magento.store_url import StorePolicy
from .magento.token_exchange import TokenExchange
from .magento.transport import Deadline, safe_session

CONNECT_TIMEOUT = 5.0


def store_policy() -> StorePolicy:
    cfg = current_app.config
    return StorePolicy(tuple(cfg["ALLOWED_STORE_HOSTS"]), bool(cfg["STRICT_STORE_HOSTS"]),
                       tuple(cfg.get("DNS_SERVERS") or ()))


def _timeout() -> tuple[float, float]:
    return CONNECT_TIMEOUT, current_app.config["STORE_TIMEOUT"]


_sessions: dict[tuple[StorePolicy, int], requests.Session] = {}
_sessions_lock = threading.Lock()


def store_session() -> requests.Session:
    """The process's connection pool to stores: a call reuses a kept-alive connection (and
    its TLS session) instead of opening one per call."""
    size = max(int(current_app.config.get("STORE_CONCURRENCY") or 8), 10)
    key = (store_policy(), size)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = safe_session(key[0], pool_size=size, hosts=256)
        return session


def store_client(base_url: str, credentials: Credentials, *, profile: str | None = None, **kwargs) -> StoreClient:
    """A client for one action (a test, a console call, a manual link): everything it does
    is over within ``INTEGRATION_STORE_DEADLINE``. Pass ``deadline=None`` for a long job (an
    export), which gives each call that deadline instead; ``pool_size`` for a client with a
    connection pool of its own (concurrent export pages)."""
    seconds = current_app.config["STORE_DEADLINE"]
    if "session" not in kwargs and "pool_size" not in kwargs:
        kwargs["session"] = store_session()
    kwargs.setdefault("timeout", _timeout())
    kwargs.setdefault("deadline", Deadline(seconds))
    kwargs.setdefault("call_deadline", seconds)
    return StoreClient(base_url, credentials, profile=profile, policy=store_policy(), **kwargs)


def token_exchange() -> TokenExchange:
    """Both token steps within ``INTEGRATION_STORE_DEADLINE``."""
    return TokenExchange(safe_session(store_policy()), timeout=_timeout(),
                         deadline=current_app.config["STORE_DEADLINE"])
