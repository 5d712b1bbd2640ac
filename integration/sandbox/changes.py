"""The sandbox catalogue changing on demand: products created, edited and deleted, orders
placed, stock changed, each stamped with ``updated_at`` as Magento does, so a change feed can
be watched end to end. ``Churn`` makes N random changes a minute in a background thread."""

from __future__ import annotations

import random
import threading
import time

from .catalogue import product as make_product


def pushed(state, event_name: str, record: dict) -> None:
    """What the async-events module does after a save: queue the event for its subscribers."""
    if state.async_events_module:
        state.async_events.notify(event_name, dict(record))


def now_stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def _next_id(records) -> int:
    return max((int(r.get("id") or r.get("entity_id") or 0) for r in records), default=0) + 1


def create_product(state, fields: dict | None = None) -> dict:
    with state.lock:
        new = make_product(_next_id(state.products.values()))
        new.update({k: v for k, v in (fields or {}).items() if k not in ("id", "created_at", "updated_at")})
        new["created_at"] = new["updated_at"] = now_stamp()
        if new["sku"] in state.products:
            raise ValueError(f"a product with SKU {new['sku']!r} already exists")
        state.products[new["sku"]] = new
        pushed(state, "catalog.product.created", new)
        return new


def update_product(state, sku: str, fields: dict) -> dict:
    with state.lock:
        product = state.products.get(sku)
        if product is None:
            raise KeyError(sku)
        product.update({k: v for k, v in fields.items() if k not in ("id", "sku", "created_at", "updated_at")})
        product["updated_at"] = now_stamp()
        pushed(state, "catalog.product.updated", product)
        return product


def delete_product(state, sku: str) -> None:
    with state.lock:
        if state.products.pop(sku, None) is None:
            raise KeyError(sku)


def set_stock(state, sku: str, qty: float) -> dict:
    with state.lock:
        product = state.products.get(sku)
        if product is None:
            raise KeyError(sku)
        extension = product.setdefault("extension_attributes", {})
        extension["stock_item"] = {"qty": qty, "is_in_stock": qty > 0}
        product["updated_at"] = now_stamp()
        pushed(state, "catalog.product.updated", product)
        return product


def place_order(state, sku: str | None = None, email: str | None = None) -> dict:
    with state.lock:
        sku = sku or next(iter(state.products), "SB-00001")
        i = _next_id(state.orders)
        stamp = now_stamp()
        order = {"entity_id": i, "increment_id": f"{100000000 + i}", "state": "new", "status": "pending",
                 "grand_total": round(10 + i * 3.5, 2), "customer_email": email or f"buyer{i}@example.com",
                 "created_at": stamp, "updated_at": stamp, "items": [{"sku": sku, "qty_ordered": 1}]}
        state.orders.append(order)
        pushed(state, "sales.order.created", order)
        return order


def update_order(state, order_id: int, status: str) -> dict:
    with state.lock:
        order = next((o for o in state.orders if o["entity_id"] == order_id), None)
        if order is None:
            raise KeyError(order_id)
        order["status"] = order["state"] = status
        order["updated_at"] = now_stamp()
        pushed(state, "sales.order.updated", order)
        return order


def source_items(state) -> list[dict]:
    """MSI's view of the stock: one source item per product, on the default source."""
    with state.lock:
        items = []
        for product in state.products.values():
            stock = (product.get("extension_attributes") or {}).get("stock_item") or {"qty": 100, "is_in_stock": True}
            items.append({"sku": product["sku"], "source_code": "default", "quantity": stock["qty"],
                          "status": 1 if stock["is_in_stock"] else 0})
        return items


def stock_items(state) -> list[dict]:
    """CatalogInventory's view (stores without MSI): one stock item per product, stock 1."""
    with state.lock:
        items = []
        for number, product in enumerate(state.products.values(), start=1):
            stock = (product.get("extension_attributes") or {}).get("stock_item") or {"qty": 100, "is_in_stock": True}
            items.append({"item_id": product.get("id", number), "product_id": product.get("id", number),
                          "stock_id": 1, "qty": stock["qty"], "is_in_stock": bool(stock["is_in_stock"]),
                          "low_stock_date": None})
        return items


def random_change(state, rng: random.Random) -> str:
    """One change of the kinds a live store sees, mostly edits and orders."""
    skus = list(state.products)
    roll = rng.random()
    if not skus or roll < 0.1:
        return "created " + create_product(state)["sku"]
    sku = rng.choice(skus)
    if roll < 0.15 and len(skus) > 1:
        delete_product(state, sku)
        return f"deleted {sku}"
    if roll < 0.45:
        update_product(state, sku, {"price": round(rng.uniform(5, 200), 2)})
        return f"repriced {sku}"
    if roll < 0.7:
        set_stock(state, sku, rng.randint(0, 100))
        return f"stock of {sku}"
    return f"order {place_order(state, sku)['increment_id']}"


class Churn:
    """``per_minute`` random changes a minute until ``stop()``."""

    def __init__(self, state, per_minute: float, seed: int | None = None):
        if per_minute <= 0:
            raise ValueError("churn is a positive number of changes per minute")
        self.state, self.interval = state, 60.0 / per_minute
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sandbox-churn", daemon=True)

    def start(self) -> Churn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            random_change(self.state, self.rng)


def select_fields(payload, spec: str):
    """Magento's ``fields=`` filter: ``items[id,sku],total_count`` keeps those keys only."""
    wanted = _parse_fields(spec)
    return _apply(payload, wanted) if wanted else payload


def _parse_fields(spec: str) -> dict:
    out: dict = {}
    stack = [out]
    name = ""
    for char in spec[:2000]:
        if char == "[":
            child: dict = {}
            stack[-1][name.strip()] = child
            stack.append(child)
            name = ""
        elif char in ",]":
            if name.strip():
                stack[-1][name.strip()] = None
            name = ""
            if char == "]" and len(stack) > 1:
                stack.pop()
        else:
            name += char
    if name.strip():
        stack[-1][name.strip()] = None
    return out


def _apply(value, wanted: dict):
    if isinstance(value, list):
        return [_apply(v, wanted) for v in value]
    if not isinstance(value, dict):
        return value
    return {k: (value[k] if sub is None else _apply(value[k], sub)) for k, sub in wanted.items() if k in value}
