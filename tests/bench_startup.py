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

    python3 tests/bench_startup.py --aws [--runs N] [--sequential REV]

times instead, as the copied script, connections by name through the real
AWS CLI against moto (tests/moto_ec2.py, on 127.0.0.1), interleaved:
  - `ec2 -H host --dry-run work`, a plain host, against which the others are
    put (and `aws --version`, one start of the CLI);
  - `ec2 -H gpu --dry-run work`, an instance with a public address: cold
    (nothing remembered: ec2's cache emptied before each run) and remembered;
  - `ec2 -H private --dry-run work`, an instance with none, connect = auto,
    the plugin present and the instance not online in SSM, so that ec2 asks
    SSM and EICE (moto_ec2 answers both) and goes through EICE: with ec2 of
    REV (default: 4618066, before the checks ran at once), which asks one
    question after the other and remembers nothing; with this checkout's
    checks at once, cold, then with only the CLI's version remembered (as
    10 minutes after a connection), then remembered.
The AWS CLI of the test tools is version 1, which EICE does not take: a
wrapper has it answer --version as 2.15.0 would, after running it, so that
every question costs what it costs.
"""

import argparse
import os
import shutil
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
    parser.add_argument("--aws", action="store_true", help="time connections by name, through moto")
    parser.add_argument("--sequential", default="4618066",
                        help="the git revision of ec2 whose checks ran one after the other")
    args = parser.parse_args()
    if args.aws:
        return by_name(args)
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


def timed(commands, runs, env, before=None):
    """Run COMMANDS ({name: argv}) interleaved, RUNS rounds; BEFORE(name) before each; medians."""
    times = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            if before:
                before(name)
            start = time.perf_counter()
            done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            times[name].append(time.perf_counter() - start)
            if done.returncode:
                raise SystemExit(f"{name}: {done.stderr}")
    return {name: statistics.median(samples) for name, samples in times.items()}


def by_name(args):
    sys.path.insert(0, str(ROOT / "tests"))
    sys.dont_write_bytecode = True
    from conftest import Moto

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        moto = Moto(tmp)
        try:
            moto.launch("bench-gpu")
            subnet = moto.private_subnet("10.99.0.0/24")
            private = moto.launch("bench-private", subnet=subnet)
            moto.set_state(moto.describe(private)["VpcId"], "endpoint")
            sequential = tmp / "ec2-sequential"
            sequential.write_bytes(subprocess.run(["git", "show", f"{args.sequential}:ec2"], cwd=ROOT,
                                                  capture_output=True, check=True).stdout)
            sequential.chmod(0o755)
            plugin = tmp / "bin" / "session-manager-plugin"  # looked for, never run
            plugin.parent.mkdir()
            plugin.write_text("#!/bin/sh\nexit 1\n")
            plugin.chmod(0o755)
            real = shutil.which("aws", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
            (tmp / "bin" / "aws").write_text(
                f'#!/bin/sh\nif [ "$1" = --version ]; then "{real}" --version >/dev/null 2>&1;'
                f' echo aws-cli/2.15.0 Python/3.11.8; exit 0; fi\nexec "{real}" "$@"\n')
            (tmp / "bin" / "aws").chmod(0o755)
            config = tmp / "ec2.ini"
            config.write_text("[gpu]\ninstance = bench-gpu\nuser = ubuntu\n\n"
                              "[private]\ninstance = bench-private\nuser = ubuntu\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
            env.update(moto.env, EC2_CONFIG=str(config), XDG_CACHE_HOME=str(tmp / "cache"),
                       PATH=f"{plugin.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                            f"{os.environ['PATH']}")
            work = ["--dry-run", "work"]
            commands = {
                "ec2 -H host --dry-run work (a plain host)": [EC2, "-H", "host", *work],
                "aws --version (one start of the CLI)": [str(tmp / "bin" / "aws"), "--version"],
                "ec2 -H gpu, cold": [EC2, "-H", "gpu", *work],
                "ec2 -H gpu, remembered": [EC2, "-H", "gpu", *work],
                f"ec2 -H private, cold, one after another ({args.sequential})":
                    [str(sequential), "-H", "private", *work],
                "ec2 -H private, cold, checks at once": [EC2, "-H", "private", *work],
                "ec2 -H private, cold but the CLI's version": [EC2, "-H", "private", *work],
                "ec2 -H private, remembered": [EC2, "-H", "private", *work],
            }

            def before(name):
                if name.endswith("the CLI's version"):
                    shutil.rmtree(tmp / "cache" / "ec2" / "answers", ignore_errors=True)
                elif "cold" in name:
                    shutil.rmtree(tmp / "cache" / "ec2", ignore_errors=True)

            medians = timed(commands, args.runs, env, before)
        finally:
            moto.stop()
    plain = medians["ec2 -H host --dry-run work (a plain host)"]
    lookup = medians["ec2 -H gpu, cold"] - plain  # one CLI run that asks AWS, as a connection pays it
    print(f"connections by name against moto, {args.runs} interleaved runs each; medians, their ratio to")
    print("the plain host, and what they cost over it in lookups (a cold -H gpu's cost over it)")
    print(f"  {'':58s} {'':>9s}  {'/ host':>6s}  {'lookups':>7s}")
    for name, median in medians.items():
        over = (median - plain) / lookup
        print(f"  {name:58s} {median * 1000:6.1f} ms  {median / plain:6.2f}  {over:7.2f}")


if __name__ == "__main__":
    main()
