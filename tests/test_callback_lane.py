"""Magento's callback is served while a burst of logins saturates every gunicorn worker.

Counted, not timed: every callback is stored, none is refused or given up on, and the
workers' own count of requests that had to wait for a free thread shows logins waiting (the
workers were saturated) and no callback waiting (none queued behind a password hash).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from integration.doctor import PROBE_FIELD
from integration.extensions import db
from integration.models import Activation

from .conftest import PASSWORD
from .servers import Gunicorn, csrf_from, running
from .test_workers import env_for

WORKERS, THREADS = 2, 4
LOGINS = 40  # five times the general threads: every worker has logins queued for its threads
CALLBACKS = 10


def dispatched(text: str, kind: str, waited: str) -> float:
    match = re.search(rf'^companion_requests_dispatched_total\{{kind="{kind}",waited="{waited}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def handovers(text: str, outcome: str) -> float:
    match = re.search(rf'^companion_callback_handovers_total\{{outcome="{outcome}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def callback_processes(server: Gunicorn) -> list[int]:
    """The pids of the workers' callback processes (children of the workers)."""
    workers = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    found = []
    for worker in workers:
        for child in subprocess.run(["pgrep", "-P", worker, "-f", "integration.callback_process"],
                                    capture_output=True, text=True).stdout.split():
            found.append(int(child))
    return found


@pytest.mark.parametrize("process", ["1", "0"], ids=["callback process", "lane only"])
def test_callbacks_are_stored_without_waiting_behind_a_burst_of_logins(app, app_config, sandbox, user, tmp_path,
                                                                       process):
    (tmp_path / "prom").mkdir()
    server = Gunicorn(env_for(app_config, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
                              INTEGRATION_DEVICE_RATE_LIMIT="10000 per minute", GUNICORN_CALLBACK_PROCESS=process),
                      workers=WORKERS, threads=THREADS)
    try:
        ids = [sandbox.state.add_integration(f"Store {i}", f"{server.url}/magento/callback",
                                             f"{server.url}/magento/identity").id for i in range(CALLBACKS)]
        forms = []
        for _ in range(LOGINS):  # the login pages first: the burst is the password checks alone
            session = requests.Session()
            # Connection: close, so that each login is a new connection when the burst starts.
            page = session.get(server.url + "/auth/login", timeout=30, headers={"Connection": "close"})
            forms.append((session, {"csrf_token": csrf_from(page.text), "email": "owner@example.com",
                                    "password": PASSWORD}))
        started = threading.Event()
        logins: list[int] = []

        def log_in(item):
            session, form = item
            started.set()
            logins.append(session.post(server.url + "/auth/login", data=form, allow_redirects=False,
                                       timeout=300).status_code)

        with ThreadPoolExecutor(LOGINS) as pool:
            burst = pool.map(log_in, forms)
            started.wait(10)
            # Activate in Magento, one store after another, while the logins are being checked:
            # the sandbox POSTs our callback and gives up on it as Magento does.
            replies = [requests.get(f"{sandbox.url}/admin/integrations/{i}/tokens_exchange", timeout=30).json()
                       for i in ids]
            still_checking = LOGINS - len(logins)
            list(burst)
        metrics = requests.get(f"{server.url}/metrics", timeout=30).text
    finally:
        log = server.stop()
    assert [r.get("error") for r in replies] == [None] * CALLBACKS, log[-3000:]
    assert logins == [302] * LOGINS
    assert still_checking > 0  # the last callback went in while logins were still being checked
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Activation)) == CALLBACKS
    assert dispatched(metrics, "other", "yes") > 0  # while logins did queue: the workers were saturated
    assert dispatched(metrics, "callback", "yes") == 0  # no callback queued behind a login
    if process == "1":  # none even took a worker's thread: the workers' callback processes served them
        assert handovers(metrics, "process") == CALLBACKS
        assert dispatched(metrics, "callback", "no") == 0
    else:
        assert handovers(metrics, "process") == 0
        assert dispatched(metrics, "callback", "no") == CALLBACKS


def test_a_killed_callback_process_is_replaced_and_the_lane_serves_meanwhile(app, app_config, sandbox, user):
    server = Gunicorn(env_for(app_config), workers=1, threads=2)
    try:
        def activate_one(name: str) -> None:
            integration = sandbox.state.add_integration(name, f"{server.url}/magento/callback",
                                                        f"{server.url}/magento/identity")
            answer = requests.get(f"{sandbox.url}/admin/integrations/{integration.id}/tokens_exchange",
                                  timeout=30).json()
            assert "error" not in answer, (answer, server.read_output()[-3000:])

        def served_by(outcome: str) -> float:
            return handovers(requests.get(f"{server.url}/metrics", timeout=30).text, outcome)

        activate_one("Before")
        [first] = callback_processes(server)
        os.kill(first, signal.SIGKILL)
        while running(first):  # until the kernel has closed its end of the socket
            time.sleep(0.05)
        activate_one("While it is gone")  # the worker finds it gone and serves it on its lane
        server.wait_for_output(r"the callback process ended")
        assert served_by("lane") == 1
        # A callback starts a new process (Child.RESTART_AFTER after the last start); the doctor's
        # test POSTs, callbacks that store nothing, keep coming until it is ready.
        deadline = time.monotonic() + 60
        while len(re.findall(r"Callback process \d+ ready", server.read_output())) < 2:
            assert time.monotonic() < deadline, server.read_output()[-3000:]
            requests.post(f"{server.url}/magento/callback", data={PROBE_FIELD: "1"}, timeout=30)
            time.sleep(0.5)
        before = served_by("process")
        activate_one("After")  # ... which serves the callbacks again
        assert served_by("process") == before + 1
        [second] = callback_processes(server)
        threads = len(os.listdir(f"/proc/{second}/task"))
    finally:
        server.stop()
    assert second != first
    # It runs callbacks and nothing else: its main thread, a callback thread or two, at most a rate-limit
    # watchdog; not the three threads of a job runner.
    assert threads <= 4
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Activation)) == 3


def _thread_nices(pid: int) -> list[int]:
    import os

    nices = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as stat:
            nices.append(int(stat.read().rsplit(")", 1)[1].split()[16]))
    return nices


def test_each_kind_of_work_runs_at_its_own_priority(app_config, user):
    """When the cores are short the kernel runs a callback first: the lane's threads and the
    callback process keep the worker's priority, the general threads are 5 below it, the
    password hashes 8 below it and the job process 10 below it."""
    server = Gunicorn(env_for(app_config, GUNICORN_CALLBACK_THREADS="2"), workers=1, threads=3)
    try:
        with ThreadPoolExecutor(8) as pool:  # enough at once to start every general thread
            list(pool.map(lambda _: requests.get(f"{server.url}/auth/login", timeout=10), range(24)))
        requests.post(f"{server.url}/magento/callback", data={}, timeout=10)  # served by the callback process
        session = requests.Session()  # a login: its hash starts the hashing process, from a general thread
        page = session.get(f"{server.url}/auth/login", timeout=10)
        session.post(f"{server.url}/auth/login", timeout=30, data={
            "csrf_token": csrf_from(page.text), "email": "owner@example.com", "password": PASSWORD})
        server.wait_for_output(r"job process \d+ ready")
        [worker] = [int(p) for p in subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True,
                                                    text=True).stdout.split()]
        base = _thread_nices(worker)[0]  # the worker's main thread
        raised = sorted(n - base for n in _thread_nices(worker))
        children = {kind: [int(p) for p in subprocess.run(["pgrep", "-P", str(worker), "-f", marker],
                                                          capture_output=True, text=True).stdout.split()]
                    for kind, marker in (("callback", "integration.callback_process"),
                                         ("jobs", "integration.jobs.process"), ("hashing", "spawn_main"))}
        children_raised = {kind: {n - base for pid in pids for n in _thread_nices(pid)}
                           for kind, pids in children.items()}
    finally:
        server.stop()
    # The three general threads (and the hashing pool's threads they started) 5 below; the main thread at 0.
    # (Each capped at 19, the lowest priority there is, when the suite itself runs under nice.)
    below = {n: min(n, 19 - base) for n in (5, 8, 10)}
    assert raised.count(below[5]) >= 3 and raised.count(0) >= 1 and set(raised) == {0, below[5]}
    assert children_raised == {"callback": {0}, "hashing": {below[8]}, "jobs": {below[10]}}


def test_a_callback_over_a_unix_socket_is_served_by_the_callback_process(app, app_config, tmp_path):
    """A proxy in front often reaches gunicorn over a Unix socket, whose client address is a string."""
    import socket

    path = str(tmp_path / "companion.sock")
    server = Gunicorn(env_for(app_config), workers=1, threads=2, extra_binds=(f"unix:{path}",))
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(30)
            client.connect(path)
            client.sendall(_callback_bytes("k"))
            answer = _read_to_end(client)
        metrics = requests.get(f"{server.url}/metrics", timeout=30).text
    finally:
        log = server.stop()
    assert answer.startswith(b"HTTP/1.1 200 "), (answer, log[-3000:])
    assert handovers(metrics, "process") == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Activation)) == 1


def test_a_callback_behind_another_request_on_a_kept_alive_connection_is_answered(app, app_config):
    """Pipelined behind a GET, the callback's bytes are already in the worker's buffer: the worker
    answers it itself (the callback process would find nothing left on the socket)."""
    import socket

    server = Gunicorn(env_for(app_config), workers=1, threads=2)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: companion\r\n\r\n" + _callback_bytes("p", close=True))
            answer = _read_to_end(client)
    finally:
        log = server.stop()
    assert answer.count(b"HTTP/1.1 200 ") == 2, (answer, log[-3000:])
    assert answer.rstrip().endswith(b"OK")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Activation)) == 1


def test_a_callback_after_another_request_on_a_kept_alive_connection_goes_to_the_lane(app, app_config):
    """A thread that answered a request waits briefly for the same client's next one and serves
    it (serving.py, linger), but never a callback: that one still goes to the callback lane."""
    import socket

    server = Gunicorn(env_for(app_config), workers=1, threads=2)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: companion\r\n\r\n")
            first = b""
            while b"\r\n\r\n" not in first or len(first.split(b"\r\n\r\n", 1)[1]) < int(
                    re.search(rb"(?i)content-length: (\d+)", first).group(1)):
                first += client.recv(65536)
            client.sendall(_callback_bytes("q", close=True))
            answer = _read_to_end(client)
        metrics = requests.get(f"{server.url}/metrics", timeout=30).text
    finally:
        log = server.stop()
    assert first.startswith(b"HTTP/1.1 200 ") and answer.startswith(b"HTTP/1.1 200 "), (first, answer, log[-3000:])
    assert dispatched(metrics, "callback", "no") == 1


def test_a_kept_alive_tls_connection_serves_request_after_request(app_config, tmp_path):
    """gunicorn terminating TLS itself: a thread cannot peek at the next request's TLS bytes, so it
    gives the connection back to the poller at once, which serves the next request as before."""
    server = Gunicorn(env_for(app_config), workers=1, threads=2, tls=_self_signed(tmp_path))
    try:
        with requests.Session() as session:
            statuses = [session.get(f"{server.url}/healthz", verify=False, timeout=10).status_code for _ in range(5)]
    finally:
        log = server.stop()
    assert statuses == [200] * 5, log[-3000:]


def _self_signed(folder) -> tuple[str, str]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def _callback_bytes(letter: str, *, close: bool = False) -> bytes:
    """A raw callback POST (its consumer key ``letter`` * 32), as Magento sends it."""
    body = ("oauth_consumer_key=" + letter * 32 + "&oauth_consumer_secret=" + "s" * 32
            + "&store_base_url=http%3A%2F%2F127.0.0.1%3A9%2F&oauth_verifier=" + "v" * 32).encode()
    return (b"POST /magento/callback HTTP/1.1\r\nHost: companion\r\n" + (b"Connection: close\r\n" if close else b"")
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _read_to_end(client) -> bytes:
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    return answer
