#!/usr/bin/env python3
"""How much ec2 adds to starting Python: a benchmark run by hand, not by pytest.

    python3 tests/bench_startup.py [--runs N] [--python PATH]

Times `python3 ec2 --dry-run work -j -H host` against `python3 -c pass`,
interleaved so that both see the same machine load, and prints the medians
and their ratio. Three more commands show where the time goes: importing
argparse (which ec2 needs to parse any command line), compiling the script
(which Python does at every run of a script, as it caches bytecode only for
imported modules), and `ec2 --version` (both, with no config and no sockets). No config file is
read: XDG_CONFIG_HOME points at an empty directory.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EC2 = str(Path(__file__).resolve().parent.parent / "ec2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="runs of each command (default: 40)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter to time (default: this one)")
    args = parser.parse_args()
    commands = {
        "python3 -c pass": [args.python, "-c", "pass"],
        "python3 -c 'import argparse'": [args.python, "-c", "import argparse"],
        "python3 -c 'compile(ec2)'": [args.python, "-c", f"compile(open({EC2!r}).read(), 'ec2', 'exec')"],
        "python3 ec2 --version": [args.python, EC2, "--version"],
        "python3 ec2 --dry-run work -j -H host": [args.python, EC2, "--dry-run", "work", "-j", "-H", "host"],
    }
    with tempfile.TemporaryDirectory() as empty:
        env = {**os.environ, "XDG_CONFIG_HOME": empty}
        for key in ("EC2_HOST", "EC2_CONFIG"):
            env.pop(key, None)
        times = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():  # interleaved: one of each per round
                start = time.perf_counter()
                subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=True)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python3 -c pass"])
    print(f"{args.python}, {args.runs} interleaved runs each")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"  {name:42s} median {median * 1000:6.1f} ms  ratio {median / base:.2f}")


if __name__ == "__main__":
    main()
