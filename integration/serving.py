"""The gunicorn worker: gthread, plus a lane of threads that only Magento's callback may use.

Why: a gthread worker hands every request to one pool of threads, first come first served.
A login holds its thread while its password hash is computed (a tenth of a second of CPU on
an idle machine, seconds in a burst), so a burst of logins fills the pool and Magento's
callback, which needs a few milliseconds, waits in the queue behind them; Magento gives up
after 5 seconds and the activation is lost. Here the main thread reads the first bytes of each
request (without consuming them) and sends ``POST …/magento/callback`` to threads of its own,
which nothing else can occupy. Every worker has the lane, so nothing needs routing in front
and every host is alike.

How many requests found no free thread is counted per kind
(``companion_requests_dispatched_total{kind, waited}``), which is how a test shows that no
callback waited behind a login.

``GUNICORN_CALLBACK_THREADS`` (default 4) sizes the lane; 0 turns it off (plain gthread
behaviour, callbacks queue with everything else).

Better still, the callback leaves the worker: each worker starts a process of its own
(``callback_process``, ``GUNICORN_CALLBACK_PROCESS``, default on) and passes it the connections
that carry a callback, so the callback no longer waits for this interpreter's lock behind the
worker's busy threads. The lane serves callbacks until that process is ready, and whenever it is
gone (it is started again) or its queue is full. ``companion_callback_handovers_total{outcome}``
counts which way each callback went.

A thread reads its request on a blocking socket; gthread sets no limit on how long, so a client
that sends a callback's first line and then nothing held a lane thread for ever (four of them,
the lane). Every read and write now gives up after ``GUNICORN_IDLE_TIMEOUT`` seconds without a
byte (default 10). A client trickling a byte at a time still holds its thread: in production a
buffering proxy in front reads whole requests first (README, Deploying).
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

from .children import Child
from .priority import lower_this_threads_priority

#: The first bytes of a callback request (any mount prefix before /magento/callback).
_METHOD = b"POST "
_PATH = b"/magento/callback"
#: Enough for the request line of any path we serve; a longer one is simply not a callback.
_PEEK = 512
#: How long a new connection may take to send its first bytes (gthread waits as long in a thread).
FIRST_BYTES_TIMEOUT = 5.0
#: How long a thread that answered a kept-alive request waits for that client's next one before
#: it gives the connection back to the poller (``GUNICORN_LINGER_MS``; 0: at once, as gthread).
LINGER = 0.002


def is_callback(first_bytes: bytes) -> bool:
    """Whether a request starting with these bytes is Magento's callback POST."""
    line = first_bytes.split(b"\r\n", 1)[0]
    if not line.startswith(_METHOD):
        return False
    target = line[len(_METHOD):].split(b" ", 1)[0].split(b"?", 1)[0]
    return target.endswith(_PATH)


class _Conn(TConn):
    idle_timeout: float = 10.0

    def init(self):
        super().init()
        self.sock.settimeout(self.idle_timeout)  # after gthread's setblocking(True), on every request


class CallbackLaneWorker(ThreadWorker):
    def init_process(self):
        self.lane_threads = int(os.environ.get("GUNICORN_CALLBACK_THREADS", "4"))
        self.callback_process = (Child("integration.callback_process", "callback process", self.log)
                                 if os.environ.get("GUNICORN_CALLBACK_PROCESS", "1") != "0" else None)
        _Conn.idle_timeout = float(os.environ.get("GUNICORN_IDLE_TIMEOUT", "10"))
        self.linger = float(os.environ.get("GUNICORN_LINGER_MS", LINGER * 1000)) / 1000
        self.callback_pool = (ThreadPoolExecutor(self.lane_threads, thread_name_prefix="callback")
                              if self.lane_threads > 0 else None)
        self._busy = {"callback": 0, "general": 0}
        self._busy_lock = threading.Lock()
        from .metrics import CALLBACK_HANDOVERS, DISPATCHED  # here, in the worker: the metric files are per process

        self._dispatched = DISPATCHED
        self._handovers = CALLBACK_HANDOVERS
        super().init_process()

    def get_thread_pool(self):
        """The general threads run at a lower priority than the lane's (``GUNICORN_GENERAL_NICE``,
        default 5): when the cores are short, the kernel runs a callback's thread first."""
        nice = int(os.environ.get("GUNICORN_GENERAL_NICE", "5"))
        return ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="general",
                                  initializer=lower_this_threads_priority, initargs=(nice,))

    def accept(self, listener):
        """As gthread's, except that a new connection waits in the poller (not in a thread) for
        its first bytes, so that ``enqueue_req`` can see which request it is."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = _Conn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        conn.timeout = time.monotonic() + FIRST_BYTES_TIMEOUT
        self.pending_conns.append(conn)
        self.poller.register(client_sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def enqueue_req(self, conn):
        kind = "callback" if is_callback(self._first_bytes(conn)) else "other"
        if kind == "callback" and self._hand_over(conn):
            return
        lane = "callback" if kind == "callback" and self.callback_pool is not None else "general"
        pool, size = (self.callback_pool, self.lane_threads) if lane == "callback" else (self.tpool, self.cfg.threads)
        with self._busy_lock:
            waited = self._busy[lane] >= size
            self._busy[lane] += 1
        self._dispatched.labels(kind, "yes" if waited else "no").inc()
        fs = pool.submit(self.handle if lane == "callback" else self._serve, conn)
        fs.add_done_callback(partial(self._finished, lane, conn))

    def _serve(self, conn):
        """``handle``, then the same client's next requests while each comes within ``linger``
        and no request waits for a thread: a caller that sends its next request at once (a
        pooled client) is served on, without the round trip through the poller, the main thread
        and the pool for every request (a third of the worker's CPU a request)."""
        while True:
            keepalive = self.handle(conn)
            if (keepalive is not True or not self.alive or self.linger <= 0 or self._busy["general"] > self.cfg.threads
                    or conn.cfg.is_ssl  # TLS: no peeking at the request (the main thread's way serves it)
                    or conn.parser.unreader.buf.getvalue()):  # read-ahead bytes: the main thread sees which request
                return keepalive
            try:
                conn.sock.settimeout(self.linger)
                first = conn.sock.recv(_PEEK, socket.MSG_PEEK)
            except OSError:  # nothing yet (timed out), or the connection is gone
                return keepalive
            if not first or is_callback(first):  # a callback goes to its lane or process
                return keepalive
            self._dispatched.labels("other", "no").inc()

    def _finished(self, lane, conn, fut):
        with self._busy_lock:
            self._busy[lane] -= 1
        self.method_queue.defer(self.finish_request, conn, fut)

    def _hand_over(self, conn) -> bool:
        """A new plain connection's callback goes to the callback process when it can take it."""
        if self.callback_process is None or conn.parser is not None or conn.cfg.is_ssl:
            return False
        addresses = json.dumps({"client": conn.client, "server": conn.server}).encode()
        if not (self.callback_process.usable()
                and self.callback_process.send(addresses, (conn.sock.fileno(),))):  # starting, full or gone
            self._handovers.labels("lane").inc()
            return False
        self._handovers.labels("process").inc()
        self.nr_conns -= 1
        conn.sock.close()  # our descriptor only: the process holds the connection now
        return True

    @staticmethod
    def _first_bytes(conn) -> bytes:
        if conn.parser is not None:  # a kept-alive connection may hold read-ahead bytes
            buffered = conn.parser.unreader.buf.getvalue()
            if buffered:
                return buffered[:_PEEK]
        if conn.cfg.is_ssl and not conn.initialized:
            return b""  # TLS bytes: gunicorn terminating TLS itself, the general pool then
        try:
            return conn.sock.recv(_PEEK, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (OSError, ValueError):  # nothing there yet, or a TLS socket (no flags allowed)
            return b""

    def run(self):
        if self.callback_process is not None:
            self.callback_process.start()
        try:
            super().run()
        finally:
            if self.callback_process is not None:
                self.callback_process.close(wait=self.cfg.graceful_timeout)
            if self.callback_pool is not None:
                self.callback_pool.shutdown(wait=False)
