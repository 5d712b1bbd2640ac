"""integration.json_text writes exactly the standard encoder's bytes: fingerprints kept before it
came must match, and event payloads keep their form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration import json_text


def standard_sorted(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def standard_compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.floats(min_value=1e-10, max_value=2e-4) | st.floats(min_value=-2e-4, max_value=-1e-10)
           | st.text() | st.text(st.characters(codec="utf-8")) | st.sampled_from(["e-5", "x,0.0000", "null", "1e-05"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=30)


@settings(max_examples=3000, deadline=None)
@given(value=json_values)
def test_the_same_bytes_as_the_standard_encoder_for_anything_json_decodes_to(value):
    try:
        expected = standard_sorted(value)
    except UnicodeEncodeError:  # a lone surrogate: both refuse it
        with pytest.raises(UnicodeEncodeError):
            json_text.canonical(value)
    else:
        assert json_text.canonical(value) == expected
    assert json_text.compact(value) == standard_compact(value)
    try:
        expected = standard_compact(value).encode()
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            json_text.compact_utf8(value)
    else:
        assert json_text.compact_utf8(value) == expected


@pytest.mark.parametrize("value", [
    1e-05, -4.190936869343897e-05, 7.2e-06, 1e-09, 9.99e-05, [0.00001], {"w": 3e-7}, {"a": [1, 2e-8]},
    float("nan"), float("inf"), -float("inf"), {"a": None, "b": [None, float("nan")]}, {"t": (None, -float("inf"))},
    2**64, -2**63 - 1, {"deep": [2**70]},
])
def test_where_orjson_writes_otherwise_the_standard_bytes_are_written(value):
    assert json_text.canonical(value) == standard_sorted(value)
    assert json_text.compact(value) == standard_compact(value)
    assert json_text.compact_utf8(value) == standard_compact(value).encode()


def test_what_json_does_not_decode_to_is_written_as_the_standard_encoder_does():
    @dataclasses.dataclass
    class Point:
        x: int

    class Name(str):
        pass

    when = dt.datetime(2026, 11, 30, 12, 0, 1)
    value = {"when": when, "point": Point(1), "name": Name("n"), "day": when.date()}
    assert json_text.canonical(value) == standard_sorted(value)  # default=str
    assert json_text.canonical({3: "c", 1: "a"}) == standard_sorted({3: "c", 1: "a"}) == b'{"1":"a","3":"c"}'
    with pytest.raises(TypeError):
        json_text.compact({"when": when})  # as json.dumps without a default
    deep = []
    for _ in range(600):  # deeper than orjson goes
        deep = [deep]
    assert json_text.compact(deep) == standard_compact(deep)


def test_keys_sort_as_python_sorts_them():
    value = {"b": 1, "a": 2, "é": 3, "z": 4, "\U0001F600": 5, "\uffff": 6, "B": 7, "": 8}
    assert json_text.canonical(value) == standard_sorted(value)
    assert json_text.canonical(value).startswith(b'{"":8,"B":7,"a":2')


def test_plain_records_are_written_by_orjson_and_only_the_exceptions_by_the_standard_encoder(monkeypatch):
    class Standard:
        def encode(self, value):
            raise AssertionError("the standard encoder was used")

    monkeypatch.setattr(json_text, "_SORTED", Standard())
    monkeypatch.setattr(json_text, "_COMPACT", Standard())
    record = {"id": 7, "sku": "one-size", "name": "Tee, 0.0000 defects", "price": 12.5, "weight": None,
              "tiny": 0.001, "big": 1e22, "tags": ["e-", "at 0.00001%"], "extension_attributes": {"website_ids": [1]}}
    assert json_text.canonical(record) == standard_sorted(record)
    assert json_text.compact(record) == standard_compact(record)
    assert json_text.compact_utf8(record) == standard_compact(record).encode()
    for exception in ({"w": 1e-05}, {"w": 2e-7}, {"q": float("nan"), "n": None}, {"id": 2**64}):
        for write in (json_text.canonical, json_text.compact, json_text.compact_utf8):
            with pytest.raises(AssertionError):
                write(exception)
