"""``POST /magento/callback``: Magento's server-to-server POST when an admin clicks Activate.

Magento waits for us (5 s timeout), ignores our status code and body, and drops the data
on a redirect; so we answer 200 quickly and never redirect. A 400 is for the logs and for
anyone testing the URL by hand: Magento does not show it.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, render_template, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import RequestEntityTooLarge

from ..activation import CallbackRejected, parse_callback, record_callback
from ..doctor import PROBE_FIELD
from ..extensions import csrf, db, kept_across_commits, limiter
from ..metrics import CALLBACKS
from ..web import body_within

bp = Blueprint("callback", __name__, url_prefix="/magento")
log = logging.getLogger("integration.callback")

#: Magento's four fields are a few hundred bytes.
MAX_CALLBACK_BYTES = 8 * 1024


@bp.route("/callback", methods=["GET", "HEAD"])
def about():
    return render_template("callback/about.html")


@bp.post("/callback")
@csrf.exempt
@limiter.limit(lambda: current_app.config["CALLBACK_RATE_LIMIT"])
@kept_across_commits()  # the log line after the commit names what was stored, not a reload of it
def receive():
    started = time.perf_counter()
    if request.mimetype != "application/x-www-form-urlencoded":
        CALLBACKS.labels("rejected").inc()
        return _plain("rejected: expected an application/x-www-form-urlencoded POST", 415)
    try:
        body_within(MAX_CALLBACK_BYTES)  # counted on the bytes read: chunked bodies too
    except RequestEntityTooLarge:
        CALLBACKS.labels("rejected").inc()
        return _plain(f"rejected: the body is larger than {MAX_CALLBACK_BYTES} bytes", 413)
    if PROBE_FIELD in request.form and "oauth_consumer_key" not in request.form:
        return _plain("OK: test POST received; nothing stored", 200)  # the doctor's reachability check
    try:
        callback = parse_callback(request.form)
        activation = record_callback(callback, request.remote_addr, started)
    except CallbackRejected as exc:
        db.session.rollback()
        CALLBACKS.labels("rejected").inc()
        log.warning("callback rejected from %s: %s", request.remote_addr, exc)
        return _plain(f"rejected: {exc}", 400)
    except OperationalError:
        # Not stored, so not acknowledged with a 200. Magento ignores the status and opens
        # the pop-up anyway; our identity page then says the callback never arrived and to
        # click Activate again, which is exactly what fixes it.
        db.session.rollback()
        CALLBACKS.labels("unavailable").inc()
        log.exception("callback could not be stored: database unavailable")
        return _plain("unavailable: the callback could not be stored; click Activate again shortly", 503)
    CALLBACKS.labels("stored").inc()
    log.info("callback stored: link %s (%s) from %s", activation.store_link_id, activation.kind,
             activation.store_base_url)
    return _plain("OK", 200)


def _plain(text: str, status: int) -> Response:
    return Response(text + "\n", status, content_type="text/plain; charset=utf-8")
