"""Servers for tests and benchmarks: a WSGI app on a thread, our app under gunicorn, and the
admin's side of an activation (Activate in the sandbox, then the identity pop-up)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent


class Served:
    """A WSGI app on a real port in a background thread."""

    def __init__(self, wsgi, port: int = 0):
        self.server = make_server("127.0.0.1", port, wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """``gunicorn app:app`` with ``workers`` processes, configured through the environment."""

    def __init__(self, env: dict[str, str], workers: int = 4, threads: int = 8, extra_binds: tuple[str, ...] = (),
                 tls: tuple[str, str] | None = None):
        """``tls``: gunicorn terminates TLS itself with this (certificate file, key file)."""
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        # The server's output goes to a file, not a pipe: nobody reads a pipe while the server
        # runs, and a full one would block every worker at its next log line.
        self.output = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", str(threads),
             "-b", f"127.0.0.1:{self.port}", *(a for bind in extra_binds for a in ("-b", bind)), "--graceful-timeout", "5", "--access-logfile", os.environ.get("GUNICORN_ACCESS_LOG", "/dev/null"), "--access-logformat", "%(r)s %(s)s %(D)s",
             *(("--certfile", tls[0], "--keyfile", tls[1]) if tls else ()), "app:app"],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.output, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90  # workers import the whole app: slow on a busy machine
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/magento/callback", timeout=3, verify=False).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn did not start:\n{self.stop()}")
        else:
            raise RuntimeError(f"gunicorn did not start:\n{self.stop()}")
        # Each worker's callback process (integration/callback_process.py) loads the app beside it;
        # until it says it is ready the worker serves callbacks itself. Tests start from the layout
        # production runs in.
        if {**os.environ, **env}.get("GUNICORN_CALLBACK_PROCESS", "1") != "0":
            self.wait_for_output(r"Callback process \d+ ready", workers, deadline)

    def read_output(self) -> str:
        # pread: the file's offset is shared with the server's processes, which append to it.
        size = os.fstat(self.output.fileno()).st_size
        return os.pread(self.output.fileno(), size, 0).decode(errors="replace")

    def wait_for_output(self, pattern: str, count: int = 1, deadline: float | None = None) -> None:
        deadline = deadline or time.monotonic() + 60
        while len(re.findall(pattern, self.read_output())) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn never printed {pattern!r} {count} times:\n{self.stop()}")
            time.sleep(0.1)

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.output.seek(0)
        return self.output.read()


def running(pid: int) -> bool:
    """Some thread of the process is still running. A killed process's descriptors (its sockets) are
    closed only once all its threads have exited: its main thread can be a zombie before that."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except FileNotFoundError:
            continue
    return False


def csrf_from(html: str) -> str:
    m = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def activate(sandbox_url: str, integration_id: int, email: str, password: str, *, double_submit: bool = False,
             duplicate_callback: bool = False, sandbox_state=None, timings: dict | None = None) -> list[int]:
    """Click Activate in the sandbox, log in in the pop-up; returns every status our app answered."""
    statuses = []
    t0 = time.perf_counter()
    reply = requests.get(f"{sandbox_url}/admin/integrations/{integration_id}/tokens_exchange", timeout=60).json()
    if timings is not None:
        timings.setdefault("activate (callback round trip)", []).append(time.perf_counter() - t0)
    if "error" in reply:
        raise AssertionError(reply["error"])
    if duplicate_callback:
        integration = sandbox_state.integrations[integration_id]
        callback_url = reply["identity_link_url"].replace("/magento/identity", "/magento/callback")
        t0 = time.perf_counter()
        statuses.append(requests.post(callback_url, timeout=30, data={
            "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
            "store_base_url": sandbox_url + "/", "oauth_verifier": integration.token.verifier}).status_code)
        if timings is not None:
            timings.setdefault("callback POST", []).append(time.perf_counter() - t0)
    params = {"oauth_consumer_key": reply["oauth_consumer_key"], "success_call_back": reply["success_call_back"]}
    forms, sessions = [], []
    for _ in range(2 if double_submit else 1):
        s = requests.Session()
        t0 = time.perf_counter()
        # Connection: close: the submit waits for the other pop-up's page, often longer than
        # gunicorn keeps an idle connection (2 s), and a POST on a connection the server has just
        # closed fails where a browser would retry it on a new one.
        page = s.get(reply["identity_link_url"], params=params, timeout=30, headers={"Connection": "close"})
        if timings is not None:
            timings.setdefault("identity page", []).append(time.perf_counter() - t0)
        statuses.append(page.status_code)
        forms.append({**params, "csrf_token": csrf_from(page.text), "email": email, "password": password})
        sessions.append(s)
    results = [None] * len(forms)
    barrier = threading.Barrier(len(forms))

    def submit(i):
        barrier.wait()
        started = time.perf_counter()
        results[i] = sessions[i].post(reply["identity_link_url"], data=forms[i], allow_redirects=False, timeout=60)
        if timings is not None:
            timings.setdefault("identity submit (login + exchange)", []).append(time.perf_counter() - started)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(forms))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    statuses += [r.status_code for r in results]
    return statuses


class TcpProxy:
    """Forwards a local port to ``target``; ``cut()`` drops it (and every open connection),
    ``restore()`` brings it back on the same port: a database going away and returning."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


class FakeDNS:
    """A DNS server on a loopback UDP port: ``records`` maps names to addresses (A or AAAA by
    form), names in ``silent`` get no answer at all, anything else NXDOMAIN. ``answers``
    (name -> list of address lists) hands out one list per query (A and AAAA are one query
    each), the last one repeating: a name that rebinds. Stops by itself after ``lifetime``."""

    def __init__(self, records: dict[str, list[str]] | None = None, silent: set[str] = frozenset(),
                 answers: dict[str, list[list[str]]] | None = None, lifetime: float = 120.0):
        self.records = {k.rstrip(".").lower(): v for k, v in (records or {}).items()}
        self.silent = {name.rstrip(".").lower() for name in silent}
        self.answers = {k.rstrip(".").lower(): list(v) for k, v in (answers or {}).items()}
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._ends = time.monotonic() + lifetime
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset

        while not self._stop.is_set() and time.monotonic() < self._ends:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            self.queries.append(name)
            if name in self.silent:
                continue
            reply = dns.message.make_response(query)
            if name in self.answers:
                addresses = self.answers[name].pop(0) if len(self.answers[name]) > 1 else self.answers[name][0]
            elif name in self.records:
                addresses = self.records[name]
            else:
                reply.set_rcode(dns.rcode.NXDOMAIN)
                addresses = []
            rdtype = dns.rdatatype.to_text(question.rdtype)
            wanted = [a for a in addresses if (":" in a) == (rdtype == "AAAA")]
            if wanted and rdtype in ("A", "AAAA"):
                reply.answer.append(dns.rrset.from_text(question.name, 0, "IN", rdtype, *wanted))
            else:  # negative answers are not to be cached either
                reply.authority.append(dns.rrset.from_text(question.name, 0, "IN", "SOA", ". . 1 0 0 0 0"))
            self.sock.sendto(reply.to_wire(), peer)


class SlowStore:
    """A store on a loopback port, on raw sockets, that answers as slowly as it likes: the
    status line and headers at once (or dripped too, ``drip_headers``), then ``chunk`` every
    ``every`` seconds of a body that never ends; or, with ``tls``, a TLS handshake record
    that never ends. Each connection is dropped after ``per_connection`` seconds and the
    server stops by itself after ``lifetime``."""

    def __init__(self, *, every: float = 0.5, chunk: bytes = b"  ", drip_headers: bool = False, tls: bool = False,
                 per_connection: float = 20.0, lifetime: float = 60.0):
        self.every, self.chunk, self.drip_headers, self.per_connection = every, chunk, drip_headers, per_connection
        self.tls = tls
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._ends = time.monotonic() + lifetime
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._ends:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n["
        if self.tls:  # a handshake record of 16 KiB, after the client's hello
            head = b"\x16\x03\x03\x40\x00"
        pieces = [head[i:i + len(self.chunk)] for i in range(0, len(head), len(self.chunk))] \
            if self.drip_headers else [head]
        ends = time.monotonic() + self.per_connection
        with conn:
            try:
                conn.settimeout(2)
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536 and not (self.tls and request):
                    data = conn.recv(65536)
                    if not data:
                        return
                    request += data
                conn.sendall(pieces.pop(0))
                while time.monotonic() < ends and not self._stop.wait(self.every):
                    conn.sendall(pieces.pop(0) if pieces else self.chunk)
            except OSError:
                pass
