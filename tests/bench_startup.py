#!/usr/bin/env python3
"""How much ec2 adds to starting Python: a benchmark run by hand, not by pytest.

    python3 tests/bench_startup.py [--runs N] [--python PATH]

It makes a fresh venv with PATH's interpreter (or --python), installs the
checkout into it with pip, and times, interleaved so that all see the same
machine load, with that venv's Python:
  - `python -c pass`, and importing argparse;
  - THE REFERENCE, tests/bench_reference.py: a 20-line argparse script with
    SESSION and -j that builds the ssh argv, the floor for any argparse tool;
  - `ec2 --dry-run work -j -H host`, installed (a console script over the
    module, from cached bytecode); as the copied script run as a program,
    whose sh lines have Python load it with its bytecode kept in the cache;
    and as `python3 ec2`, which compiles the whole file at every run;
  - one completion request, `ec2 --complete profiles`, the first two ways,
    with a config file of four profiles (what one TAB after -H costs).
It prints the medians and their ratios to the reference. No other config
file is read: XDG_CONFIG_HOME points at a directory of the benchmark's own.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EC2 = str(ROOT / "ec2")
REFERENCE = str(ROOT / "tests" / "bench_reference.py")
PROFILES = "".join(f"[box{n}]\nhost = box{n}.example\nregion = us-east-1\n\n" for n in range(4))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="runs of each command (default: 40)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter for the venv (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env_dir = Path(tmp) / "venv"
        subprocess.run([args.python, "-m", "venv", str(env_dir)], check=True)
        subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", str(ROOT)], check=True)
        python, installed = str(env_dir / "bin" / "python"), str(env_dir / "bin" / "ec2")
        work = ["--dry-run", "work", "-j", "-H", "host"]
        commands = {
            "python -c pass": [python, "-c", "pass"],
            "python -c 'import argparse'": [python, "-c", "import argparse"],
            "REFERENCE: bench_reference.py --dry-run work -j": [python, REFERENCE, *work],
            "ec2 --dry-run work -j -H host, installed": [installed, *work],
            "ec2 --dry-run work -j -H host, copied script": [EC2, *work],
            "python3 ec2 --dry-run work -j -H host": [python, EC2, *work],
            "ec2 --complete profiles, installed": [installed, "--complete", "profiles"],
            "ec2 --complete profiles, copied script": [EC2, "--complete", "profiles"],
        }
        config = Path(tmp) / "xdg" / "ec2"
        config.mkdir(parents=True)
        (config / "config").write_text(PROFILES)
        # The copied script's sh lines run the python3 of PATH: the venv's.
        env = {**os.environ, "XDG_CONFIG_HOME": str(config.parent), "XDG_CACHE_HOME": tmp,
               "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"}
        for key in ("EC2_HOST", "EC2_CONFIG", "PYTHONDONTWRITEBYTECODE"):
            env.pop(key, None)
        times = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():  # interleaved: one of each per round
                start = time.perf_counter()
                subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=True)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    reference = statistics.median(times["REFERENCE: bench_reference.py --dry-run work -j"])
    print(f"{args.python} in a fresh venv, {args.runs} interleaved runs each; medians")
    print(f"  {'':50s} {'':>9s}  {'/ pass':>6s}  {'/ ref':>6s}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"  {name:50s} {median * 1000:6.1f} ms  {median / base:6.2f}  {median / reference:6.2f}")


if __name__ == "__main__":
    main()
