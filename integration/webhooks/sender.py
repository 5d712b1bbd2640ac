"""One POST to a webhook endpoint: through the stores' address guard (``safe_session``: the
connected socket must be public unless the host is allow-listed), never following a
redirect, and within a total deadline.

``requests`` timeouts bound each socket operation, not the whole exchange: a receiver that
sends one byte every few seconds would hold a sender for ever. So a watchdog thread shuts
the connection's socket down when the deadline passes, wherever the exchange is.
"""

from __future__ import annotations

import heapq
from http.cookiejar import DefaultCookiePolicy
import itertools
import socket
import threading
import time
from dataclasses import dataclass

import requests

from ..magento.errors import UnsafeStoreURL
from ..magento.store_url import StorePolicy
from ..magento.transport import safe_session

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


class _Slot:
    """The connection one exchange is using, for the watchdog to cut."""

    __slots__ = ("connection", "cut")

    def __init__(self):
        self.connection = None
        self.cut = False


_current = threading.local()


def _tracked(connection_cls):
    """``connection_cls`` (the guard's checked connection) that tells the running exchange's
    slot which connection it uses; the address check in ``_new_conn`` is inherited as is."""

    class Tracked(connection_cls):
        def connect(self):
            _note(self)
            return super().connect()

        def request(self, *args, **kwargs):
            _note(self)
            return super().request(*args, **kwargs)

    return Tracked


def _note(connection) -> None:
    slot = getattr(_current, "slot", None)
    if slot is not None:
        slot.connection = connection
        connection.owner_slot = slot  # a pooled connection reused by another exchange changes hands


class _Watchdog:
    def __init__(self):
        self._heap: list[tuple[float, int, _Slot]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, slot: _Slot) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), slot))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, slot = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            connection = slot.connection
            if connection is not None and getattr(connection, "owner_slot", None) is slot:
                slot.cut = True
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


_watchdog = _Watchdog()
_sessions: dict[tuple[StorePolicy, int], requests.Session] = {}
_sessions_lock = threading.Lock()


def session_for(policy: StorePolicy, pool_size: int) -> requests.Session:
    """One keep-alive session per policy per process, shared by the sending threads."""
    key = (policy, pool_size)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = safe_session(policy, pool_size=pool_size)
            session.headers["User-Agent"] = "magento-integration-companion/0.1 (webhooks)"
            session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # receivers set none on us
            for adapter in {id(a): a for a in session.adapters.values()}.values():
                classes = adapter.poolmanager.pool_classes_by_scheme
                for scheme, pool_cls in list(classes.items()):
                    classes[scheme] = type(pool_cls.__name__, (pool_cls,),
                                           {"ConnectionCls": _tracked(pool_cls.ConnectionCls)})
            _sessions[key] = session
        return session


def post(session: requests.Session, url: str, body: bytes, headers: dict[str, str],
         deadline: float = DEADLINE) -> Answer:
    started = time.monotonic()
    slot = _Slot()
    _current.slot = slot
    _watchdog.arm(started + deadline, slot)
    status, error = None, None
    try:
        response = session.post(url, data=body, headers=headers, allow_redirects=False, stream=True,
                                timeout=(min(CONNECT_TIMEOUT, deadline), deadline))
        try:
            status = response.status_code
            read = 0
            for chunk in response.iter_content(16 * 1024):
                read += len(chunk)
                if read > MAX_ANSWER_BYTES:
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
        if slot.cut or isinstance(exc, requests.Timeout):
            error = f"no complete answer within {deadline:g} s"
        elif isinstance(exc, requests.ConnectionError):
            error = f"could not connect: {_reason(exc)}"
        else:
            error = f"request failed: {_reason(exc)}"
    finally:
        slot.connection = None
        _current.slot = None
    if slot.cut:  # whatever was parsed from a cut exchange is not an answer
        status, error = None, f"no complete answer within {deadline:g} s"
    return Answer(status, error, int((time.monotonic() - started) * 1000))


def _reason(exc: Exception) -> str:
    cause = exc
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    return (str(cause) or type(cause).__name__)[:300]
