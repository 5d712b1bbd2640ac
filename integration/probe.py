"""What a linked store can do, found out by asking it (the capability probe), kept per store.

A probe is one contact with the store (one audit entry, ``store.probed``) that reads:

* ``{base}magento_version``: "Magento/2.4 (Community)", the version and edition;
* the store's own schema, ``GET {base}rest/{code}/schema?services=all``, which Magento filters
  by the caller's ACL (``Webapi\\Model\\AbstractSchemaGenerator::getAllowedServicesMetadata``): the
  operations listed are exactly those this integration may call;
* ``/V1/store/storeViews`` and ``/V1/store/storeConfigs`` (ACL ``Magento_Backend::store``): the
  store views and the base currency;
* whether input limits are on: a search for nothing with a huge ``pageSize`` is refused with
  "Maximum SearchCriteria pageSize is %max" (``Framework\\Webapi\\Validator\\
  SearchCriteriaValidator``, HTTP 400) when they are, stating the maximum;
* whether Magento_WebapiAsync answers ``rest/{code}/async/schema``
  (``WebapiAsync\\Controller\\Rest\\AsynchronousSchemaRequestProcessor``): the async and bulk
  endpoints (``/rest/{code}/async/V1/…``, ``/rest/{code}/async/bulk/V1/…``) come with it.

It runs after every link and reauthorize (a background job), from the store page (*Probe now*)
and the CLI (``flask stores probe ID``). The export and the feeds read the detected page-size
limit (``page_size_for``) instead of failing on it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
from dataclasses import dataclass

from sqlalchemy import ForeignKey, LargeBinary, String, Text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from . import stores
from .extensions import db
from .magento import errors
from .magento.client import StoreClient
from .magento.search import SearchCriteria
from .models import StoreLink, User, utcnow

log = logging.getLogger("integration.probe")

#: Above any maximum an admin would configure: a store with input limits on refuses it and says its maximum.
PROBE_PAGE_SIZE = 100_000
#: The searches the page-size test may use (the first the integration is granted).
SEARCHES = ("products", "orders", "customers/search")
ASYNC_EVENTS_PREFIX = "/V1/async_event"


@dataclass(frozen=True)
class Feature:
    """Something of ours that needs an operation the store's ACL may not grant."""

    name: str
    method: str
    path: str
    tick: str   # what to tick on the integration's API tab in Magento
    used_by: str


FEATURES = (
    Feature("store views", "GET", "/V1/store/storeConfigs", "Stores › Settings › All Stores",
            "Test connection, store views and currency"),
    Feature("products", "GET", "/V1/products", "Catalog › Inventory › Products", "product export and feed"),
    Feature("orders", "GET", "/V1/orders", "Sales", "order export and feed"),
    Feature("customers", "GET", "/V1/customers/search", "Customers", "customer export and feed"),
)


class StoreCapabilities(db.Model):
    """The last probe of one store. ``operations`` is what its schema listed for our token
    (``"GET /V1/products"``…); the schema itself is kept gzipped for the API explorer."""

    __tablename__ = "store_capabilities"

    store_link_id: Mapped[int] = mapped_column(ForeignKey("store_links.id", ondelete="CASCADE"), primary_key=True)
    probed_at: Mapped[dt.datetime | None]
    #: Why the last probe failed (None: it worked).
    error: Mapped[str | None] = mapped_column(Text)
    version: Mapped[str | None] = mapped_column(String(64))
    edition: Mapped[str | None] = mapped_column(String(64))
    store_views: Mapped[str | None] = mapped_column(Text)  # JSON [{"id", "code", "name"}]
    base_currency: Mapped[str | None] = mapped_column(String(8))
    operations: Mapped[str | None] = mapped_column(Text)   # JSON ["GET /V1/products", …]
    #: None: input limits are off (or unknown when ``input_limits`` is None).
    max_page_size: Mapped[int | None]
    input_limits: Mapped[bool | None]
    async_api: Mapped[bool | None]
    schema_gz: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    schema_store_code: Mapped[str | None] = mapped_column(String(64))


@dataclass(frozen=True)
class Capabilities:
    """A read-only view of the last probe, for pages and other features."""

    probed_at: dt.datetime | None
    error: str | None
    version: str | None
    edition: str | None
    store_views: tuple[dict, ...]
    base_currency: str | None
    operations: frozenset[str]
    max_page_size: int | None
    input_limits: bool | None
    async_api: bool | None
    schema_store_code: str | None

    @property
    def known(self) -> bool:
        return self.probed_at is not None and bool(self.operations)

    def can(self, method: str, path: str) -> bool:
        return f"{method.upper()} {path}" in self.operations

    @property
    def async_events(self) -> bool:
        """aligent/magento-async-events is installed and ours to use: its ``/V1/async_event``
        routes are in the schema Magento filtered for our token."""
        return any(op.split(" ", 1)[1].startswith(ASYNC_EVENTS_PREFIX) for op in self.operations)

    def missing(self) -> list[Feature]:
        """Our features the integration was not granted (only once a schema was read)."""
        if not self.known:
            return []
        return [f for f in FEATURES if not self.can(f.method, f.path)]

    def warnings(self) -> list[str]:
        return [f"{f.name}: not granted — in Magento, edit the integration, API → tick {f.tick}, then Reauthorize "
                f"(needed for the {f.used_by})." for f in self.missing()]

    def resources(self) -> dict[str, int]:
        """Operations per REST resource (``/V1/products/{sku}`` counts for ``products``)."""
        counts: dict[str, int] = {}
        for op in sorted(self.operations):
            parts = op.split(" ", 1)[1].split("/")
            name = parts[2] if len(parts) > 2 else op
            counts[name] = counts.get(name, 0) + 1
        return counts


def _row(link: StoreLink) -> StoreCapabilities | None:
    return db.session.get(StoreCapabilities, link.id)


def capabilities_of(link: StoreLink) -> Capabilities | None:
    """What the last probe of ``link`` found, or None if it was never probed."""
    row = _row(link)
    if row is None:
        return None
    return Capabilities(
        probed_at=row.probed_at, error=row.error, version=row.version, edition=row.edition,
        store_views=tuple(json.loads(row.store_views or "[]")), base_currency=row.base_currency,
        operations=frozenset(json.loads(row.operations or "[]")), max_page_size=row.max_page_size,
        input_limits=row.input_limits, async_api=row.async_api, schema_store_code=row.schema_store_code)


def page_size_for(link: StoreLink, wanted: int) -> int:
    """``wanted``, or less if the store's input limits allow less."""
    row = _row(link)
    if row is not None and row.max_page_size:
        return max(1, min(wanted, row.max_page_size))
    return wanted


def note_page_size_limit(link_id: int, limit: int) -> None:
    """A store refused a page size and stated its maximum: remember it for the next run."""
    row = db.session.get(StoreCapabilities, link_id) or StoreCapabilities(store_link_id=link_id)
    row.max_page_size, row.input_limits = limit, True
    db.session.add(row)
    db.session.commit()


def schema_of(link: StoreLink) -> dict | None:
    """The store's schema as last probed (filtered by our ACL), or None."""
    row = _row(link)
    if row is None or row.schema_gz is None:
        return None
    return json.loads(gzip.decompress(row.schema_gz))


# --- probing -------------------------------------------------------------------------------

def probe(link: StoreLink, *, user: User | None = None, remote_addr: str | None = None) -> Capabilities:
    """Ask the store what it can do and keep the answer; raises ``MagentoError`` (the failure
    is kept too, and shown on the store page)."""
    try:
        with stores.contact(link, "store.probed", "capability probe", user=user, remote_addr=remote_addr) as client:
            found = _ask(client)
    except errors.MagentoError as exc:
        _keep(link, {"error": f"{exc.message} {exc.hint}".strip()})
        raise
    document = found.pop("schema")
    found["schema_gz"] = gzip.compress(json.dumps(document, separators=(",", ":")).encode("utf-8"))
    found["error"] = None
    version = None
    if found["version"]:
        version = f"Magento/{found['version']} ({found['edition']})" if found["edition"] else found["version"]
    _keep(link, found, version)
    return capabilities_of(link)


def _keep(link: StoreLink, values: dict, version: str | None = None) -> None:
    """Store a probe's result. Two probes may finish at once (the job queued with a link and
    *Probe now*, or the events intake asking first): the later one updates the row the
    earlier one created."""
    for attempt in (1, 2):
        row = _row(link) or StoreCapabilities(store_link_id=link.id)
        for name, value in values.items():
            setattr(row, name, value)
        row.probed_at = utcnow()
        if version:
            link.magento_version = version
        db.session.add(row)
        try:
            db.session.commit()
            return
        except IntegrityError:
            db.session.rollback()
            if attempt == 2:
                raise


def _ask(client: StoreClient) -> dict:
    version = edition = None
    try:
        version, edition = parse_version(client.magento_version())
    except errors.MagentoError:
        pass  # some stores hide it; the schema's info says the major.minor too
    document = client.schema()
    operations = sorted(f"{method.upper()} {path}" for path, methods in document["paths"].items()
                        if isinstance(methods, dict) for method in methods
                        if method.lower() in ("get", "post", "put", "delete", "patch"))
    info = document.get("info") if isinstance(document.get("info"), dict) else {}
    if version is None and isinstance(info.get("version"), str):
        version = info["version"][:32]
    if edition is None and isinstance(info.get("title"), str) and info["title"].startswith("Magento "):
        edition = info["title"][len("Magento "):][:32]
    granted = set(operations)
    views, currency = [], None
    if "GET /V1/store/storeViews" in granted:
        answer = client.get("store/storeViews")
        views = [{"id": v.get("id"), "code": str(v.get("code"))[:64], "name": str(v.get("name"))[:255]}
                 for v in (answer if isinstance(answer, list) else []) if isinstance(v, dict)
                 and v.get("code") != "admin"][:200]  # the admin "store" is not a store view
    if "GET /V1/store/storeConfigs" in granted:
        configs = stores.store_configs(client)
        currency = str(configs[0].get("base_currency_code") or "")[:8] or None
    limits, max_page = _page_size_limit(client, granted)
    try:
        client.schema(async_api=True)
        async_api = True
    except errors.NotFound:
        async_api = False
    except errors.MagentoError:
        async_api = None  # it answered something else: we cannot tell
    return {"version": version, "edition": edition, "store_views": json.dumps(views), "base_currency": currency,
            "operations": json.dumps(operations), "input_limits": limits, "max_page_size": max_page,
            "async_api": async_api, "schema_store_code": client.store_code, "schema": document}


def _page_size_limit(client: StoreClient, granted: set[str]) -> tuple[bool | None, int | None]:
    """(input limits on?, the largest pageSize accepted). A search that matches nothing (no
    record has id 0), asking for ``PROBE_PAGE_SIZE``: cheap either way, since Magento validates
    the criteria before it loads anything."""
    path = next((p for p in SEARCHES if f"GET /V1/{p}" in granted), None)
    if path is None:
        return None, None
    criteria = SearchCriteria().where("entity_id", 0).page(PROBE_PAGE_SIZE, 1)
    try:
        client.get(path, params=[*criteria.params(), ("fields", "total_count")])
    except errors.PageSizeTooLarge as exc:
        return True, exc.limit
    return False, None


def parse_version(text: str) -> tuple[str | None, str | None]:
    """``Magento/2.4 (Community)`` → ("2.4", "Community")."""
    text = text.strip()
    if not text.startswith("Magento/"):
        return None, None
    rest = text[len("Magento/"):]
    version, _, edition = rest.partition(" ")
    return version[:32] or None, edition.strip("() ")[:32] or None


# --- in the background -----------------------------------------------------------------------

def run_probe(link_id: int, subscribe_base: str | None = None) -> None:
    """The job: probe a store that is (still) linked. A failure is kept on the row and the
    audit trail; the job runner retries. ``subscribe_base`` (a store just linked or
    reauthorized): then subscribe to its async events at that address when it has the module,
    in this same job, so that the subscribing finds this probe's answer instead of probing the
    store a second time."""
    link = db.session.get(StoreLink, link_id)
    if link is None or link.status != StoreLink.LINKED or not link.has_token:
        return
    probe(link)
    if subscribe_base:
        from .intake.subscriptions import after_link  # intake → probe: imported when used

        after_link(link_id, subscribe_base)


def enqueue_probe(link_id: int, subscribe_base: str | None = None) -> None:
    """Probe soon (after a link or reauthorize; ``subscribe_base``: see ``run_probe``). Never
    raises: linking worked either way, and *Probe now* does the same."""
    from . import jobs

    try:
        jobs.enqueue(run_probe, link_id, subscribe_base, retries=2)
    except Exception:  # noqa: BLE001 - Redis down or similar
        log.warning("could not queue the capability probe of store %s", link_id, exc_info=True)
