"""Magento's ``searchCriteria`` query parameters, applied to in-memory records."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

CAMEL = {"filterGroups": "filter_groups", "conditionType": "condition_type"}
_KEY = re.compile(r"^searchCriteria((?:\[[^\]]*\])+)$")


def parse(args: list[tuple[str, str]]) -> dict:
    """Nested dict from ``searchCriteria[a][0][b]=v`` pairs (PHP array syntax)."""
    tree: dict = {}
    for name, value in args:
        m = _KEY.match(name)
        if not m:
            continue
        # Magento maps the getters' camelCase names (its schema's) to the same setters as snake_case.
        keys = [CAMEL.get(k, k) for k in re.findall(r"\[([^\]]*)\]", m.group(1))]
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            node[keys[-1]] = value
    return tree


def _indexed(node) -> list:
    if not isinstance(node, dict):
        return []
    return [node[k] for k in sorted(node, key=lambda k: int(k) if k.isdigit() else 0)]


def _field(record: dict, name: str):
    # Magento filters and sorts products and customers by entity_id, but answers "id".
    if name == "entity_id" and "entity_id" not in record:
        return record.get("id")
    return record.get(name)


def _match(record: dict, f: dict) -> bool:
    field, value, cond = f.get("field", ""), f.get("value", ""), (f.get("condition_type") or "eq").lower()
    actual = _field(record, field)
    if cond == "null":
        return actual is None
    if cond == "notnull":
        return actual is not None
    if actual is None:
        return False
    text = str(actual)

    def num(x):
        try:
            return float(x)
        except (TypeError, ValueError):
            return None

    a, b = num(actual), num(value)
    cmp_pair = (a, b) if a is not None and b is not None else (text, value)
    if cond == "eq":
        return cmp_pair[0] == cmp_pair[1]
    if cond == "neq":
        return cmp_pair[0] != cmp_pair[1]
    if cond in ("like", "nlike"):
        hit = fnmatchcase(text.lower(), value.lower().replace("%", "*").replace("_", "?"))
        return hit if cond == "like" else not hit
    if cond in ("in", "nin"):
        hit = text in [v.strip() for v in value.split(",")]
        return hit if cond == "in" else not hit
    if cond in ("gt", "from"):
        return cmp_pair[0] > cmp_pair[1] if cond == "gt" else cmp_pair[0] >= cmp_pair[1]
    if cond in ("lt", "to"):
        return cmp_pair[0] < cmp_pair[1] if cond == "lt" else cmp_pair[0] <= cmp_pair[1]
    if cond == "gteq":
        return cmp_pair[0] >= cmp_pair[1]
    if cond == "lteq":
        return cmp_pair[0] <= cmp_pair[1]
    raise ValueError(f'Invalid condition type "{cond}"')


def apply(records: list[dict], criteria: dict) -> dict:
    """``{"items", "search_criteria", "total_count"}`` as Magento's search endpoints answer."""
    hits = records
    for group in _indexed(criteria.get("filter_groups")):
        filters = _indexed(group.get("filters") if isinstance(group, dict) else None)
        if filters:
            hits = [r for r in hits if any(_match(r, f) for f in filters if isinstance(f, dict))]
    in_id_order = True  # records are kept in id order, as a primary-key index returns them
    for order in reversed(_indexed(criteria.get("sortOrders"))):
        if isinstance(order, dict) and order.get("field") in ("entity_id", "id") and \
                order.get("direction", "ASC").upper() == "ASC" and in_id_order:
            continue
        if isinstance(order, dict) and order.get("field"):
            in_id_order = False
            field = order["field"]
            hits = sorted(hits, key=lambda r, f=field: (_field(r, f) is None, _field(r, f)),
                          reverse=(order.get("direction", "ASC").upper() == "DESC"))
    total = len(hits)
    try:
        size = int(criteria.get("pageSize") or 0)
        page = max(int(criteria.get("currentPage") or 1), 1)
    except ValueError:
        raise ValueError("pageSize and currentPage must be numbers") from None
    if size > 0:
        last = max((total + size - 1) // size, 1)
        page = min(page, last)  # Magento's collections clamp past-the-end pages to the last one
        hits = hits[(page - 1) * size: page * size]
    return {"items": hits, "search_criteria": criteria, "total_count": total}
