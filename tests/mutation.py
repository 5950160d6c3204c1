#!/usr/bin/env python3
"""Mutation testing of ec2's deciding code: run by hand, not by pytest.

    python3 tests/mutation.py [--jobs N] [--only NAME,...] [--minutes M] [--list]

Makes one mutant of ec2 at a time (a comparison turned around, `and` for
`or`, a `not` dropped, a number moved by one, True for False, a statement
removed) in the functions that decide what to run (argument types, config,
forwards, ports, the ssh argv, instance states, Jupyter URLs, the lab's
answers, completion), writes it into a scratch copy of the checkout, and runs
the fast suite there, stopping at the first failure. A mutant that no test
kills is printed with its line; the score is killed / all. Mutants are made
by rewriting the syntax tree, so each runs as ec2's whole source unparsed
(ast.unparse, Python 3.9+); the unmutated unparsed source is checked first.
The remote sh scripts are strings to this tool: they were mutated by hand.
"""

import argparse
import ast
import copy
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# In-process files first: most mutants die in them within seconds.
FAST = ["tests/test_unit.py", "tests/test_lab_unit.py", "tests/test_jupyter_unit.py",
        "tests/test_way_in_unit.py", "tests/test_process.py", "tests/test_proxy_process.py",
        "tests/test_lab_process.py", "tests/test_property.py", "tests/test_completion.py",
        "tests/test_lab_script.py", "tests/test_fuzz.py"]
# What only does (runs, execs, forks, prints progress): left to the end-to-end tests.
DOING = {"exec_ssh", "run_remote", "open_browser_later", "open_when_answering", "run_lab_script",
         "build_parser", "main", "write_private", "wait_and_open", "start_instance", "list_sessions",
         "show_jupyter_urls", "find_or_start_lab", "connect", "list_instances", "aws", "hand_over",
         "relay"}
SWAP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE,
        ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
        ast.And: ast.Or, ast.Or: ast.And}


class Points(ast.NodeVisitor):
    """The places to mutate, as (function, node id, kind, line)."""

    def __init__(self):
        self.found, self.function = [], None

    def visit_FunctionDef(self, node):
        outer, self.function = self.function, (node.name if self.function is None else self.function)
        if self.function not in DOING:
            for child in ast.walk(node):
                for kind in kinds(child):
                    self.found.append((self.function, id(child), kind, getattr(child, "lineno", node.lineno)))
        self.function = outer


def kinds(node):
    if isinstance(node, ast.Compare):
        return [f"compare:{n}" for n, op in enumerate(node.ops) if type(op) in SWAP]
    if isinstance(node, ast.BoolOp):
        return ["boolop"]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ["not"]
    if isinstance(node, ast.Constant) and type(node.value) in (int, bool) and not isinstance(node.value, str):
        return ["constant"]
    if isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try, ast.FunctionDef)):
        return [f"drop:{n}" for n, statement in enumerate(node.body)
                if len(node.body) > 1 and not isinstance(statement, (ast.Return, ast.Raise))
                and not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))]
    return []


def mutate(tree, target, kind):
    """A copy of TREE with the node whose id() was TARGET mutated; returns (tree, what)."""
    clone = copy.deepcopy(tree)
    # ast.walk goes the same way through a tree and its copy.
    node = dict(zip((id(n) for n in ast.walk(tree)), ast.walk(clone)))[target]
    if kind.startswith("compare:"):
        n = int(kind.split(":")[1])
        old = node.ops[n]
        node.ops[n] = SWAP[type(old)]()
        what = f"{type(old).__name__} -> {type(node.ops[n]).__name__}"
    elif kind == "boolop":
        old = node.op
        node.op = SWAP[type(old)]()
        what = f"{type(old).__name__} -> {type(node.op).__name__}"
    elif kind == "not":
        replace(clone, node, node.operand)
        what = "not dropped"
    elif kind == "constant":
        old = node.value
        node.value = (not old) if isinstance(old, bool) else old + 1
        what = f"{old!r} -> {node.value!r}"
    else:
        n = int(kind.split(":")[1])
        what = f"statement dropped: {ast.unparse(node.body[n]).splitlines()[0][:60]}"
        node.body[n] = ast.Pass()
    return clone, what


def replace(tree, old, new):
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
            elif isinstance(value, list):
                for n, item in enumerate(value):
                    if item is old:
                        value[n] = new


def run(source, scratch, timeout, running):
    """Run the fast suite on SOURCE in SCRATCH; True if it passes (the mutant survives)."""
    (scratch / "ec2").write_text("#!/usr/bin/env python3\n" + source)
    (scratch / "ec2").chmod(0o755)
    # A mutant may write where ec2 never would (a mutated ~/.cache path): give it a home of its own.
    (scratch / "home").mkdir(exist_ok=True)
    env = {**os.environ, "EC2_FUZZ_EXAMPLES": "25", "PYTHONDONTWRITEBYTECODE": "1",
           "HOME": str(scratch / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *FAST],
                            cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running.add(proc)
    try:
        return proc.wait(timeout) == 0
    except subprocess.TimeoutExpired:
        return False  # a mutant that hangs the suite is caught by its time-outs
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # pytest then tears its fixtures down
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # a mutant looping where SIGINT cannot reach it
                proc.kill()
                proc.wait()
        running.discard(proc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default: 2)")
    parser.add_argument("--only", help="mutate only these functions, comma-separated")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=300, help="seconds for one run (default: 300)")
    parser.add_argument("--minutes", type=float, help="start no mutant after this many minutes"
                        " (default: run them all)")
    args = parser.parse_args()
    source = (ROOT / "ec2").read_text()
    tree = ast.parse(source)
    points = Points()
    points.visit(tree)
    found = [p for p in points.found if not args.only or p[0] in args.only.split(",")]
    mutants = [(function, line, *mutate(tree, target, kind)) for function, target, kind, line in found]
    if args.list:
        for function, line, _, what in mutants:
            print(f"ec2:{line} {function}: {what}")
        return
    scratches = []
    for _ in range(args.jobs):
        scratch = Path(tempfile.mkdtemp(prefix="ec2-mutant-"))
        shutil.copytree(ROOT / "tests", scratch / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("README.md", "pyproject.toml"):
            shutil.copy(ROOT / name, scratch / name)
        scratches.append(scratch)
    running, survivors, done, threads = set(), [], [], []
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else None
    todo = queue.Queue()
    for mutant in mutants:
        todo.put(mutant)

    def worker(scratch):
        while deadline is None or time.monotonic() < deadline:
            try:
                function, line, mutated, what = todo.get_nowait()
            except queue.Empty:
                return
            if run(ast.unparse(mutated), scratch, args.timeout, running):
                survivors.append((function, line, what))
                print(f"SURVIVED ec2:{line} {function}: {what}", flush=True)
            done.append(line)
            if len(done) % 25 == 0:
                print(f"... {len(done)}/{len(mutants)}", flush=True)

    try:
        if not run(ast.unparse(tree), scratches[0], args.timeout, running):
            raise SystemExit("the fast suite fails on ec2's own source, unparsed: fix that first")
        threads = [threading.Thread(target=worker, args=(scratch,), daemon=True) for scratch in scratches]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(1)
    except KeyboardInterrupt:
        deadline = 0  # the workers take nothing more
        for proc in list(running):
            proc.send_signal(signal.SIGINT)
        for thread in threads:
            thread.join()
    finally:
        for scratch in scratches:
            shutil.rmtree(scratch)
    killed = len(done) - len(survivors)
    print(f"{killed} of {len(done)} mutants run were killed ({100 * killed / max(len(done), 1):.1f}%);"
          f" {len(mutants) - len(done)} of {len(mutants)} not run")


if __name__ == "__main__":
    main()
