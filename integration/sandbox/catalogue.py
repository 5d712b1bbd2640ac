"""Generated products, orders and customers with the shapes Magento's REST API returns."""

from __future__ import annotations

import datetime as dt


def _stamp(i: int) -> str:
    base = dt.datetime(2024, 1, 1) + dt.timedelta(minutes=37 * i)
    return base.strftime("%Y-%m-%d %H:%M:%S")


def product(i: int) -> dict:
    return {
        "id": i,
        "sku": f"SB-{i:05d}",
        "name": f"Sandbox product {i}",
        "attribute_set_id": 4,
        "price": round(5 + (i * 7.31) % 200, 2),
        "status": 1,
        "visibility": 4,
        "type_id": "simple",
        "created_at": _stamp(i),
        "updated_at": _stamp(i),
        "weight": 1,
        "extension_attributes": {"website_ids": [1]},
        "custom_attributes": [{"attribute_code": "description", "value": f"<p>Product {i}</p>"}],
    }


def generate(state, products: int) -> None:
    for i in range(1, products + 1):
        p = product(i)
        state.products[p["sku"]] = p
    for i in range(1, max(products // 10, 3) + 1):
        state.orders.append({
            "entity_id": i, "increment_id": f"{100000000 + i}", "state": "processing", "status": "processing",
            "grand_total": round(10 + i * 3.5, 2), "customer_email": f"buyer{i}@example.com",
            "created_at": _stamp(i), "updated_at": _stamp(i),
            "items": [{"sku": f"SB-{(i % max(products, 1)) + 1:05d}", "qty_ordered": 1}],
        })
        state.customers.append({
            "id": i, "email": f"buyer{i}@example.com", "firstname": "Buyer", "lastname": str(i),
            "group_id": 1, "store_id": 1, "website_id": 1, "created_at": _stamp(i), "updated_at": _stamp(i),
        })
