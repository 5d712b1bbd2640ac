"""Log records carry the request id, and anything that looks like a credential is masked,
in the message and in tracebacks, before any handler sees it."""

from __future__ import annotations

import logging
import re
import traceback

from flask import Flask, g, has_request_context

from .apikeys.service import mask

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


def redact(text: str) -> str:
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
