#!/usr/bin/env python3
"""scp through `ec2 --proxy` against plain scp: a benchmark run by hand.

    sudo .venv/bin/python tests/bench_proxy.py [--runs N] [--megabytes M]

It starts the test suite's instance (sshd in a network namespace), makes a
file of M MB (default 200) of random bytes, and copies it there with scp,
interleaved, N times each (default 7), three ways:
  - plain: `scp FILE instance:`, ssh connecting by itself;
  - handed over: through `ProxyCommand ec2 --proxy box:%p` with
    `ProxyUseFdpass yes`, as `ec2 --ssh-config` writes for connect = direct:
    ec2 connects, hands the socket to ssh and exits;
  - relayed: the same without ProxyUseFdpass, so ec2 copies every byte.
It prints the median time and throughput of each, and the ratio of each
throughput to plain's; the goal for the handed-over copy is >= 0.95. During
one handed-over copy it also checks that no ec2 process is alive.
The profile is `host =`, so no AWS call is in the times. ec2 is the command
`pip install` makes, in a fresh venv (as bench_startup.py does), or with
--script the checkout's script, which Python compiles at every start.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True

from conftest import EC2, Host  # noqa: E402


def ec2_processes(config):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(config).encode() in f.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            pass
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="copies each way (default: 7)")
    parser.add_argument("--megabytes", type=int, default=200, help="size of the file (default: 200)")
    parser.add_argument("--script", action="store_true", help="the checkout's script (default: installed)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_proxy.py makes a network namespace: run it as root")
    base = Path(tempfile.mkdtemp(prefix="ec2-bench-"))
    host = Host(base)
    host.start()
    try:
        payload = base / "payload"
        with open(payload, "wb") as f:
            for _ in range(args.megabytes):
                f.write(os.urandom(1 << 20))
        config = base / "ec2.ini"
        config.write_text(f"[box]\nhost = {host.address}\n")
        if args.script:
            ec2 = f"{sys.executable} {EC2}"
        else:
            subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
            subprocess.run([str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", str(EC2.parent)], check=True)
            ec2 = str(base / "venv" / "bin" / "ec2")
        proxy = f"ProxyCommand {ec2} --config {config} --proxy box:%p"
        ssh_configs = {"plain": host.ssh_config}
        for way, extra in (("handed over", "  ProxyUseFdpass yes\n"), ("relayed", "")):
            path = base / f"ssh_config-{way.replace(' ', '-')}"
            # First value wins: the proxy lines come before the sandbox's own block.
            path.write_text(f"Host instance\n  {proxy}\n{extra}" + host.ssh_config.read_text())
            ssh_configs[way] = path
        times = {way: [] for way in ssh_configs}
        target = base / "copied"
        for run in range(args.runs):
            for way, ssh_config in ssh_configs.items():
                started = time.perf_counter()
                scp = subprocess.Popen(["scp", "-q", "-F", str(ssh_config), str(payload),
                                        f"instance:{target}"], stdin=subprocess.DEVNULL)
                if way == "handed over" and run == 0:
                    while scp.poll() is None and not (target.exists() and target.stat().st_size):
                        time.sleep(0.005)
                    alive = ec2_processes(config)
                    print(f"ec2 processes alive during a handed-over copy: {len(alive)}")
                if scp.wait():
                    raise SystemExit(f"scp {way} failed")
                times[way].append(time.perf_counter() - started)
                if target.stat().st_size != payload.stat().st_size:
                    raise SystemExit(f"scp {way} copied {target.stat().st_size} bytes")
                target.unlink()
        plain = statistics.median(times["plain"])
        print(f"{args.megabytes} MB, {args.runs} copies each way, interleaved; medians:")
        for way, taken in times.items():
            median = statistics.median(taken)
            print(f"  {way:12} {median * 1000:7.0f} ms  {args.megabytes / median:6.0f} MB/s"
                  f"  throughput / plain {plain / median:.3f}")
    finally:
        host.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
