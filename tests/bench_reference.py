#!/usr/bin/env python3
"""THE REFERENCE for tests/bench_startup.py, not part of ec2: the floor for an argparse tool.

The seed's own script, in 20 lines: SESSION and -j, build the ssh argv, exec.
"""
import argparse
import os
import shlex

parser = argparse.ArgumentParser(prog="ec2")
parser.add_argument("session", nargs="?")
parser.add_argument("-j", action="store_true")
parser.add_argument("-H", "--host", default="box")
parser.add_argument("--dry-run", action="store_true")
args = parser.parse_args()
argv = ["ssh"] + (["-L", "8888:localhost:8888"] if args.j else []) + ["-t", args.host]
argv += ["tmux", "new-session", "-A", "-s", args.session] if args.session else []
if args.dry_run:
    print(shlex.join(argv))
else:
    os.execvp("ssh", argv)
