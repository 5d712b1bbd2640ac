"""State of the sandbox store: integrations, OAuth tokens, nonces, catalogue.

With a ``path`` the integrations and their tokens are kept in that file (written atomically
after every change, bounded in size), so a restarted sandbox still accepts the tokens our
database holds, as a real store would. Nonces and the generated catalogue live in memory only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import string
import tempfile
import threading
import time
from dataclasses import dataclass, field

ALPHABET = string.ascii_lowercase + string.digits
# Bounds that keep the state file under MAX_STATE_BYTES: 200 integrations of at most ~4.6 KB.
MAX_INTEGRATIONS = 200
MAX_NAME_LENGTH = 255
MAX_URL_LENGTH = 2048
MAX_STATE_BYTES = 1024 * 1024


class SandboxLimit(Exception):
    """An integration the sandbox refuses to keep (too many, or a field too long)."""


class StateFileError(Exception):
    """The state file cannot be used; the message says which file and what to do."""


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
    schema_calls: int = 0
    #: Searches refused for a pageSize above the input limit; the largest pageSize answered.
    page_size_refusals: int = 0
    largest_page_served: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class SandboxState:
    def __init__(self, *, profile: str = "2.4.8+", consumer_expiry: int = 300, bearer: bool = False,
                 latency: float = 0.0, products: int = 0, version: str = "2.4.8", path: str | None = None,
                 async_events: bool = False):
        self.lock = threading.RLock()
        self.path = path
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
        #: Whether the store has MSI (``inventory/source-items``); stock lives on the products either way.
        self.msi = False
        #: Input limits on: the largest pageSize a search accepts (Magento's default is 300); None: off.
        self.input_limit: int | None = None
        #: Magento_WebapiAsync installed: ``/rest/{store}/async/schema`` answers.
        self.async_api = True
        #: Whether the store has aligent/magento-async-events (its REST routes, its pushes).
        self.async_events_module = async_events
        from .async_events import AsyncEvents

        self.async_events = AsyncEvents()
        from .catalogue import generate

        generate(self, products)
        if path is not None:
            self._load()

    def add_integration(self, name: str, callback_url: str = "", identity_url: str = "", *,
                        resources: tuple[str, ...] | None = None) -> Integration:
        """A new integration, granted ``resources`` (default: *Resource Access: All*)."""
        if len(name) > MAX_NAME_LENGTH or max(len(callback_url), len(identity_url)) > MAX_URL_LENGTH:
            raise SandboxLimit(f"names are at most {MAX_NAME_LENGTH} characters, URLs at most {MAX_URL_LENGTH}")
        with self.lock:
            if len(self.integrations) >= MAX_INTEGRATIONS:
                raise SandboxLimit(f"this sandbox keeps at most {MAX_INTEGRATIONS} integrations")
            integration = Integration(max(self.integrations, default=0) + 1, name, callback_url, identity_url)
            if resources is not None:
                integration.resources = tuple(resources)
            self.integrations[integration.id] = integration
            self.save()
            return integration

    def remove_integration(self, integration_id: int) -> bool:
        """Magento's *Delete* in the grid: the integration and its tokens are gone, so its next
        signed call is refused as a consumer that does not exist. False if there was none."""
        with self.lock:
            if self.integrations.pop(integration_id, None) is None:
                return False
            self.save()
            return True

    def save(self) -> None:
        """Write the integrations to ``path`` (if any): a new file renamed over the old one, so a
        crash leaves either the old state or the new, never half of one."""
        if self.path is None:
            return
        with self.lock:
            text = json.dumps({"integrations": [dataclasses.asdict(i) for i in self.integrations.values()]})
            folder = os.path.dirname(os.path.abspath(self.path))
            fd, tmp = tempfile.mkstemp(prefix=".sandbox-", suffix=".tmp", dir=folder)  # mode 0600: it holds secrets
            try:
                with open(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateFileError(f"cannot read {self.path}: {exc.strerror}") from None
        if len(raw) > MAX_STATE_BYTES:
            raise StateFileError(f"{self.path} is larger than {MAX_STATE_BYTES} bytes; delete it to start afresh")
        try:
            for item in json.loads(raw)["integrations"][:MAX_INTEGRATIONS]:
                token = item.pop("token")
                integration = Integration(**{**item, "resources": tuple(item["resources"]),
                                             "token": Token(**token) if token else None})
                self.integrations[integration.id] = integration
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateFileError(f"{self.path} is not a sandbox state file ({type(exc).__name__}: {exc}); "
                                 "delete it to start afresh") from None

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
