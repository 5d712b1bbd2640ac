"""Password hashes are computed by lower-priority child processes, which end with their parent."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from .servers import ROOT

# A process that hashes once (as a gunicorn worker does at its first login), then waits.
HASHER = """
import sys
if __name__ == "__main__":
    from integration import password_hashing
    hashed = password_hashing.hash_password("a password of some length")
    assert password_hashing.verify_password(hashed, "a password of some length")
    assert not password_hashing.verify_password(hashed, "another password")
    print("hashed", flush=True)
    import time
    time.sleep(120)
"""


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def test_hashes_run_in_lower_priority_children_that_end_with_their_parent():
    hasher = subprocess.Popen([sys.executable, "-c", HASHER], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "INTEGRATION_HASH_NICE": "4"})
    try:
        assert hasher.stdout.readline().strip() == "hashed"
        children = _children(hasher.pid)
        hashing = [c for c in children if "spawn_main" in open(f"/proc/{c}/cmdline").read()]
        assert len(hashing) == 1  # one by default, started at the first hash
        assert {_nice(c) - _nice(hasher.pid) for c in hashing} == {4}
    finally:
        hasher.kill()  # as gunicorn kills a worker that does not stop in time: no clean-up runs
        hasher.wait()
    deadline = time.monotonic() + 30
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [c for c in children if _alive(c)] == []
