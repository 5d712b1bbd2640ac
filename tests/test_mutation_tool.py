"""scripts/mutation: the mutants it plants, and that they reach the tests without touching the tree."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tools_mutate", ROOT / "tools" / "mutate.py")
mutate = sys.modules["tools_mutate"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutate)

SAMPLE = b'''"""Docstring."""
from __future__ import annotations

LIMIT = 3


def allowed(host: str, port: int | None = None) -> bool:
    """Docstring."""
    if not host or port == 0:
        return False
    return host.endswith(".example") and len(host) <= LIMIT + 10
'''


def test_each_kind_of_mutant_is_planted_once_where_it_applies_and_compiles():
    mutants = {m.ident("m.py"): m for m in mutate.find_mutants(SAMPLE, "m.py")}
    for expected in [
        "m.py:9:8 `not host` → `host`",
        "m.py:9:8 `or` → `and` in `not host or port == 0`",
        "m.py:9:8 drop `port == 0` from `not host or port == 0`",
        "m.py:9:20 `==` → `!=` in `port == 0`",
        "m.py:10:9 remove `return False`",
        "m.py:10:16 `False` → `True`",
        "m.py:11:42 `<=` → `<` in `len(host) <= LIMIT + 10`",
        "m.py:11:55 `+` → `-` in `LIMIT + 10`",
        "m.py:11:63 `10` → `11`",
        "m.py:11:12 drop argument `'.example'` from `host.endswith(…)`",
        "m.py:4:9 `3` → `2`",
    ]:
        assert expected in mutants
    for mutant in mutants.values():
        mutated = mutant.apply(SAMPLE)
        assert mutated != SAMPLE
        compile(mutated, "m.py", "exec")
    texts = " ".join(mutants)
    assert "Docstring" not in texts and "annotations" not in texts and "int | None" not in texts
    assert not any(m.startswith("m.py:4:1 remove") for m in mutants)  # module level: would only break the import


def test_the_mutant_is_what_python_processes_import_and_the_file_stays_as_it_was(tmp_path):
    module = ROOT / "integration" / "magento" / "signing.py"
    before = module.read_bytes(), module.stat().st_mtime_ns
    mutated = tmp_path / "signing.py"
    mutated.write_bytes(before[0].replace(b'PROFILE_248 = "2.4.8+"', b'PROFILE_248 = "mutated"'))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools" / "mutation_site"), MUTATION_MODULE="integration.magento.signing",
               MUTATION_ORIGIN=str(module), MUTATION_SOURCE=str(mutated), MUTATION_MARK=str(tmp_path / "imported"))
    child = "import subprocess, sys; subprocess.run([sys.executable, '-c', " \
            "'from integration.magento import signing; print(signing.PROFILE_248)'], check=True)"
    out = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "mutated"  # in a grandchild process too
    assert (tmp_path / "imported").exists()
    assert (module.read_bytes(), module.stat().st_mtime_ns) == before
