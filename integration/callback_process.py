"""The process that serves Magento's callbacks for one gunicorn worker.

Why a process: a callback needs a few milliseconds of CPU, but in a worker it runs on a thread
of the same interpreter as the worker's pages, logins and jobs, and it takes the interpreter lock
back after every read, write and query. When the cores are short every one of those waits behind
busy threads, and Magento gives the callback 5 seconds in all. Here nothing else runs: the
callback waits only for a core, and it asks for one at the worker's own priority, above the
worker's general threads (``GUNICORN_GENERAL_NICE``) and its password hashes.

The worker (``serving.CallbackLaneWorker``) reads the first bytes of each new connection without
consuming them and passes the connections that carry ``POST …/magento/callback`` over a Unix
socket (``SCM_RIGHTS``). This process reads the request from the start, answers it through the
same WSGI app with the same gunicorn settings (``sys.argv`` of the master, ``gunicorn.conf.py``),
logs it in the same access log, and closes the connection. It tells the worker when it is ready
and ends when the worker's end of the socket closes; until it is ready, or when it is gone, the
worker serves callbacks on its own lane of threads.

    python -m integration.callback_process FD -- <gunicorn's arguments>
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from gunicorn.workers.base import Worker

from .children import READY, channel_and_args, load_app

#: A hand-over message: the client and server addresses as JSON, and one descriptor.
MAX_MESSAGE = 1024


class _Server:
    """What gunicorn's error page writer needs of a worker: its settings and its logger."""

    def __init__(self, cfg, log):
        self.cfg, self.log = cfg, log

    handle_error = Worker.handle_error


def _load(gunicorn_args: list[str]):
    cfg, wsgi = load_app(gunicorn_args)
    if hasattr(wsgi, "config"):
        # Callbacks only: background jobs run in the workers (or on RQ), never beside a callback.
        wsgi.config["JOBS_AUTOSTART"] = False
    return cfg, wsgi, cfg.logger_class(cfg)


def serve_one(server: _Server, wsgi, sock: socket.socket, client, listener) -> None:
    """One request on a handed-over connection, answered with ``Connection: close``."""
    from gunicorn import http, util
    from gunicorn.http import wsgi as gwsgi

    req = None
    try:
        req = next(http.get_parser(server.cfg, sock, client))
        resp, environ = gwsgi.create(req, sock, client, listener, server.cfg)
        environ["wsgi.multithread"] = True
        resp.force_close()
        started = datetime.now()
        respiter = wsgi(environ, resp.start_response)
        try:
            for item in respiter:
                resp.write(item)
            resp.close()
        finally:
            server.log.access(resp, req, environ, datetime.now() - started)
            if hasattr(respiter, "close"):
                respiter.close()
        util.close_graceful(sock)
    except (http.errors.NoMoreData, StopIteration, OSError):
        util.close(sock)
    except Exception as exc:  # gunicorn's own answer: 400 for a malformed request, else 500
        server.handle_error(req, sock, client, exc)
        util.close(sock)


def run(channel: socket.socket, gunicorn_args: list[str]) -> None:
    cfg, wsgi, log = _load(gunicorn_args)
    server = _Server(cfg, log)
    idle_timeout = float(os.environ.get("GUNICORN_IDLE_TIMEOUT", "10"))
    pool = ThreadPoolExecutor(max(1, int(os.environ.get("GUNICORN_CALLBACK_THREADS", "4"))),
                              thread_name_prefix="callback")
    channel.sendall(READY)
    log.info("Callback process %s ready for worker %s", os.getpid(), os.getppid())
    try:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(channel, MAX_MESSAGE, 1)
            except ConnectionError:
                message, fds = b"", []
            if not message:  # the worker has gone
                for fd in fds:
                    os.close(fd)
                break
            if not fds:
                continue
            sock = socket.socket(fileno=fds[0])
            try:
                addresses = json.loads(message)
                # (host, port) pairs came as lists; a Unix socket's addresses are strings: kept as they are.
                client, listener = (tuple(a) if isinstance(a, list) else a
                                    for a in (addresses["client"], addresses["server"]))
            except (ValueError, KeyError, TypeError):
                sock.close()
                continue
            sock.settimeout(idle_timeout)
            pool.submit(serve_one, server, wsgi, sock, client, listener)
    finally:
        pool.shutdown(wait=True)  # the callbacks already handed over are answered


def main(argv: list[str]) -> None:
    # Ctrl-C reaches the whole process group: the worker stops, and this process follows when its
    # end of the socket closes, after answering what it holds.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run(*channel_and_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
