"""JSON text byte for byte as the standard library writes it (``ensure_ascii=False``, no spaces),
at orjson's speed wherever orjson writes the same bytes: a change feed's page serialises every
record twice (its fingerprint, its event), and the standard encoder was most of a page's JSON.

    json_text.canonical(record)   # == json.dumps(record, sort_keys=True, separators=(",", ":"),
                                  #               ensure_ascii=False, default=str).encode()
    json_text.compact(value)      # == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    json_text.compact_utf8(value) # == json_text.compact(value).encode()

The bytes must not change: fingerprints already kept were made by the standard encoder (a
different fingerprint would send an unchanged record again), and event payloads are replayed
as stored. orjson (3.x) writes the same bytes for what JSON decodes to (dicts with string keys,
lists, strings, integers, floats, booleans, ``None``) but for three cases, each sent to the
standard encoder instead:

* a float of magnitude from 1e-9 up to 1e-4: ``1e-05`` there, ``0.00001`` or ``1e-5`` here
  (found in orjson's output, where only such a float can put ``0.0000`` or a one-digit negative
  exponent after ``:``, ``,``, ``[`` or at the start, rarely anything else in a string);
* ``NaN`` and ``Infinity`` (which Python's decoder accepts): orjson writes ``null``, so a value
  with a ``null`` in orjson's output is looked through for them;
* integers beyond 64 bits, strings with lone surrogates, nesting deeper than orjson's limit and
  types orjson does not write itself, and strict subclasses of ``str``, ``int``, ``dict``,
  ``list`` and dataclasses and dates (passed through to ``default``): orjson raises.

What orjson writes natively that JSON never decodes to (``uuid.UUID``, ``enum.Enum`` members,
orjson's own ``Fragment``) is not for these functions.
"""

from __future__ import annotations

import json
import math
import re
from json.encoder import encode_basestring

import orjson

_SORTED = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: Everything but what JSON decodes to goes to ``default``, which refuses it.
_OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
#: A number token orjson writes differently from ``float.__repr__`` (1e-9 <= |x| < 1e-4).
_SHORT_FLOAT = re.compile(rb"(?:^|[:,\[])-?0\.0000|[0-9]e-[1-9](?:[,\]}]|$)")


def canonical(value) -> bytes:
    """``value`` as sorted, compact JSON in UTF-8 (what a fingerprint hashes)."""
    out = _fast(value, orjson.OPT_SORT_KEYS)
    return out if out is not None else _SORTED.encode(value).encode()


def compact(value) -> str:
    """``value`` as compact JSON text, keys in their order (what an event payload holds)."""
    if type(value) is str:  # an event's entity and record id: what the standard encoder calls itself
        return encode_basestring(value)
    out = _fast(value, 0)
    return out.decode() if out is not None else _COMPACT.encode(value)


def compact_utf8(value) -> bytes:
    """``compact(value)`` in UTF-8 (a record weighed for its event)."""
    out = _fast(value, 0)
    return out if out is not None else _COMPACT.encode(value).encode()


def _refuse(value):
    raise TypeError(type(value).__name__)


def _fast(value, option: int) -> bytes | None:
    """orjson's bytes, or None where they could differ from the standard encoder's."""
    try:
        out = orjson.dumps(value, default=_refuse, option=option | _OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is one
        return None
    if (b".0000" in out or b"e-" in out) and _SHORT_FLOAT.search(out):
        return None
    if b"null" in out and _non_finite(value):
        return None
    return out


def _non_finite(value) -> bool:
    """Whether a NaN or an infinity is anywhere in ``value`` (dicts and lists, as orjson accepted)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False
