"""How values reach a page. Much of what we show comes from outside (a callback's store
address, Magento's messages and answers), so every printed string loses the characters that
could make it read as something else, times name their zone, and only http(s) addresses
become links.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlsplit

from flask import Flask
from markupsafe import Markup

# C0 and C1 controls (tab and line breaks are harmless in HTML) and the bidirectional marks,
# embeddings, overrides and isolates (a right-to-left override in a URL's path can make
# `.../lmth.xe` display as `.../ex.html`).
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(value):
    """Jinja's ``finalize``: each such character in a printed string shows as ``[U+202E]``."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return _INVISIBLE.sub(lambda m: f"[U+{ord(m.group()):04X}]", value)
    return value


def is_web_link(target: object) -> bool:
    """Whether ``target`` may become a link: ``javascript:`` or ``data:`` would run in our origin."""
    if not isinstance(target, str):
        return False
    try:
        parts = urlsplit(target)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def when(value: dt.datetime | None, seconds: bool = False) -> Markup | str:
    """A stored (naive UTC) time, saying so; app.js shows it in the browser's zone."""
    if value is None:
        return "—"
    text = value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return Markup('<time datetime="{}Z">{} UTC</time>').format(value.strftime("%Y-%m-%dT%H:%M:%S"), text)


def init_app(app: Flask) -> None:
    app.jinja_env.finalize = visible
    app.jinja_env.tests["web_link"] = is_web_link
    app.jinja_env.filters["when"] = when
