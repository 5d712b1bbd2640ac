"""The signing tests need nothing outside the repository: in a clone without ``../shared`` they run
(and pass) on the vectors in ``tests/data/``, and without those vectors the run fails, never skips."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _run_signing_tests(copy_of_tests: Path) -> subprocess.CompletedProcess:
    # A fresh directory has no ../shared next to it, as in a clone of the repository alone.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           str(copy_of_tests / "test_signing.py")],
                          cwd=copy_of_tests.parent, env=env, capture_output=True, text=True, timeout=300)


def test_signing_tests_run_in_a_clone_without_the_shared_folder(tmp_path):
    shutil.copytree(TESTS, tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    assert not (tmp_path.parent / "shared").exists()
    done = _run_signing_tests(tmp_path / "tests")
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert "skipped" not in summary and passed >= 87, summary


def test_signing_tests_fail_when_the_vectors_are_missing(tmp_path):
    shutil.copytree(TESTS, tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__", "data"))
    done = _run_signing_tests(tmp_path / "tests")
    assert done.returncode not in (0, 5), done.stdout[-3000:]  # 5: nothing collected
    assert "magento-signature-vectors.json" in done.stdout
