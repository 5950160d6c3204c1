#!/usr/bin/env python3
"""What one check of idle stop's guard costs on the instance: a benchmark run by hand.

    sudo .venv/bin/python tests/bench_idle.py [--runs N] [--processes P]

It starts the test suite's guarded instance (tests/conftest.py's
GuardedHost: sshd in namespaces of its own), with what a working instance
has: a real Jupyter server with a kernel, a tmux session with three windows
and an attached client, and sleeping processes up to P in all (default
200). It installs the guard (ec2 itself) there and, as the guard's loop
does, runs N checks in one long-lived Python process, a second apart,
measuring for each the CPU time (user + system, of the check and all it
ran, from getrusage) and the wall time: the check pays no Python start,
as in the loop. Nothing is in use, so every check asks Jupyter too (the
most a check does). It prints medians and the worst run, then starts the
real loop (`ec2-idle-stop run`) and reports its resident memory. The goals:
under 50 ms of CPU a check, under 20 MB resident. Last, what an idle
instance sends and writes, against the guard's thresholds: for --quiet
seconds (default 60), with an ssh session attached to tmux that sends its
keepalives every 15 s and nothing else running, the network counters
(not loopback) and the disks' counters (this machine's real ones) the
guard reads, as bytes a second.
"""

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_idle_e2e import RUN_CELL, start_jupyter, stop_jupyter  # noqa: E402

from conftest import GuardedHost, ec2, wait_until  # noqa: E402

# Run on the instance by its python3: the guard's own functions, as the loop calls them.
MEASURE = """
import json, resource, sys, time
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
loader = SourceFileLoader("ec2", sys.argv[2])
ec2 = sys.modules["ec2"] = module_from_spec(spec_from_loader("ec2", loader))
loader.exec_module(ec2)
machine = ec2.Machine(minute=1)  # so that each check, a second after the last, samples CPU and I/O
cpu, wall, seen = [], [], None
for _ in range(int(sys.argv[1])):
    time.sleep(1)
    before = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    began = time.perf_counter()
    seen = ec2.check(machine, time.time())
    wall.append((time.perf_counter() - began) * 1000)
    after = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu.append(sum(a.ru_utime - b.ru_utime + a.ru_stime - b.ru_stime for a, b in zip(after, before)) * 1000)
print(json.dumps({"cpu": cpu, "wall": wall, "seen": list(seen)}))
"""


def idle_rates(host, seconds):
    """Print the bytes a second an idle instance moves through its network and to the disks."""
    import subprocess

    host.ssh("umount /proc/diskstats")  # this machine's real disks, for once
    session = subprocess.Popen(["ssh", "-tt", "-F", str(host.ssh_config), "-o", "ServerAliveInterval=15",
                                "instance", "tmux", "attach", "-t", "work"], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)
        read = ("python3 -c 'import sys; sys.path[:0] = [\"/usr/local/bin\"]; from importlib.machinery import"
                " SourceFileLoader as L; e = L(\"ec2\", \"/usr/local/bin/ec2-idle-stop\").load_module();"
                " print(*e.io_counters(e.Machine()))'")
        before = [int(n) for n in host.ssh(read).stdout.split()]
        began = time.monotonic()
        time.sleep(seconds)
        after = [int(n) for n in host.ssh(read).stdout.split()]
        took = time.monotonic() - began
        net, disk = ((a - b) / took for a, b in zip(after, before))
        print(f"idle, {seconds} s, an ssh session with keepalives attached to tmux: network {net:.0f} B/s"
              f" (threshold {ec2.NET_BUSY}), disks {disk:.0f} B/s (threshold {ec2.DISK_BUSY})")
    finally:
        session.kill()
        session.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--processes", type=int, default=200)
    parser.add_argument("--quiet", type=int, default=60)
    options = parser.parse_args()
    host = GuardedHost(Path(tempfile.mkdtemp(prefix="bench-idle-")))
    try:
        host.start()
        start_jupyter(host)
        host.ssh(shlex.join([sys.executable, "-c", RUN_CELL, "x = 1"]))
        host.ssh("tmux new-session -d -s work && tmux new-window -t work && tmux new-window -t work")
        have = int(host.ssh("ls -d /proc/[0-9]* | wc -l").stdout)
        host.ssh(f"for i in $(seq {max(0, options.processes - have)}); do"
                 " setsid sleep 100000 < /dev/null > /dev/null 2>&1 & done")
        host.put(ec2.GUARD_BIN, ec2.guard_source(), mode="755")
        host.ssh("mkdir -p /var/lib/ec2-idle-stop/keep && echo window=60 > /etc/ec2-idle-stop.conf"
                 " && echo 0 > /var/lib/ec2-idle-stop/started")
        processes = host.ssh("ls -d /proc/[0-9]* | wc -l").stdout.strip()
        done = host.ssh(shlex.join(["/usr/bin/python3", "-c", MEASURE, str(options.runs), ec2.GUARD_BIN]),
                        timeout=options.runs * 10 + 60)
        figures = json.loads(done.stdout)
        print(f"instance: {processes} processes; the guard saw: {figures['seen'][0]}, {figures['seen'][3]}")
        for what in ("cpu", "wall"):
            values = sorted(figures[what])
            print(f"{what}: median {values[len(values) // 2]:.1f} ms, worst {values[-1]:.1f} ms"
                  f" ({options.runs} checks, in one process)")
        # The loop as install starts it: through the launcher, from bytecode compiled first (a
        # status does that here, as install does), on the instance's python3; its memory after some checks.
        host.ssh(f"EC2_PYTHON=/usr/bin/python3 {ec2.GUARD_BIN} status")
        host.ssh(f"EC2_IDLE_STOP_MINUTE=1 EC2_PYTHON=/usr/bin/python3 setsid {ec2.GUARD_BIN} run"
                 " < /dev/null > /dev/null 2>&1 &")
        pid = wait_until(lambda: (host.read("/var/lib/ec2-idle-stop/pid") or "").strip(), what="the loop")
        time.sleep(10)
        rss = host.ssh(f"grep VmRSS /proc/{pid}/status").stdout.split()[1]
        print(f"the loop ({ec2.GUARD_BIN} run on /usr/bin/python3), after 10 checks: {int(rss) / 1024:.1f} MB"
              " resident")
        host.ssh(f"kill {pid}")
        stop_jupyter(host)
        idle_rates(host, options.quiet)
    finally:
        host.stop()
        shutil.rmtree(host.base)


if __name__ == "__main__":
    main()
