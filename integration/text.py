"""The one rule for text we store or print: no control characters, no bidi overrides.

Escape sequences in an email address drive the terminal of whoever runs ``users list``; a right-to-left
override makes ``moc.elpmaxe@`` read as something else. Text typed by people is refused (the service
that takes it checks :func:`has_controls`); text from elsewhere (a store's error message, a browser's
User-Agent) is stored with those characters replaced (:func:`neutralised`, applied to every text column
on write, see ``models``).
"""

from __future__ import annotations

import re

# The bidi marks, embeddings, overrides and isolates, and the Unicode line and paragraph separators.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_SINGLE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")  # C0, DEL, C1
_MULTI_LINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")  # the same, but tab and newline stay
REPLACEMENT = "\ufffd"


def has_controls(value: str) -> bool:
    return bool(_SINGLE_LINE.search(value))


def neutralised(value: str, *, multiline: bool = False) -> str:
    """``value`` with every unsafe character replaced by U+FFFD (multi-line text keeps tab and newline)."""
    return (_MULTI_LINE if multiline else _SINGLE_LINE).sub(REPLACEMENT, value)


def printable(value: str) -> str:
    """For a terminal: unsafe characters written as Python escapes (``\\x1b``, ``\\u202e``)."""
    return _SINGLE_LINE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)
