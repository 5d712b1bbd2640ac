"""Loaded at interpreter start-up by ``tools/mutate.py`` runs (PYTHONPATH): serves one mutated module.

Every Python process of a test run inherits the environment, so pytest and whatever it starts
(servers, CLI subprocesses) import the mutant instead of the file on disk; the tree itself is
never written to. Outside a mutation run (no MUTATION_MODULE) this does nothing.
"""

import importlib.machinery
import importlib.util
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


def _install():
    fullname = os.environ.get("MUTATION_MODULE")
    if not fullname:
        return
    with open(os.environ["MUTATION_SOURCE"], "rb") as f:
        source = f.read()
    sys.meta_path.insert(0, _MutantFinder(fullname, os.environ["MUTATION_ORIGIN"], source,
                                          os.environ.get("MUTATION_MARK")))


_install()
