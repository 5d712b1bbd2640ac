"""Mutation testing for one module: plant one small bug at a time, run the tests that cover it.

    python tools/mutate.py integration/magento/signing.py [--tests FILE …] [--max N] [--lines A-B] [-v]

The tree is never written to. Each test run starts with ``tools/mutation_site`` on PYTHONPATH, whose
``sitecustomize`` serves the mutated text whenever the module is imported, in pytest and in every
Python process the tests start (servers, CLI runs), so the tests run exactly as they always do:
same tree, venv, data files. Runs are independent, so ``--jobs`` can run several at once when the
tests share no outside state (a PostgreSQL database, a Redis db). Each run is forked from a server
process that has already imported the third-party modules the unmutated run used (``--no-fork``:
start each afresh), which makes a quickly killed mutant about four times cheaper.

A mutant is *killed* when the tests fail, *timeout* when they run past ``--timeout-factor`` times
the unmutated run (an infinite loop: also caught), and *survived* when they pass. The score is
(killed + timeout) / run. Mutants listed as equivalent in ``tools/mutation.toml`` (no behaviour
can tell them from the original) are not run and not counted. Standard library only; nothing
imported from the app.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import queue
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tools" / "mutation.toml"
SITE = ROOT / "tools" / "mutation_site"
PYTEST = ["-x", "-q", "-p", "no:cacheprovider"]

_COMPARE_SWAP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE,
                 ast.GtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
               ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr, ast.BitXor: ast.BitOr, ast.LShift: ast.RShift,
               ast.RShift: ast.LShift}
_SYMBOL = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
           ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
           ast.Div: "/", ast.FloorDiv: "//", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^", ast.LShift: "<<",
           ast.RShift: ">>", ast.And: "and", ast.Or: "or"}
_COMPLEMENTS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)
# Statements whose removal is a mutant; definitions, imports and ``pass`` are not.
_REMOVABLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return, ast.Raise, ast.Delete, ast.Break,
              ast.Continue, ast.Assert)


@dataclass(frozen=True)
class Mutant:
    line: int  # where the mutated construct starts, 1-based line and character column
    col: int
    description: str
    start: int  # byte offsets of the replaced span in the source
    end: int
    replacement: str

    def ident(self, path: str) -> str:
        return f"{path}:{self.line}:{self.col} {self.description}"

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]


def _short(node: ast.AST, limit: int = 50) -> str:
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Finder(ast.NodeVisitor):
    """Collects the mutants of a module; each replaces the source span of one node."""

    def __init__(self, source: bytes) -> None:
        self.lines = source.splitlines(keepends=True)
        self.offsets = [0]
        for line in self.lines:
            self.offsets.append(self.offsets[-1] + len(line))
        self.mutants: list[Mutant] = []
        self.depth = 0  # inside a function or class body

    # --- helpers -------------------------------------------------------------------------
    def _add(self, node: ast.AST, description: str, replacement: str, wrap: bool = True) -> None:
        start = self.offsets[node.lineno - 1] + node.col_offset
        end = self.offsets[node.end_lineno - 1] + node.end_col_offset
        col = len(self.lines[node.lineno - 1][: node.col_offset].decode("utf-8", "replace")) + 1
        text = f"({replacement})" if wrap else replacement
        self.mutants.append(Mutant(node.lineno, col, description, start, end, text))

    def _replace(self, node: ast.AST, description: str, **changes: object) -> None:
        new = copy.copy(node)
        for name, value in changes.items():
            setattr(new, name, value)
        self._add(node, description, ast.unparse(new))

    # --- what is never mutated -----------------------------------------------------------
    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        """f-strings: messages, and ``ast.unparse`` cannot always put them back."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        """``from __future__ import annotations`` and friends: nothing to mutate."""

    def _visit_definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        if not isinstance(node, ast.ClassDef):
            self._visit_arguments(node.args)  # annotations skipped: not evaluated at run time
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]  # docstring
        self.depth += 1
        self._visit_body(body)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _visit_definition

    def _visit_arguments(self, args: ast.arguments) -> None:
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.visit(default)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Module(self, node: ast.Module) -> None:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        self._visit_body(body)

    def _visit_body(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            if self._is_guarded_block(stmt):
                continue
            # Removing a module-level statement only breaks the import; that is no test of anything.
            if self.depth and isinstance(stmt, _REMOVABLE) and not _is_docstring(stmt):
                self._add(stmt, f"remove `{_short(stmt)}`", "pass", wrap=False)
            self.visit(stmt)

    @staticmethod
    def _is_guarded_block(stmt: ast.stmt) -> bool:
        """``if TYPE_CHECKING:`` and ``if __name__ == "__main__":`` never run under the tests."""
        if not isinstance(stmt, ast.If):
            return False
        text = ast.unparse(stmt.test)
        return text in ("TYPE_CHECKING", "typing.TYPE_CHECKING", "__name__ == '__main__'")

    def generic_visit(self, node: ast.AST) -> None:
        for _, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self._visit_body(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)

    # --- mutations -----------------------------------------------------------------------
    def visit_Compare(self, node: ast.Compare) -> None:
        for i, op in enumerate(node.ops):
            swap = _COMPARE_SWAP.get(type(op))
            if swap:
                ops = list(node.ops)
                ops[i] = swap()
                self._replace(node, f"`{_SYMBOL[type(op)]}` → `{_SYMBOL[swap]}` in `{_short(node)}`", ops=ops)
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        other = ast.Or if isinstance(node.op, ast.And) else ast.And
        self._replace(node, f"`{_SYMBOL[type(node.op)]}` → `{_SYMBOL[other]}` in `{_short(node)}`", op=other())
        for i, value in enumerate(node.values):
            rest = node.values[:i] + node.values[i + 1 :]
            new = rest[0] if len(rest) == 1 else ast.BoolOp(op=node.op, values=rest)
            self._add(node, f"drop `{_short(value)}` from `{_short(node)}`", ast.unparse(new))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        swap = _BINOP_SWAP.get(type(node.op))
        if swap:
            self._replace(node, f"`{_SYMBOL[type(node.op)]}` → `{_SYMBOL[swap]}` in `{_short(node)}`", op=swap())
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        swap = _BINOP_SWAP.get(type(node.op))
        if swap:
            new = copy.copy(node)
            new.op = swap()
            self._add(node, f"`{_SYMBOL[type(node.op)]}=` → `{_SYMBOL[swap]}=` in `{_short(node)}`",
                      ast.unparse(new), wrap=False)
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
            self._add(node, f"`{_short(node)}` → `{_short(node.operand)}`", ast.unparse(node.operand))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self._add(node, f"`{value}` → `{not value}`", repr(not value))
        elif isinstance(value, (int, float)):
            for new in (value + 1, value - 1):
                self._add(node, f"`{value!r}` → `{new!r}`", repr(new))
        elif isinstance(value, (str, bytes)):
            new = value[:0] if value else value.__class__("mutated" if isinstance(value, str) else b"mutated")
            self._add(node, f"`{_short(node, 30)}` → `{new!r}`", repr(new))

    def _negate(self, test: ast.expr) -> None:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return  # dropping the `not` is already a mutant
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], _COMPLEMENTS):
            return  # `not (a == b)` is the `==` → `!=` mutant again
        self._add(test, f"`{_short(test)}` → `not ({_short(test)})`", f"not ({ast.unparse(test)})")

    def visit_If(self, node: ast.If) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    visit_While = visit_If

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        for test in node.ifs:
            self._negate(test)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        for i, arg in enumerate(node.args):
            if not isinstance(arg, ast.Starred):
                self._replace(node, f"drop argument `{_short(arg, 30)}` from `{_short(node.func, 30)}(…)`",
                              args=node.args[:i] + node.args[i + 1 :])
        for i, keyword in enumerate(node.keywords):
            if keyword.arg is not None:
                self._replace(node, f"drop `{keyword.arg}=` from `{_short(node.func, 30)}(…)`",
                              keywords=node.keywords[:i] + node.keywords[i + 1 :])
        self.generic_visit(node)


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def find_mutants(source: bytes, path: str) -> list[Mutant]:
    """Every mutant of ``source`` that still compiles, in source order, with unique identities."""
    finder = _Finder(source)
    finder.visit(ast.parse(source, path))
    seen: dict[str, int] = {}
    result = []
    for mutant in sorted(finder.mutants, key=lambda m: (m.start, m.end, m.description)):
        try:
            compile(mutant.apply(source), path, "exec", dont_inherit=True)
        except SyntaxError:
            continue
        key = mutant.ident(path)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:  # the same change twice on one node (e.g. `a == b == c`)
            mutant = Mutant(mutant.line, mutant.col, f"{mutant.description} #{seen[key]}", mutant.start,
                            mutant.end, mutant.replacement)
        result.append(mutant)
    return result


# --- configuration --------------------------------------------------------------------------

@dataclass
class ModuleConfig:
    path: str
    tests: list[str]
    pytest_args: list[str] = field(default_factory=list)
    jobs: int = 1
    equivalent: dict[str, str] = field(default_factory=dict)  # mutant identity -> why


def load_config(module: str) -> ModuleConfig:
    data = tomllib.loads(CONFIG.read_text()) if CONFIG.exists() else {}
    entry = data.get("module", {}).get(module, {})
    equivalent = dict(entry.get("equivalent", {}))
    for ident, why in equivalent.items():
        if not why.strip():
            raise SystemExit(f"{CONFIG.relative_to(ROOT)}: say why this mutant is equivalent: {ident}")
    return ModuleConfig(module, list(entry.get("tests", [])),
                        list(data.get("pytest_args", [])) + list(entry.get("pytest_args", [])),
                        int(entry.get("jobs", 1)), equivalent)


# --- running --------------------------------------------------------------------------------

@dataclass
class Outcome:
    status: str  # killed, survived, timeout
    seconds: float
    imported: bool


class ForkServer:
    """One ``mutation_forkserver`` process: runs pytest in a fork of an interpreter that has the
    third-party imports done already (about 4× less CPU per killed mutant)."""

    def __init__(self, imports: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "mutation_forkserver", str(imports)], cwd=ROOT,
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        self.buffer = b""
        self.child: int | None = None
        ready = self._line(300)
        self.project_modules: list[str] = json.loads(ready)["project_modules"] if ready else ["(no answer)"]

    def _line(self, timeout: float | None) -> str | None:
        """The next line from the server, or None when ``timeout`` passes first."""
        assert self.process.stdout is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.process.stdout], [], [], remaining)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError("the fork server stopped")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def run(self, args: list[str], env: dict[str, str], timeout: float | None) -> int | None:
        """pytest's exit status, or None on timeout (the child's process group is killed)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"args": args, "env": env}).encode() + b"\n")
        self.process.stdin.flush()
        self.child = int(self._line(60) or 0)
        try:
            status = self._line(timeout)
            if status is None:
                _kill_group(self.child)
                self._line(60)
                return None
            return int(status)
        finally:
            self.child = None

    def stop(self) -> None:
        if self.child:
            _kill_group(self.child)
        _kill_group(self.process.pid)
        self.process.wait()


class Runner:
    """Runs the tests against one version of the module at a time, each in its own process group."""

    def __init__(self, module: Path, tests: list[str], pytest_args: list[str], scratch: Path) -> None:
        self.module, self.tests, self.scratch = module, tests, scratch
        self.args = [*PYTEST, *pytest_args, *tests]
        name = module.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        self.fullname = name.removesuffix(".__init__")
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")])),
                        MUTATION_ROOT=str(ROOT), PYTHONDONTWRITEBYTECODE="1",
                        HYPOTHESIS_STORAGE_DIRECTORY=str(scratch / "hypothesis"))
        self.running: set[int] = set()
        self.servers: queue.Queue[ForkServer] = queue.Queue()
        self.all_servers: list[ForkServer] = []
        self.lock = threading.Lock()

    def start_fork_servers(self, count: int, imports: Path) -> list[str]:
        """Start ``count`` fork servers; the project modules they imported (must be none) if any did."""
        for _ in range(count):
            server = ForkServer(imports, self.env)
            self.all_servers.append(server)
            if server.project_modules:
                return server.project_modules
            self.servers.put(server)
        return []

    def run(self, source: bytes, tag: str, timeout: float | None, record_imports: Path | None = None) -> Outcome:
        work = self.scratch / tag
        work.mkdir()
        (work / "module.py").write_bytes(source)
        mark = work / "imported"
        # Nothing a mutant does may outlive it: no bytecode, no examples Hypothesis remembers.
        run_env = dict(MUTATION_MODULE=self.fullname, MUTATION_ORIGIN=str(self.module),
                       MUTATION_SOURCE=str(work / "module.py"), MUTATION_MARK=str(mark),
                       HYPOTHESIS_STORAGE_DIRECTORY=str(work / "hypothesis"))
        if record_imports:
            run_env["MUTATION_IMPORTS_OUT"] = str(record_imports)
        args = [*self.args, f"--basetemp={work / 'tmp'}"]
        began = time.monotonic()
        if self.all_servers and not record_imports:
            server = self.servers.get()
            try:
                code = server.run(args, run_env, timeout)
            finally:
                self.servers.put(server)
        else:
            code = self._run_fresh(args, {**self.env, **run_env}, timeout)
        status = "timeout" if code is None else "survived" if code == 0 else "killed"
        outcome = Outcome(status, time.monotonic() - began, mark.exists())
        shutil.rmtree(work, ignore_errors=True)
        return outcome

    def _run_fresh(self, args: list[str], env: dict[str, str], timeout: float | None) -> int | None:
        process = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        with self.lock:
            self.running.add(process.pid)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.wait()
            return None
        finally:
            with self.lock:
                self.running.discard(process.pid)

    def stop(self) -> None:
        with self.lock:
            for pid in list(self.running):
                _kill_group(pid)
        for server in self.all_servers:
            server.stop()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _line_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="path of the module to mutate, e.g. integration/magento/signing.py")
    parser.add_argument("--tests", nargs="+", metavar="FILE", help="test files or node ids (default: tools/mutation.toml)")
    parser.add_argument("--max", type=int, metavar="N", help="run a random sample of N mutants")
    parser.add_argument("--seed", type=int, default=0, help="seed for --max (default 0)")
    parser.add_argument("--lines", type=_line_range, metavar="A-B", help="only mutants starting on these lines")
    parser.add_argument("--only", type=Path, metavar="FILE",
                        help="only the mutants listed in FILE, one identity a line (e.g. a previous run's survivors)")
    parser.add_argument("--jobs", type=int, metavar="N", help="test runs at once (default: the module's `jobs`, or 1)")
    parser.add_argument("--timeout-factor", type=float, default=3.0, metavar="N",
                        help="a mutant times out after N × the unmutated run, plus 10 s (default 3)")
    parser.add_argument("--no-fork", action="store_true",
                        help="start every test run as a fresh process (slower; for tests that cannot run forked)")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every mutant's outcome")
    args = parser.parse_args(argv)

    module = Path(args.module).resolve()
    if module.suffix != ".py" or not module.is_file() or ROOT not in module.parents:
        parser.error(f"{args.module}: not a Python file in {ROOT}")
    relative = module.relative_to(ROOT).as_posix()
    config = load_config(relative)
    tests = args.tests or config.tests
    if not tests:
        parser.error(f"no tests for {relative}: add them under [module.\"{relative}\"] in tools/mutation.toml "
                     "or pass --tests")
    jobs = max(1, args.jobs or config.jobs)

    original = module.read_bytes()
    mutants = find_mutants(original, relative)
    known = {m.ident(relative) for m in mutants}
    for stale in sorted(set(config.equivalent) - known):
        print(f"warning: equivalent entry matches no mutant (code moved? update tools/mutation.toml): {stale}",
              file=sys.stderr)
    selected = mutants
    if args.lines:
        selected = [m for m in selected if args.lines[0] <= m.line <= args.lines[1]]
    if args.only:
        wanted = {line.strip() for line in args.only.read_text().splitlines() if line.strip()}
        selected = [m for m in selected if m.ident(relative) in wanted]
    # The sample is drawn before the equivalents are set aside, so listing one does not change the sample.
    if args.max is not None and args.max < len(selected):
        selected = sorted(random.Random(args.seed).sample(selected, args.max), key=lambda m: m.start)
    equivalent = [m for m in selected if m.ident(relative) in config.equivalent]
    candidates = [m for m in selected if m.ident(relative) not in config.equivalent]
    if args.list:
        for mutant in candidates:
            print(mutant.ident(relative))
        return 0

    print(f"{relative}: {len(mutants)} mutants, {len(equivalent)} equivalent (not run), running {len(candidates)}"
          f" with {jobs} job{'s' if jobs > 1 else ''}")
    print(f"tests: {' '.join(tests)}", flush=True)
    began = time.monotonic()
    results: list[tuple[Mutant, Outcome]] = []
    with tempfile.TemporaryDirectory(prefix="mutation-", ignore_cleanup_errors=True) as scratch:
        runner = Runner(module, tests, config.pytest_args, Path(scratch))
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            imports = Path(scratch) / "imports.json"
            baseline = runner.run(original, "baseline", None, record_imports=None if args.no_fork else imports)
            if baseline.status != "survived" or not baseline.imported:
                problem = "fail without any mutation" if baseline.status != "survived" else \
                    f"never import {runner.fullname}"
                print(f"the tests {problem}; see:\n  {sys.executable} -m pytest "
                      f"{' '.join(PYTEST + config.pytest_args + tests)}", file=sys.stderr)
                return 2
            how = "fresh processes"
            if not args.no_fork:
                imported = runner.start_fork_servers(jobs, imports)
                forked = None if imported else runner.run(original, "baseline-forked", None)
                if forked is None or forked.status != "survived":
                    why = f"it imported {', '.join(imported)}" if imported else "the tests fail in it"
                    print(f"warning: not using the fork server ({why}); each run starts afresh", file=sys.stderr)
                    runner.stop()
                    runner = Runner(module, tests, config.pytest_args, Path(scratch))
                else:
                    baseline, how = forked, "forked from a preloaded interpreter"
            timeout = baseline.seconds * args.timeout_factor + 10
            print(f"baseline: tests pass in {baseline.seconds:.1f} s ({how}); per-mutant timeout {timeout:.0f} s",
                  flush=True)

            def one(numbered: tuple[int, Mutant]) -> tuple[Mutant, Outcome]:
                n, mutant = numbered
                return mutant, runner.run(mutant.apply(original), f"m{n}", timeout)

            pool = ThreadPoolExecutor(jobs)
            try:
                for n, (mutant, outcome) in enumerate(pool.map(one, enumerate(candidates)), 1):
                    results.append((mutant, outcome))
                    if args.verbose or outcome.status == "survived":
                        print(f"[{n}/{len(candidates)}] {outcome.status:8} {outcome.seconds:5.1f}s  "
                              f"{mutant.ident(relative)}", flush=True)
                    elif sys.stderr.isatty():
                        print(f"\r[{n}/{len(candidates)}]", end="", file=sys.stderr, flush=True)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)  # on Ctrl-C: start nothing more
        except KeyboardInterrupt:
            runner.stop()
            print("\ninterrupted; nothing in the tree was changed", file=sys.stderr)
            return 130
        finally:
            runner.stop()
            signal.signal(signal.SIGTERM, previous)
    elapsed = time.monotonic() - began

    counts = {status: sum(1 for _, o in results if o.status == status) for status in ("killed", "survived", "timeout")}
    run = len(results)
    score = 100.0 * (counts["killed"] + counts["timeout"]) / run if run else 100.0
    sample = f" (sample of {len(candidates)}, seed {args.seed})" if args.max is not None else ""
    print(f"\n{relative}{sample}")
    print(f"killed {counts['killed']}  survived {counts['survived']}  timeout {counts['timeout']}  "
          f"equivalent {len(equivalent)} (excluded)")
    print(f"score {score:.1f}%  ({counts['killed'] + counts['timeout']} of {run} run)")
    print(f"elapsed {_clock(elapsed)} ({jobs} job{'s' if jobs > 1 else ''})")
    survivors = [m for m, o in results if o.status == "survived"]
    if survivors:
        print("\nsurvivors:")
        for mutant in survivors:
            print(f"  {mutant.ident(relative)}")
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
