"""Fork server for ``tools/mutate.py``: import once, fork one child per test run.

A fresh ``python -m pytest`` spends most of a killed mutant's time importing Flask, SQLAlchemy,
pytest and the rest. This process imports those (the list the unmutated run recorded, nothing
from the project itself) and then, per request on stdin, forks a child that installs the mutant
and runs ``pytest.main``. Protocol, one JSON or number per line: request ``{"env": …, "args": …}``
in; the child's pid, then its exit status, out.
"""

import importlib
import json
import os
import sys

import sitecustomize


def _child(request):
    try:
        os.setsid()  # its own process group: a timeout kills it and everything it started
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.environ.update(request["env"])
        configuration = sys.modules.get("hypothesis.configuration")
        if configuration is not None:  # re-read HYPOTHESIS_STORAGE_DIRECTORY from this run's environment
            configuration.set_hypothesis_home_dir(None)
        sitecustomize.install()
        import pytest

        code = int(pytest.main(request["args"]))
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = 70
    os._exit(code)


def main():
    root = os.environ["MUTATION_ROOT"]
    with open(sys.argv[1]) as f:
        for name in json.load(f):
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: S112 - a module that only imports in its original context
                continue
    project = sorted(name for name, module in list(sys.modules.items())
                     if module is not None and sitecustomize.in_project(module, root))
    os.write(1, (json.dumps({"project_modules": project}) + "\n").encode())
    for line in sys.stdin.buffer:
        pid = os.fork()
        if pid == 0:
            _child(json.loads(line))
        os.write(1, f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(1, f"{os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    main()
