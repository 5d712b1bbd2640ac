"""Child processes of a gunicorn worker that load the same app as the worker.

A worker starts them with the master's own arguments (``sys.argv``); the child parses them as
gunicorn does, so it reads the same ``gunicorn.conf.py``, environment and app, and keeps one end
of a Unix socket pair to talk with its worker. Two kinds: the callback process
(``callback_process``, at the worker's priority) and the job process (``jobs.process``, below it).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

#: What a child sends its worker once the app is loaded.
READY = b"ready"


class Child:
    """The worker's side of one child: start it, know when it is ready, send it work, notice it
    gone and start it again (not sooner than ``RESTART_AFTER`` seconds after the last start).
    Not thread-safe: its user serialises the calls."""

    RESTART_AFTER = 5.0

    def __init__(self, module: str, name: str, log: logging.Logger):
        self.module, self.name, self.log = module, name, log
        self.proc: subprocess.Popen | None = None
        self.channel: socket.socket | None = None
        self.ready = False
        self.started_at = float("-inf")

    def start(self) -> None:
        self.started_at = time.monotonic()
        try:
            self.proc, self.channel = spawn(self.module)
        except OSError:
            self.log.exception("could not start the %s; the worker does its work itself", self.name)
        self.ready = False

    def usable(self) -> bool:
        """Whether it can take work now. Reads, without waiting, what it said since (ready, or
        ended); one that ended is started again once ``RESTART_AFTER`` has passed."""
        if self.channel is None:
            if time.monotonic() - self.started_at >= self.RESTART_AFTER:
                self.start()
            return False
        if not self.ready:
            try:
                said = self.channel.recv(64)
            except BlockingIOError:
                return False
            except OSError:
                said = b""
            if said == READY:
                self.ready = True
            else:
                self._forget()
        return self.ready

    def send(self, data: bytes, fds: tuple[int, ...] = ()) -> bool:
        """One message (and descriptors) to it; False if it could not take it (full, or gone)."""
        try:
            socket.send_fds(self.channel, [data], list(fds), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._forget()
            return False
        return True

    def close(self, wait: float = 0.0) -> None:
        """Close our end: it finishes what it holds, then ends; ``wait`` seconds for that, then it
        is killed (so that a stopped server leaves nothing running behind it)."""
        proc = self.proc
        if self.channel is not None:
            self.channel.close()
        self.channel, self.proc, self.ready = None, None, False
        if proc is not None and wait > 0:
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _forget(self) -> None:
        proc = self.proc
        self.close()
        if proc is not None:
            try:
                status = proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
            self.log.warning("the %s ended (exit status %s); the worker does its work itself until it is back",
                             self.name, status)


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
