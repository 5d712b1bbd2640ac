"""Loaded at interpreter start-up by ``tools/mutate.py`` runs (PYTHONPATH): serves one mutated module.

Every Python process of a test run inherits the environment, so pytest and whatever it starts
(servers, CLI subprocesses) import the mutant instead of the file on disk; the tree itself is
never written to. Outside a mutation run (no MUTATION_MODULE) this does nothing.
"""

import atexit
import importlib.machinery
import importlib.util
import json
import os
import sys


class _MutantLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname, path, source):
        super().__init__(fullname, path)
        self._source = source

    def get_code(self, fullname):
        # Compiled from the mutated text every time: never from (or into) __pycache__.
        return compile(self._source, self.path, "exec", dont_inherit=True)


class _MutantFinder:
    def __init__(self, fullname, path, source, mark):
        self.fullname, self.path, self.source, self.mark = fullname, path, source, mark

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.fullname:
            return None
        if self.mark:
            open(self.mark, "a").close()  # tells the runner the tests really imported the module
        package = os.path.basename(self.path) == "__init__.py"
        return importlib.util.spec_from_file_location(
            fullname, self.path, loader=_MutantLoader(fullname, self.path, self.source),
            submodule_search_locations=[os.path.dirname(self.path)] if package else None)


def in_project(module, root):
    """A module loaded from the project's own files (not from a virtualenv kept inside it, not
    this folder's)."""
    path = getattr(module, "__file__", None)
    if not path:
        return False
    path = os.path.realpath(path)
    inside = lambda folder: path.startswith(os.path.realpath(folder) + os.sep)  # noqa: E731
    return inside(root) and not inside(sys.prefix) and not inside(os.path.dirname(__file__))


def _dump_imports(out, root):
    names = sorted(name for name, module in list(sys.modules.items())
                   if module is not None and not in_project(module, root) and name != "__main__")
    with open(out, "w") as f:
        json.dump(names, f)


def install():
    """Put the mutant (named by the MUTATION_* variables) in front of every other import."""
    fullname = os.environ.get("MUTATION_MODULE")
    if not fullname:
        return
    with open(os.environ["MUTATION_SOURCE"], "rb") as f:
        source = f.read()
    for finder in [f for f in sys.meta_path if isinstance(f, _MutantFinder)]:
        sys.meta_path.remove(finder)
    sys.meta_path.insert(0, _MutantFinder(fullname, os.environ["MUTATION_ORIGIN"], source,
                                          os.environ.get("MUTATION_MARK")))
    # The unmutated run records what it imported from outside the project, for the fork server
    # to import once; its own subprocesses must not overwrite the list.
    out = os.environ.pop("MUTATION_IMPORTS_OUT", None)
    if out:
        atexit.register(_dump_imports, out, os.environ["MUTATION_ROOT"])


install()
