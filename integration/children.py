"""Child processes of a gunicorn worker that load the same app as the worker.

A worker starts them with the master's own arguments (``sys.argv``); the child parses them as
gunicorn does, so it reads the same ``gunicorn.conf.py``, environment and app, and keeps one end
of a Unix socket pair to talk with its worker. Two kinds: the callback process
(``callback_process``, at the worker's priority) and the job process (``jobs.process``, below it).
"""

from __future__ import annotations

import socket
import subprocess
import sys

#: What a child sends its worker once the app is loaded.
READY = b"ready"


def spawn(module: str) -> tuple[subprocess.Popen, socket.socket]:
    """Start ``python -m module`` with the master's arguments; returns it and the worker's end of
    its socket (non-blocking). Raises ``OSError`` if it cannot be started."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen([sys.executable, "-m", module, str(theirs.fileno()), "--", *sys.argv[1:]],
                                pass_fds=[theirs.fileno()])
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return proc, ours


def channel_and_args(argv: list[str]) -> tuple[socket.socket, list[str]]:
    """In the child: its end of the socket and gunicorn's arguments, from its command line."""
    return socket.socket(fileno=int(argv[0])), argv[argv.index("--") + 1:] if "--" in argv else []


def load_app(gunicorn_args: list[str]):
    """In the child: gunicorn's settings and the WSGI app, as the master and worker have them."""
    from gunicorn.app.wsgiapp import WSGIApplication

    sys.argv = ["gunicorn", *gunicorn_args]
    application = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
    return application.cfg, application.wsgi()
