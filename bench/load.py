"""Load benchmark: N activations at once against our app under gunicorn, with and without a
background sync of several sandbox stores running at the same time.

    .venv/bin/python bench/load.py                     # SQLite, the full run (a few minutes)
    .venv/bin/python bench/load.py --quick             # fewer activations and products (~1 minute)
    .venv/bin/python bench/load.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/scratch
    .venv/bin/python bench/load.py --redis-url redis://127.0.0.1:6379/3   # jobs on an RQ worker, not in gunicorn

Each activation is what Magento and the admin do: Activate in the sandbox store (which POSTs
our callback), a duplicate callback, then the identity pop-up opened and submitted twice at
once. Meanwhile two logged-in users reload the dashboard. Three phases, one gunicorn:

  idle        one activation at a time, nothing else running: the baseline
  load        --activations activations, --concurrency at once
  load+sync   the same again while --sync-stores stores (their own process, with products
              and a steady churn of changes) are synced by the app's background jobs

Each phase's stores are counted as linked, then set aside (unlinked in our database), so the
next phase's background work is the synced stores' alone (the feed interval is 10 s here).
Reports the CPU each phase took per activation (the app's processes; this one, with the sandbox
store), how busy the machine's cores were, and p50/p95/p99 of the callback (as Magento sees it, and our POST alone), the identity
page, the identity submit (as the browser sees it, and gunicorn's own time for it: the
difference is the wait for a free thread) and the dashboard, each with its ratio to the idle figure; then
errors, and whether every store was linked exactly once. Exits 1 on any error.

Without --database-url a fresh SQLite file is used; with a PostgreSQL URL its public schema
is dropped and rebuilt (point it at a scratch database).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PASSWORD = "load test password"
FIGURES = ("activate (callback round trip)", "callback POST", "callback POST, server time", "identity page", "identity submit (login + exchange)",
           "identity submit, server time", "dashboard")
TARGETS = {"activate (callback round trip)": 1.0, "callback POST": 0.5, "identity submit (login + exchange)": 3.0}


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--activations", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--idle", type=int, default=10, help="activations one at a time for the baseline")
    parser.add_argument("--sync-stores", type=int, default=10, help="0: no load+sync phase")
    parser.add_argument("--products", type=int, default=2000, help="products per synced store")
    parser.add_argument("--quick", action="store_true", help="50 activations, 5 idle, 500 products per store")
    parser.add_argument("--redis-url", help="background jobs on RQ in this Redis (its database is emptied), run by "
                                            "--job-workers `flask worker` processes at nice 10; default: embedded")
    parser.add_argument("--job-workers", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.activations, args.idle, args.products = 50, 5, 500

    import requests
    from cryptography.fernet import Fernet
    from sqlalchemy import func, select, update

    from bench._db import fresh_schema
    from integration import create_app
    from integration.extensions import db
    from integration.feeds.models import Job
    from integration.models import StoreLink, User
    from integration.sandbox import SandboxState, create_sandbox
    from tests.servers import Gunicorn, Served, activate, csrf_from

    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/load.sqlite"
    key = Fernet.generate_key().decode()
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "l" * 64, "ENCRYPTION_KEYS": (key,)})
    fresh_schema(app)
    with app.app_context():
        for email in ("load@example.com", "watcher@example.com"):
            user = User(email=email)
            user.set_password(PASSWORD)
            db.session.add(user)
        db.session.commit()
    state = SandboxState(products=0)
    sandbox = Served(create_sandbox(state))
    # Our own time for each callback, from gunicorn's access log (%(D)s, microseconds): what the
    # app spends, without the load generator's and the sandbox's share of the two cores.
    access_log = os.path.join(tempfile.mkdtemp(), "access.log")
    os.environ["GUNICORN_ACCESS_LOG"] = access_log
    env = {"INTEGRATION_DATABASE_URL": url, "INTEGRATION_SECRET_KEY": "l" * 64,
           "INTEGRATION_ENCRYPTION_KEYS": key, "INTEGRATION_ALLOWED_STORE_HOSTS": "127.0.0.1",
           "INTEGRATION_LOGIN_RATE_LIMIT": "1000000 per minute",
           "INTEGRATION_ACCOUNT_RATE_LIMIT": "1000000 per minute",
           "INTEGRATION_CALLBACK_RATE_LIMIT": "1000000 per minute",
           "INTEGRATION_IDENTITY_RATE_LIMIT": "1000000 per minute",
           "INTEGRATION_SYNC_INTERVAL": "10"}
    job_workers: list[subprocess.Popen] = []
    if args.redis_url:
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
        env["INTEGRATION_REDIS_URL"] = args.redis_url
        # RQ workers at a lower priority, as the README's production layout runs them.
        job_workers = [subprocess.Popen(["nice", "-n", "10", sys.executable, "-m", "flask", "--app", "app", "worker"],
                                        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL) for _ in range(args.job_workers)]
    server = Gunicorn(env, workers=args.workers)
    stores = None
    errors: list = []
    linked_count: list[int] = []  # per phase, links made
    cpu: dict[int, tuple[float, float, float]] = {}  # per phase, CPU seconds: the app's processes, this one, all
    try:
        watchers = [_logged_in(requests, csrf_from, server.url, email) for email in ("watcher@example.com",) * 2]

        def run_phase(count: int, concurrency: int) -> tuple[dict, float]:
            ids = [state.add_integration(f"Load {time.perf_counter_ns()}", f"{server.url}/magento/callback",
                                         f"{server.url}/magento/identity").id for _ in range(count)]
            timings: dict[str, list[float]] = {}
            stop = threading.Event()

            def one(i):
                try:
                    statuses = activate(sandbox.url, i, "load@example.com", PASSWORD, double_submit=True,
                                        duplicate_callback=True, sandbox_state=state, timings=timings)
                    errors.extend(s for s in statuses if s >= 500)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors.append(repr(exc)[:200])

            def watch(session):
                while not stop.is_set():
                    t0 = time.perf_counter()
                    answer = session.get(server.url + "/", timeout=30)
                    timings.setdefault("dashboard", []).append(time.perf_counter() - t0)
                    if answer.status_code != 200:
                        errors.append(f"dashboard {answer.status_code}")
                    stop.wait(0.2)

            log_from = os.path.getsize(access_log) if os.path.exists(access_log) else 0
            cpu_from = (_cpu_by_kind(server.proc.pid), _own_cpu_seconds(), _machine_cpu_seconds(),
                        sum(_cpu_seconds(w.pid) for w in job_workers))
            lookers = [threading.Thread(target=watch, args=(s,), daemon=True) for s in watchers]
            [t.start() for t in lookers]
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                list(pool.map(one, ids))
            wall = time.perf_counter() - started
            app_by_kind = _cpu_by_kind(server.proc.pid)
            cpu[len(cpu)] = ({kind: app_by_kind[kind] - cpu_from[0][kind] for kind in app_by_kind},
                             _own_cpu_seconds() - cpu_from[1],
                             _machine_cpu_seconds() - cpu_from[2],
                             sum(_cpu_seconds(w.pid) for w in job_workers) - cpu_from[3])
            stop.set()
            [t.join() for t in lookers]
            time.sleep(1)  # the last access-log lines
            with open(access_log) as lines:
                lines.seek(log_from)
                served = [line.split() for line in lines]
            # Server time: from gunicorn's thread taking the request to the answer; the client's figure
            # less this is the wait for a free thread (and the load generator's own).
            for figure, path in (("callback POST, server time", "/magento/callback"),
                                 ("identity submit, server time", "/magento/identity")):
                timings[figure] = [int(f[-1]) / 1e6 for f in served if f[:2] == ["POST", path]]
            not_linked = [i for i in ids if state.integrations[i].status != "Active"]
            if not_linked:
                errors.append(f"{len(not_linked)} stores not linked")
            # Counted, then set aside: the next phase's background work is the synced stores' alone,
            # not also a feed of every store an earlier phase linked (the sandbox's interval is 10 s).
            keys = [state.integrations[i].consumer_key for i in ids]
            with app.app_context():
                phase_links = StoreLink.consumer_key.in_(keys) & (StoreLink.status == StoreLink.LINKED)
                linked_count.append(db.session.scalar(select(func.count()).select_from(StoreLink).where(phase_links)))
                db.session.execute(update(StoreLink).where(phase_links).values(status=StoreLink.UNLINKED))
                db.session.commit()
            for i in ids:  # and gone from the sandbox, which keeps at most 200: a full run makes 210
                state.remove_integration(i)
            return timings, wall

        phases = [("idle", *run_phase(args.idle, 1))]
        phases.append(("load", *run_phase(args.activations, args.concurrency)))
        if args.sync_stores:
            stores, synced_before = _start_synced_stores(app, args), _finished_syncs(app, db, select, func, Job)
            phases.append(("load+sync", *run_phase(args.activations, args.concurrency)))
            syncs = _finished_syncs(app, db, select, func, Job) - synced_before
    finally:
        log = server.stop()
        sandbox.stop()
        for worker in job_workers:
            worker.terminate()
            worker.wait(30)
        if stores is not None:
            stores.stdin.close()
            stores.wait(10)

    expected = args.idle + args.activations * (2 if args.sync_stores else 1)
    linked = sum(linked_count)
    print(f"{url.split(':')[0]}: {args.activations} activations, {args.concurrency} at once, {args.workers} workers"
          f" × threads, jobs " + (f"on {len(job_workers)} RQ worker(s) at nice 10" if job_workers else "embedded")
          + f", {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    idle = phases[0][1]
    for phase, (name, timings, wall) in enumerate(phases):
        n = sum(1 for _ in timings.get("activate (callback round trip)", ()))
        app_by_kind, own_cpu, all_cpu, jobs_cpu = cpu[phase]
        app_cpu = sum(app_by_kind.values())
        print(f"\n{name}: {n} activations in {wall:.1f} s"
              + (f", {syncs} background syncs finished meanwhile" if name == "load+sync" else ""))
        # Whether the phase was CPU-bound: the app's share and the load generator's (with the sandbox store).
        print(f"  CPU per activation: app {app_cpu * 1000 / n:.0f} ms ("
              + ", ".join(f"{kind} {spent * 1000 / n:.0f}" for kind, spent in app_by_kind.items()) + ")"
              + (f", job workers {jobs_cpu * 1000 / n:.0f} ms" if job_workers else "")
              + f", load generator and sandbox {own_cpu * 1000 / n:.0f} ms; the machine's {os.cpu_count()} cores "
              f"were {all_cpu / (wall * os.cpu_count()):.0%} busy (anything else: "
              f"{max(0.0, all_cpu - app_cpu - own_cpu - jobs_cpu):.1f} s)")
        for figure in FIGURES:
            values = timings.get(figure)
            if not values:
                continue
            row = []
            for p in (0.5, 0.95, 0.99):
                v = percentile(values, p)
                base = percentile(idle.get(figure, values), p)
                row.append(f"p{int(p * 100)} {v * 1000:6.0f} ms" + ("" if name == "idle" else f" ({v / base:4.1f}×)"))
            target = TARGETS.get(figure)
            verdict = "" if name == "idle" or target is None else (
                "  ok" if percentile(values, 0.99) < target else f"  MISSED p99 < {target:g} s")
            print(f"  {figure:36} " + "  ".join(row) + verdict)
    exchanges = state.counters.request_token_calls
    print(f"\nlinked {linked}/{expected} (links in the database), token exchanges {exchanges}, errors {len(errors)}")
    if errors or linked != expected or exchanges != expected:
        print("  first errors:", errors[:3])
        print(log[-2000:])
        sys.exit(1)


#: Which of the app's processes spent the CPU, by what their command line holds.
KINDS = (("callback processes", "integration.callback_process"), ("job processes", "integration.jobs.process"),
         ("hashing", "multiprocessing"), ("workers", ""))


def _cpu_by_kind(root: int) -> dict[str, float]:
    """User + system CPU of ``root`` and every process below it (gunicorn's workers, their callback,
    job and hashing children), by kind, from /proc; processes that ended meanwhile are not counted."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        stats[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    totals, todo = dict.fromkeys((kind for kind, _ in KINDS), 0.0), [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().decode(errors="replace")
        except OSError:
            command = ""
        kind = next(kind for kind, marker in KINDS if marker in command)
        totals[kind] += stats.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    return totals


def _cpu_seconds(root: int) -> float:
    return sum(_cpu_by_kind(root).values())


def _machine_cpu_seconds() -> float:
    """CPU time all processes spent (user, nice, system, irq, softirq), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return sum(int(v) for v in fields[:3] + fields[5:7]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _logged_in(requests, csrf_from, base: str, email: str):
    session = requests.Session()
    page = session.get(base + "/auth/login", timeout=30)
    answer = session.post(base + "/auth/login", timeout=30, allow_redirects=False,
                          data={"csrf_token": csrf_from(page.text), "email": email, "password": PASSWORD})
    assert answer.status_code == 302, answer.status_code
    return session


def _start_synced_stores(app, args):
    """Start the stores and link them (as a finished activation would): the app's next feed tick
    syncs them, and keeps syncing their churn."""
    from integration.extensions import db
    from integration.models import StoreLink

    proc = subprocess.Popen([sys.executable, "-m", "bench._stores", "--stores", str(args.sync_stores),
                             "--products", str(args.products)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    with app.app_context():
        for line in proc.stdout:
            if line.strip() == "ready":
                break
            store = json.loads(line)
            db.session.add(StoreLink(consumer_key=store["consumer_key"], consumer_secret=store["consumer_secret"],
                                     base_url=f"http://127.0.0.1:{store['port']}/", store_host="127.0.0.1",
                                     status="linked", access_token=store["token"],
                                     access_token_secret=store["token_secret"]))
        db.session.commit()
    time.sleep(12)  # a feed tick (10 s) queues their first syncs, which then run through the phase
    return proc


def _finished_syncs(app, db, select, func, Job) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Job).where(Job.state == Job.FINISHED))


if __name__ == "__main__":
    main()
