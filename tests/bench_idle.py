#!/usr/bin/env python3
"""What one check of idle stop's guard costs on the instance: a benchmark run by hand.

    sudo .venv/bin/python tests/bench_idle.py [--runs N]

It starts the test suite's guarded instance (tests/conftest.py's
GuardedHost: sshd in namespaces of its own), with what a working instance
has: a real Jupyter server with a kernel, a tmux session with three windows
and an attached client, a pty of its own per window. It installs the guard
(ec2 itself) there and, on the instance, runs `ec2-idle-stop check`
N times, one after another, measuring for each the CPU time (user + system,
of the check and all it ran, from getrusage) and the wall time. It prints
medians and the worst run. The goal: under 50 ms of CPU a check. Then it
reports what runs between checks: the processes of the guard's loop, which
should be its sh and its sleep alone.
"""

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_idle_e2e import RUN_CELL, start_jupyter, stop_jupyter  # noqa: E402

from conftest import GuardedHost, ec2, wait_until  # noqa: E402

MEASURE = """
import json, resource, subprocess, sys, time
cpu, wall = [], []
for _ in range(int(sys.argv[1])):
    before, began = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.argv[2], "check"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall.append((time.perf_counter() - began) * 1000)
    cpu.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
print(json.dumps({"cpu": cpu, "wall": wall}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    host = GuardedHost(Path(tempfile.mkdtemp(prefix="bench-idle-")))
    try:
        host.start()
        start_jupyter(host)
        host.ssh(shlex.join([sys.executable, "-c", RUN_CELL, "x = 1"]))
        host.ssh("tmux new-session -d -s work && tmux new-window -t work && tmux new-window -t work")
        host.put(ec2.GUARD_BIN, ec2.guard_source(), mode="755")
        host.ssh("mkdir -p /var/lib/ec2-idle-stop/keep && echo window=60 > /etc/ec2-idle-stop.conf"
                 " && echo 0 > /var/lib/ec2-idle-stop/started")
        processes = host.ssh("ls -d /proc/[0-9]* | wc -l").stdout.strip()
        done = host.ssh(shlex.join(["/usr/bin/python3", "-c", MEASURE, str(runs), ec2.GUARD_BIN]))
        figures = json.loads(done.stdout)
        state = host.read("/var/lib/ec2-idle-stop/state").splitlines()
        print(f"instance: {processes} processes; the guard saw: {state[0].split()[0]}, {state[1]}")
        for what in ("cpu", "wall"):
            values = sorted(figures[what])
            print(f"{what}: median {values[len(values) // 2]:.1f} ms, worst {values[-1]:.1f} ms"
                  f" ({runs} checks)")
        # Between checks: the loop as cron starts it, seen from the instance.
        host.ssh(f"setsid {ec2.GUARD_BIN} run < /dev/null > /dev/null 2>&1 &")
        pid = wait_until(lambda: (host.read("/var/lib/ec2-idle-stop/pid") or "").strip(), what="the loop")
        wait_until(lambda: "sleep" in host.ssh(f"ps -o comm= --ppid {pid}", check=False).stdout,
                   what="its sleep")
        tree = host.ssh(f"ps -o pid=,comm= -p {pid} --ppid {pid}").stdout.split("\n")
        print("between checks:", "; ".join(" ".join(line.split()) for line in tree if line.strip()))
        stop_jupyter(host)
    finally:
        host.stop()
        shutil.rmtree(host.base)


if __name__ == "__main__":
    main()
