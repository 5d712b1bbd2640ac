"""Log records carry the request id, and anything that looks like a credential is masked,
in the message and in tracebacks, before any handler sees it."""

from __future__ import annotations

import logging
import re
import traceback
from urllib.parse import unquote

from flask import Flask, g, has_request_context

from .apikeys.service import KEY_PREFIX, mask

_SECRET_VALUE = re.compile(
    r"""(?ix)
    (oauth_(?:consumer_secret|token_secret|token|verifier|signature|nonce)|access_token(?:_secret)?|
     consumer_secret|token_secret|password|secret|authorization)
    (["']?\s*[=:]\s*["']?)
    ((?:OAuth|Bearer)\s+[^\r\n]*|[^&\s"',;]+)
    """
)

# The events intake's URL carries its secret as the last path segment (integration/intake/routes.py).
_INTAKE_PATH_TOKEN = re.compile(r"(/magento/events/[^/\s]+/[^/\s]+/)[^/?#\s\"']+")


#: What ASCII text must hold for the patterns to find anything in it: one of these in lower case
#: (``_SECRET_VALUE``'s names, matched regardless of case), or these as they are (a key's prefix,
#: the intake's path). Text beyond ASCII always goes through the patterns, which fold case by
#: Unicode's rules (``ſ`` is an ``s`` to them).
_SECRET_WORDS = ("oauth_", "access_token", "secret", "password", "authorization")
_CASED_WORDS = (KEY_PREFIX, "/magento/events/")


def redact(text: str) -> str:
    """``text`` with credentials masked. Most lines (an access log's request line, a warning)
    cannot hold one: they skip the patterns, the same text either way (a property test holds
    the two to each other)."""
    if text.isascii():
        lowered = text.lower()
        if not any(word in lowered for word in _SECRET_WORDS) and not any(word in text for word in _CASED_WORDS):
            return text
    return _redact(text)


def redact_url(text: str) -> str:
    """A URL or request line, as a log shows it, with credentials masked, also where
    percent-encoding hides one from the patterns (``%6Dic_…``, ``access%5Ftoken=``, which the
    app decodes): such a line is logged decoded, masked."""
    decoded = text
    for _ in range(3):  # encoded again and again: decoded as often as it might be
        if "%" not in decoded:
            break
        decoded = unquote(decoded)
        masked = redact(decoded)
        if masked != decoded:
            return masked
    return redact(text)


def _redact(text: str) -> str:
    text = _INTAKE_PATH_TOKEN.sub(r"\1[redacted]", text)
    return mask(_SECRET_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text))


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` and masks credentials; installed on the handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is not ours to raise
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        return True


def init_app(app: Flask) -> None:
    if getattr(app, "_logging_configured", False):
        return
    app._logging_configured = True
    flt = RequestContextFilter()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
        root.addHandler(handler)
    for handler in root.handlers + app.logger.handlers:
        if not any(isinstance(f, RequestContextFilter) for f in handler.filters):
            handler.addFilter(flt)
    logging.getLogger("integration").setLevel(logging.INFO)
