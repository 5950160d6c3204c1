#!/usr/bin/env python3
"""How long `ec2 work --lab` takes to reach the interactive ssh: a benchmark run by hand.

    sudo .venv/bin/python tests/bench_lab.py [--runs N] [--cold-runs N]

It starts the test suite's instance (sshd in a network namespace, with the
conda-style home of tests/conftest.py), puts an `ssh` first on PATH that
ends at once when it would become the interactive ssh (-t) and is the real
ssh otherwise, and times, interleaved, medians:
  - `ssh instance true`: one ssh round trip;
  - `ec2 work -j`: ec2 up to the exec of the interactive ssh;
  - `ec2 work --lab`, warm (a server already runs): the goal is one round
    trip more than `ec2 work -j`;
  - `ec2 work --lab`, cold (the server is stopped before each run), against
    Jupyter's own start-up: `jupyter lab` started through ssh the same way
    (in the login shell), until its runtime file appears, polled here every
    10 ms. The goal is no more than 0.5 s of ec2's slack (tmux, polling) on
    top of Jupyter's own start and the -j path.
"""

import argparse
import os
import pty
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True

from conftest import EC2, Host, stop_pid, wait_until  # noqa: E402

FAST_SSH = """#!/bin/sh
# The interactive ssh (-t) ends at once: the benchmark stops at its exec.
for word; do [ "$word" = -t ] && exit 0; done
exec {ssh} "$@"
"""


def timed(argv, env):
    """Seconds ARGV takes, with a terminal as stdin (a tmux session needs one)."""
    controller, terminal = pty.openpty()
    try:
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, stdin=terminal, capture_output=True, text=True)
        took = time.perf_counter() - start
    finally:
        os.close(controller)
        os.close(terminal)
    if done.returncode:
        raise SystemExit(f"{shlex.join(argv)} failed: {done.stderr}")
    return took


def servers(runtime):
    return [int(p.stem.split("-")[1]) for p in runtime.glob("jpserver-*.json")
            if os.path.exists(f"/proc/{p.stem.split('-')[1]}")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="warm runs of each (default: 20)")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold runs of each (default: 5)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_lab.py makes a network namespace: run it as root")
    base = Path(tempfile.mkdtemp(prefix="ec2-bench-"))
    host = Host(base)
    host.start()
    try:
        bin_dir = base / "bin"
        bin_dir.mkdir()
        (bin_dir / "ssh").write_text(FAST_SSH.format(ssh=subprocess.check_output(
            ["sh", "-c", "command -v ssh"], text=True).strip()))
        (bin_dir / "ssh").chmod(0o755)
        runtime = base / "runtime"
        runtime.mkdir()
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "XDG_CONFIG_HOME": str(base / "xdg"),
               "XDG_CACHE_HOME": str(base / "cache")}
        ssh_args = ["--", "-F", str(host.ssh_config), "-o", f"SetEnv=JUPYTER_RUNTIME_DIR={runtime}"]
        ec2 = [sys.executable, str(EC2), "-H", "instance"]
        commands = {
            "ssh instance true (one round trip)": ["ssh", "-F", str(host.ssh_config), "instance", "true"],
            "ec2 work -j": [*ec2, "work", "-j", *ssh_args],
            "ec2 work --lab, warm": [*ec2, "work", "--lab", "--no-browser", *ssh_args],
        }
        timed(commands["ec2 work --lab, warm"], env)  # start the server once
        times = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                times[name].append(timed(argv, env))

        own, cold = [], []
        for _ in range(args.cold_runs):
            for pid in servers(runtime):
                stop_pid(pid)
            own.append(jupyter_own_start(host, runtime))
            for pid in servers(runtime):
                stop_pid(pid)
            cold.append(timed(commands["ec2 work --lab, warm"], env))
        times["jupyter lab's own start (to its runtime file)"] = own
        times["ec2 work --lab, cold"] = cold
        print(f"{sys.executable}; {args.runs} warm and {args.cold_runs} cold runs, interleaved; medians")
        medians = {name: statistics.median(samples) for name, samples in times.items()}
        for name, median in medians.items():
            print(f"  {name:50s} {median * 1000:7.0f} ms")
        trip, plain = medians["ssh instance true (one round trip)"], medians["ec2 work -j"]
        warm, cold_median = medians["ec2 work --lab, warm"], medians["ec2 work --lab, cold"]
        print(f"  warm - (-j): {(warm - plain) * 1000:.0f} ms,"
              f" against one round trip of {trip * 1000:.0f} ms")
        # Jupyter's own start, as timed, includes its ssh connection.
        slack = cold_median - medians["jupyter lab's own start (to its runtime file)"] - plain
        print(f"  cold - (Jupyter's own start through ssh + -j): {slack * 1000:.0f} ms")
    finally:
        for pid in servers(base / "runtime"):
            stop_pid(pid)
        host.stop()


def jupyter_own_start(host, runtime):
    """Seconds from starting jupyter lab through ssh, in a login shell, to its runtime file."""
    start = time.perf_counter()
    proc = subprocess.Popen(["ssh", "-F", str(host.ssh_config), "-o", f"SetEnv=JUPYTER_RUNTIME_DIR={runtime}",
                             "instance", "exec bash -lic 'exec jupyter lab --no-browser'"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: servers(runtime), timeout=120, what="jupyter lab")
        took = time.perf_counter() - start
    finally:
        for pid in servers(runtime):
            stop_pid(pid)
        stop_pid(proc.pid)
    return took


if __name__ == "__main__":
    main()
