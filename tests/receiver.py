"""A webhook receiver on a real port (tests and bench/webhooks.py): keep-alive HTTP/1.1,
records every POST, answers as told (``mode``), and can go down and come back on the same
port, dropping the connections it had."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """``mode``: ``ok`` (204), ``500``, ``redirect`` (302 to ``/elsewhere``), ``sleep`` (answers
    after ``delay`` seconds), ``drip`` (status line, then one header byte every ``delay`` s)."""

    def __init__(self, mode: str = "ok", delay: float = 0.0, port: int = 0, keep: bool = True):
        self.mode, self.delay, self.keep = mode, delay, keep
        self.location: str | None = None  # where a redirect points (default: /elsewhere here)
        self.received: list[Received] = []
        self.ids: set[str] = set()
        self.count = 0
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self._conns: set[socket.socket] = set()
        self._server = None
        self.port = port
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with receiver.lock:
                    receiver._conns.add(self.connection)

            def finish(self):
                with receiver.lock:
                    receiver._conns.discard(self.connection)
                super().finish()

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._record(Received(self.path, dict(self.headers), body))
                mode = receiver.mode
                if mode == "sleep":
                    time.sleep(receiver.delay)
                if mode == "drip":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    try:
                        for _ in range(100):
                            self.wfile.write(b"X")
                            self.wfile.flush()
                            time.sleep(receiver.delay)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                status = {"500": 500, "redirect": 302}.get(mode, 204)
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", receiver.location or f"{receiver.url}/elsewhere")
                if status != 204:
                    self.send_header("Content-Length", "2")
                self.end_headers()
                if status != 204:
                    self.wfile.write(b"no")

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # many senders at once: no refused connections

        server = Server(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut every open connection (a receiver that went away)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._conns.clear()

    stop = down

    def _record(self, received: Received) -> None:
        with self.arrived:
            self.count += 1
            if self.keep:
                self.received.append(received)
            try:
                self.ids.add(received.event["id"])
            except (ValueError, KeyError, TypeError):
                pass
            self.arrived.notify_all()

    def wait_for(self, n: int, timeout: float = 15.0, unique: bool = False) -> bool:
        """Until ``n`` requests (or ``n`` distinct event ids) arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while (len(self.ids) if unique else self.count) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
        return True
