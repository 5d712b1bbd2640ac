"""In-memory state of the sandbox store: integrations, OAuth tokens, nonces, catalogue.

A sandbox is a test double and a demo; nothing in it needs to survive a restart.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from dataclasses import dataclass, field

ALPHABET = string.ascii_lowercase + string.digits


def random_string(n: int = 32) -> str:
    """Magento's ``Helper\\Oauth::generateRandomString``: ``[0-9a-z]``."""
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


@dataclass
class Token:
    kind: str  # verifier | request | access
    token: str
    secret: str
    verifier: str
    created_at: float = field(default_factory=time.time)
    revoked: bool = False


@dataclass
class Integration:
    id: int
    name: str
    callback_url: str
    identity_url: str
    consumer_key: str = field(default_factory=random_string)
    consumer_secret: str = field(default_factory=random_string)
    consumer_updated_at: float = field(default_factory=time.time)
    status: str = "Inactive"
    token: Token | None = None
    resources: tuple[str, ...] = ("Magento_Backend::all",)

    @property
    def is_token_exchange(self) -> bool:
        return bool(self.callback_url and self.identity_url)


@dataclass
class Counters:
    request_token_calls: int = 0
    access_token_calls: int = 0
    rest_calls: int = 0


class SandboxState:
    def __init__(self, *, profile: str = "2.4.8+", consumer_expiry: int = 300, bearer: bool = False,
                 latency: float = 0.0, products: int = 0, version: str = "2.4.8"):
        self.lock = threading.RLock()
        self.integrations: dict[int, Integration] = {}
        self.nonces: set[tuple[int, str]] = set()
        self.profile = profile
        self.consumer_expiry = consumer_expiry
        self.bearer = bearer
        self.latency = latency
        self.version = version
        self.counters = Counters()
        #: failures to inject: list of (path_prefix, status, count); consumed in order.
        self.failures: list[list] = []
        self.products: dict[str, dict] = {}
        self.orders: list[dict] = []
        self.customers: list[dict] = []
        from .catalogue import generate

        generate(self, products)

    def add_integration(self, name: str, callback_url: str = "", identity_url: str = "") -> Integration:
        with self.lock:
            integration = Integration(len(self.integrations) + 1, name, callback_url, identity_url)
            self.integrations[integration.id] = integration
            return integration

    def by_consumer_key(self, key: str) -> Integration | None:
        return next((i for i in self.integrations.values() if i.consumer_key == key), None)

    def by_access_token(self, token: str) -> Integration | None:
        return next((i for i in self.integrations.values()
                     if i.token and i.token.kind == "access" and i.token.token == token), None)

    def use_nonce(self, integration: Integration, nonce: str) -> bool:
        with self.lock:
            key = (integration.id, nonce[:32])
            if key in self.nonces:
                return False
            self.nonces.add(key)
            return True

    def take_failure(self, path: str) -> int | None:
        with self.lock:
            for failure in self.failures:
                prefix, status, count = failure
                if path.startswith(prefix) and count > 0:
                    failure[2] -= 1
                    return status
        return None
