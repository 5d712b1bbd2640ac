"""Magento ``searchCriteria`` query parameters, built so that what we sign is what Magento verifies."""

from __future__ import annotations

from dataclasses import dataclass, field

CONDITIONS = frozenset({
    "eq", "neq", "like", "nlike", "in", "nin", "gt", "lt", "gteq", "lteq", "moreq", "from", "to",
    "null", "notnull", "finset", "nfinset",
})


@dataclass(frozen=True)
class Filter:
    field: str
    value: object = ""
    condition: str = "eq"

    def __post_init__(self):
        if self.condition not in CONDITIONS:
            raise ValueError(f"unknown condition {self.condition!r}; Magento knows {', '.join(sorted(CONDITIONS))}")
        if not self.field:
            raise ValueError("a filter needs a field")


@dataclass
class SearchCriteria:
    """Filter groups are ANDed; the filters inside one group are ORed (Magento's rule)."""

    groups: list[list[Filter]] = field(default_factory=list)
    sort_orders: list[tuple[str, str]] = field(default_factory=list)
    page_size: int | None = None
    current_page: int | None = None

    def where(self, field_name: str, value: object = "", condition: str = "eq") -> SearchCriteria:
        self.groups.append([Filter(field_name, value, condition)])
        return self

    def any_of(self, *filters: Filter) -> SearchCriteria:
        if not filters:
            raise ValueError("any_of needs at least one filter")
        self.groups.append(list(filters))
        return self

    def order_by(self, field_name: str, direction: str = "ASC") -> SearchCriteria:
        direction = direction.upper()
        if direction not in ("ASC", "DESC"):
            raise ValueError("direction must be ASC or DESC")
        self.sort_orders.append((field_name, direction))
        return self

    def page(self, size: int, current: int = 1) -> SearchCriteria:
        if size < 1 or current < 1:
            raise ValueError("page size and page number start at 1")
        self.page_size, self.current_page = size, current
        return self

    def copy(self) -> SearchCriteria:
        return SearchCriteria([list(g) for g in self.groups], list(self.sort_orders), self.page_size,
                              self.current_page)

    def params(self) -> list[tuple[str, str]]:
        """Flat ``searchCriteria[...]`` pairs, every name once, explicit indexes."""
        out: list[tuple[str, str]] = []
        for g, group in enumerate(self.groups):
            for f, flt in enumerate(group):
                prefix = f"searchCriteria[filter_groups][{g}][filters][{f}]"
                out.append((f"{prefix}[field]", flt.field))
                if flt.condition not in ("null", "notnull"):
                    out.append((f"{prefix}[value]", _value(flt.value)))
                out.append((f"{prefix}[condition_type]", flt.condition))
        for s, (name, direction) in enumerate(self.sort_orders):
            out.append((f"searchCriteria[sortOrders][{s}][field]", name))
            out.append((f"searchCriteria[sortOrders][{s}][direction]", direction))
        if self.page_size is not None:
            out.append(("searchCriteria[pageSize]", str(self.page_size)))
        if self.current_page is not None:
            out.append(("searchCriteria[currentPage]", str(self.current_page)))
        if not out:
            # An empty search must still say searchCriteria, or Magento answers 400.
            out.append(("searchCriteria", ""))
        return out


def _value(value: object) -> str:
    if isinstance(value, (list, tuple, set, frozenset)) and not isinstance(value, str):
        return ",".join(_value(v) for v in value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)

