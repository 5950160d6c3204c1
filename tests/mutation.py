#!/usr/bin/env python3
"""Mutation testing of ec2: run by hand, not by pytest.

    python3 tests/mutation.py [--jobs N] [--only NAME,...] [--operators OP,...]
                              [--rerun LOG] [--minutes M] [--list]

Makes one mutant of ec2 at a time in any of its functions, writes it into a
scratch copy of the checkout, and runs the fast suite there, stopping at the
first failure. A mutant that no test kills is printed with its line; the
score is killed / run. The operators, each named for --operators:

  compare   a comparison turned around (== for !=, < for >=, in for not in)
  boolop    `and` for `or`, and back
  not       a `not` dropped
  number    a number moved by one, True for False
  drop      a statement removed from a block
  swap      operands swapped: `a or b` for `b or a`, `a + b` for `b + a`
  order     two neighbours of a list, a tuple or a call's arguments swapped
  element   one element of a list, tuple or set literal left out
  constant  a string replaced by another string of the same function (or by
            '' when it has none), an UPPER constant by another of its type
  unwrap    a call replaced by its argument, or a method call by its object:
            quote(x) for x, text.strip() for text

Mutants are made by rewriting the syntax tree, so each runs as ec2's whole
source unparsed (ast.unparse, Python 3.9+); the unmutated unparsed source is
checked first. The remote sh scripts are strings to this tool: they were
mutated by hand.
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
FAST = ["tests/test_unit.py", "tests/test_claims.py", "tests/test_laptop.py", "tests/test_idle_unit.py",
        "tests/test_guard_unit.py",
        "tests/test_lab_unit.py", "tests/test_jupyter_unit.py", "tests/test_way_in_unit.py",
        "tests/test_process.py", "tests/test_proxy_process.py", "tests/test_lab_process.py",
        "tests/test_property.py", "tests/test_completion.py", "tests/test_lab_script.py",
        "tests/test_fuzz.py", "tests/test_guard.py"]
SWAP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE,
        ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
        ast.And: ast.Or, ast.Or: ast.And}
# Operators whose operands can be swapped to a different result (+ joins strings and lists).
ORDERED = (ast.Add, ast.Sub, ast.Div, ast.FloorDiv, ast.Mod)
OPERATORS = ("compare", "boolop", "not", "number", "drop", "swap", "order", "element", "constant",
             "unwrap")


class Points(ast.NodeVisitor):
    """The places to mutate, as (function, node id, kind, line), with what the
    constant operator may put in: the module's UPPER constants by type, and
    each function's strings."""

    def __init__(self, tree):
        self.found, self.function, self.strings = [], None, {}  # function -> its strings
        self.upper = {}  # type name -> the UPPER constants of that type, in order
        for statement in tree.body:
            if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                    and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id.isupper()
                    and isinstance(statement.value, (ast.Constant, ast.Tuple))):
                kind = (type(statement.value.value).__name__ if isinstance(statement.value, ast.Constant)
                        else "tuple")
                self.upper.setdefault(kind, []).append(statement.targets[0].id)
        self.upper_type = {name: kind for kind, names in self.upper.items() for name in names}

    def visit_FunctionDef(self, node):
        if self.function is not None:  # a function inside one: its outer function's points
            return
        self.function = node.name
        docstrings = {id(n.body[0].value) for n in ast.walk(node)
                      if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        self.strings[node.name] = list(dict.fromkeys(
            n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings))
        for child in ast.walk(node):
            if id(child) in docstrings:
                continue
            for kind in kinds(child, self):
                self.found.append((self.function, id(child), kind, getattr(child, "lineno", node.lineno)))
        self.function = None


def kinds(node, points):
    """The mutations of NODE, as 'operator' or 'operator:N' (N: which operand, element or statement)."""
    found = []
    if isinstance(node, ast.Compare):
        found += [f"compare:{n}" for n, op in enumerate(node.ops) if type(op) in SWAP]
    if isinstance(node, ast.BoolOp):
        found += ["boolop", "swap"]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ORDERED):
        found.append("swap")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        found.append("not")
    if isinstance(node, ast.Constant) and type(node.value) in (int, bool):
        found.append("number")
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if other_string(node.value, points.strings[points.function]) is not None:
            found.append("constant")
    if (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
            and len(points.upper.get(points.upper_type.get(node.id), [])) > 1):
        found.append("constant")
    literal = isinstance(node, (ast.List, ast.Tuple, ast.Set))
    if literal and not isinstance(getattr(node, "ctx", None), ast.Store):
        found += [f"order:{n}" for n in range(len(node.elts) - 1) if not same(node.elts[n], node.elts[n + 1])]
        found += [f"element:{n}" for n in range(len(node.elts)) if len(node.elts) > 1]
    if isinstance(node, ast.Call):
        found += [f"order:{n}" for n in range(len(node.args) - 1)
                  if not isinstance(node.args[n + 1], ast.Starred)
                  and not same(node.args[n], node.args[n + 1])]
        if len(node.args) == 1 and not node.keywords and not isinstance(node.args[0], ast.Starred):
            found.append("unwrap")
        elif not node.args and not node.keywords and isinstance(node.func, ast.Attribute):
            found.append("unwrap")
    if isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try, ast.FunctionDef)):
        found += [f"drop:{n}" for n, statement in enumerate(node.body)
                  if len(node.body) > 1 and not isinstance(statement, (ast.Return, ast.Raise))
                  and not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))]
    return found


def same(a, b):
    """Whether two expressions are written alike: swapping them changes nothing."""
    return ast.dump(a) == ast.dump(b)


def other_string(value, strings):
    """The string that the constant operator puts for VALUE: the next other one of the function's, or ''."""
    others = [s for s in strings if s != value]
    if others:
        return others[(strings.index(value) if value in strings else 0) % len(others)]
    return "" if value else None


def mutate(tree, target, kind, points, function):
    """A copy of TREE with the node whose id() was TARGET mutated; returns (tree, what)."""
    # Only the top-level statement that holds TARGET is copied: the rest is shared, unchanged.
    at = next(n for n, statement in enumerate(tree.body)
              if any(id(node) == target for node in ast.walk(statement)))
    clone = ast.Module(body=list(tree.body), type_ignores=[])
    clone.body[at] = copy.deepcopy(tree.body[at])
    # ast.walk goes the same way through a tree and its copy.
    node = dict(zip((id(n) for n in ast.walk(tree.body[at])), ast.walk(clone.body[at])))[target]
    operator, _, n = kind.partition(":")
    n = int(n or 0)
    if operator == "compare":
        old = node.ops[n]
        node.ops[n] = SWAP[type(old)]()
        what = f"{type(old).__name__} -> {type(node.ops[n]).__name__}"
    elif operator == "boolop":
        old = node.op
        node.op = SWAP[type(old)]()
        what = f"{type(old).__name__} -> {type(node.op).__name__}"
    elif operator == "not":
        replace(clone, node, node.operand)
        what = "not dropped"
    elif operator == "number":
        old = node.value
        node.value = (not old) if isinstance(old, bool) else old + 1
        what = f"{old!r} -> {node.value!r}"
    elif operator == "swap":
        before = ast.unparse(node)
        if isinstance(node, ast.BoolOp):
            node.values.reverse()
        else:
            node.left, node.right = node.right, node.left
        what = f"swapped: {before[:40]} -> {ast.unparse(node)[:40]}"
    elif operator == "order":
        items = node.args if isinstance(node, ast.Call) else node.elts
        items[n], items[n + 1] = items[n + 1], items[n]
        what = f"reordered: {ast.unparse(items[n + 1])[:30]} <-> {ast.unparse(items[n])[:30]}"
    elif operator == "element":
        what = f"element left out: {ast.unparse(node.elts[n])[:50]}"
        del node.elts[n]
    elif operator == "constant" and isinstance(node, ast.Name):
        same = points.upper[points.upper_type[node.id]]
        old, node.id = node.id, same[(same.index(node.id) + 1) % len(same)]
        what = f"{old} -> {node.id}"
    elif operator == "constant":
        old, node.value = node.value, other_string(node.value, points.strings[function])
        what = f"{old[:30]!r} -> {node.value[:30]!r}"
    elif operator == "unwrap":
        inner = node.args[0] if node.args else node.func.value
        what = f"unwrapped: {ast.unparse(node)[:40]} -> {ast.unparse(inner)[:40]}"
        replace(clone, node, inner)
    else:
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
    (scratch / "ec2").write_text(source)
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
    parser.add_argument("--only", help="mutate only these functions, comma-separated, in this order")
    parser.add_argument("--operators", help="only these operators, comma-separated (default: all of "
                        + ", ".join(OPERATORS) + ")")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--rerun", metavar="LOG", help="only the mutants that LOG, the output of an earlier"
                        " run, says SURVIVED (matched by function and change, as lines move)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds for one run (default: 300)")
    parser.add_argument("--minutes", type=float, help="start no mutant after this many minutes"
                        " (default: run them all)")
    args = parser.parse_args()
    source = (ROOT / "ec2").read_text()
    tree = ast.parse(source)
    # ec2's first statement is its sh preamble, a string to Python: kept as it is written, since
    # unparsed it would lose its shebang and its sh, and mutated it would be no test of Python.
    preamble = tree.body[0]
    assert isinstance(preamble, ast.Expr) and isinstance(preamble.value, ast.Constant)
    head = "".join(source.splitlines(keepends=True)[:preamble.end_lineno])

    def text(module):
        return head + ast.unparse(ast.Module(body=module.body[1:], type_ignores=[])) + "\n"

    points = Points(tree)
    points.visit(tree)
    operators = args.operators.split(",") if args.operators else OPERATORS
    unknown = set(operators) - set(OPERATORS)
    if unknown:
        parser.error(f"no operator {', '.join(sorted(unknown))}; the operators are {', '.join(OPERATORS)}")
    found = [p for p in points.found if (not args.only or p[0] in args.only.split(","))
             and p[2].partition(":")[0] in operators]
    if args.rerun:
        survived = {line.split(" ", 2)[2].strip() for line in Path(args.rerun).read_text().splitlines()
                    if line.startswith("SURVIVED ")}
        found = [p for p in found if f"{p[0]}: {mutate(tree, p[1], p[2], points, p[0])[1]}" in survived]
    # Each mutant is made when its turn comes: a copy of the whole tree apiece would not fit in memory.
    # With --only, the functions in the order given: the first named are run first.
    mutants = sorted(found, key=lambda p: args.only.split(",").index(p[0])) if args.only else found
    if args.list:
        for function, target, kind, line in mutants:
            print(f"ec2:{line} {function}: {mutate(tree, target, kind, points, function)[1]}")
        return
    scratches = []
    for _ in range(args.jobs):
        scratch = Path(tempfile.mkdtemp(prefix="ec2-mutant-"))
        shutil.copytree(ROOT / "tests", scratch / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("README.md", "pyproject.toml", ".gitattributes"):
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
                function, target, kind, line = todo.get_nowait()
            except queue.Empty:
                return
            mutated, what = mutate(tree, target, kind, points, function)
            if run(text(mutated), scratch, args.timeout, running):
                survivors.append((function, line, what))
                print(f"SURVIVED ec2:{line} {function}: {what}", flush=True)
            done.append(line)
            if len(done) % 25 == 0:
                print(f"... {len(done)}/{len(mutants)}", flush=True)

    # A run in the background starts with SIGINT ignored: SIGINT and SIGTERM both stop it cleanly.
    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        if not run(text(tree), scratches[0], args.timeout, running):
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
