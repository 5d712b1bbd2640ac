"""One POST to a webhook endpoint: through the stores' address guard (``safe_session``: the
connected socket must be public unless the host is allow-listed), never following a
redirect, and within a total deadline.

``requests`` timeouts bound each socket operation, not the whole exchange: a receiver that
sends one byte every few seconds would hold a sender for ever. So the stores' own
``DeadlineWatch`` shuts the connection's socket down when the deadline passes, wherever the
exchange is.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from ..magento.errors import UnsafeStoreURL
from ..magento.store_url import StorePolicy
from ..magento.transport import Deadline, DeadlineWatch, safe_session
from ..text import neutralised

#: Seconds for the whole exchange: connect, send, the receiver's answer.
DEADLINE = 10.0
CONNECT_TIMEOUT = 5.0
#: We read at most this much of a receiver's answer (only its status matters).
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """How a receiver answered one POST."""

    status: int | None  # None: no HTTP answer at all
    error: str | None   # None: a 2xx
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.error is None


_sessions: dict[tuple[StorePolicy, int], requests.Session] = {}
_sessions_lock = threading.Lock()


def session_for(policy: StorePolicy, pool_size: int) -> requests.Session:
    """One keep-alive session per policy per process, shared by the sending threads."""
    key = (policy, pool_size)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = safe_session(policy, pool_size=pool_size)  # keeps no cookies receivers set
            session.headers["User-Agent"] = "magento-integration-companion/0.1 (webhooks)"
            _sessions[key] = session
        return session


def post(session: requests.Session, url: str, body: bytes, headers: dict[str, str],
         deadline: float = DEADLINE) -> Answer:
    started = time.monotonic()
    watch = DeadlineWatch(Deadline(deadline))
    status, error = None, None
    try:
        with watch:
            response = session.post(url, data=body, headers=headers, allow_redirects=False, stream=True,
                                    timeout=(min(CONNECT_TIMEOUT, deadline), deadline))
            try:
                status = response.status_code
                read = 0
                for chunk in response.iter_content(16 * 1024):
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES or watch.cut:
                        break
            finally:
                response.close()
        if 300 <= status < 400:
            location = response.headers.get("Location", "")[:200]
            error = f"redirect ({status}) to {location or '?'} not followed"
        elif not 200 <= status < 300:
            error = f"answered HTTP {status}"
    except UnsafeStoreURL as exc:
        error = str(exc)
    except requests.RequestException as exc:
        if watch.cut or isinstance(exc, requests.Timeout):
            error = f"no complete answer within {deadline:g} s"
        elif isinstance(exc, requests.ConnectionError):
            error = f"could not connect: {_reason(exc)}"
        else:
            error = f"request failed: {_reason(exc)}"
    except ValueError as exc:
        # requests reads a redirect's Location as UTF-8 even when it does not follow it: one
        # receiver's unreadable answer is its own delivery's failure, never the whole batch's.
        error = f"unreadable answer: {_reason(exc)}"
    if watch.cut:  # whatever was parsed from a cut exchange is not an answer
        status, error = None, f"no complete answer within {deadline:g} s"
    # The receiver's words (a Location, a status line) go to the delivery log: no escape sequences.
    return Answer(status, error and neutralised(error), int((time.monotonic() - started) * 1000))


def _reason(exc: Exception) -> str:
    cause = exc
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    return (str(cause) or type(cause).__name__)[:300]
