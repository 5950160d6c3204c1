#!/usr/bin/env python3
"""From a stopped instance to a command run on it: a benchmark run by hand.

    sudo .venv/bin/python tests/bench_start.py [--runs N] [--pending S] [--boot S]

The instance is the test suite's (sshd in a network namespace), held by moto
(tests/moto_ec2.py), whose start here takes time as a real one's does: the
instance is pending for --pending seconds (default 12), then running, and
its sshd (a second one, on port 2222) starts --boot seconds later (default
20), as an instance's does once it has booted. Interleaved, N times each
(default 3), from the stopped instance to `tmux ls` run on it:
  - ec2: `ec2 -H gpu --list`, with auto_start = yes;
  - the script users write today: `aws ec2 start-instances && aws ec2 wait
    instance-running && ssh -o ConnectionAttempts=90 ... tmux ls`, the
    address asked for in between, as a script must.
It prints the medians of each, of ec2's time past the moment sshd answered
(the goal: 2 s at most), and the ratio of ec2's time to the script's.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True

from conftest import EC2, Host, Moto, ec2, stop_pid  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs each way (default: 3)")
    parser.add_argument("--pending", type=float, default=12, help="seconds pending (default: 12)")
    parser.add_argument("--boot", type=float, default=20, help="seconds from running to sshd (default: 20)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_start.py makes a network namespace: run it as root")
    base = Path(tempfile.mkdtemp(prefix="ec2-bench-"))
    host, moto = Host(base), None
    host.start()
    try:
        moto = Moto(base)
        instance_id = moto.launch("bench-box")
        moto.set_state(instance_id, f"public-ip {host.address}")
        moto.set_state(instance_id, f"boot {args.pending}")
        sshd_config = base / "sshd_config_2222"
        sshd_config.write_text((base / "sshd_config").read_text().replace(f"{host.address}:22",
                                                                          f"{host.address}:2222"))
        ssh_config = base / "ssh_config"
        ssh_config.write_text(ssh_config.read_text().replace("Host instance", f"Host instance {host.address}")
                              + "  Port 2222\n")
        known = (base / "known_hosts").read_text()  # ec2 keeps the key under the instance id
        (base / "known_hosts").write_text(known + known.replace(host.address, instance_id, 1))
        (base / "ec2.ini").write_text(f"[gpu]\ninstance = {instance_id}\nauto_start = yes\n"
                                      f"address = public-ip\nssh_options = -F {ssh_config}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
        env.update(moto.env, EC2_CONFIG=str(base / "ec2.ini"), XDG_CACHE_HOME=str(base / "cache"))
        ways = {
            "ec2": [sys.executable, str(EC2), "-H", "gpu", "--list"],
            "script": ["sh", "-c", f"aws ec2 start-instances --instance-ids {instance_id} >/dev/null &&"
                       f" aws ec2 wait instance-running --instance-ids {instance_id} &&"
                       f" address=$(aws ec2 describe-instances --instance-ids {instance_id} --query"
                       " 'Reservations[0].Instances[0].PublicIpAddress' --output text) &&"
                       f" ssh -F {ssh_config} -o ConnectionAttempts=90 \"$address\" tmux ls"],
        }
        times = {way: [] for way in ways}
        past = []
        for _ in range(args.runs):
            for way, argv in ways.items():
                moto.aws("ec2", "stop-instances", "--instance-ids", instance_id)
                moto.set_state(instance_id, "stopped")
                sshd, up = [], []

                def boot(sshd=sshd, up=up):  # sshd once the instance has run for --boot seconds
                    while moto.describe(instance_id)["State"]["Name"] != "running":
                        time.sleep(0.2)
                    time.sleep(args.boot)
                    sshd.append(host.spawn(shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f",
                                           str(sshd_config), stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
                    up.append(time.monotonic())

                began = time.monotonic()
                watcher = threading.Thread(target=boot, daemon=True)
                watcher.start()
                done = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
                ended = time.monotonic()
                watcher.join(5)
                for proc in sshd:
                    stop_pid(proc.pid)
                said = done.stdout + done.stderr  # tmux ls with no server, or ec2 --list's "no sessions"
                if done.returncode not in (0, 1) or not any(w in said for w in
                                                            (*ec2.TMUX_NO_SERVER, "no sessions")):
                    raise SystemExit(f"{way} failed ({done.returncode}): {done.stdout}{done.stderr}")
                times[way].append(ended - began)
                if way == "ec2":
                    past.append(ended - up[0])
                print(f"{way}: {ended - began:.1f} s", flush=True)
        ec2_median, script_median = statistics.median(times["ec2"]), statistics.median(times["script"])
        print(json.dumps({"pending": args.pending, "boot": args.boot, "runs": args.runs}))
        print(f"ec2 --list, auto_start = yes: median {ec2_median:.1f} s;"
              f" past sshd's first answer: median {statistics.median(past):.2f} s (goal: <= 2 s)")
        print(f"start && wait instance-running && ssh: median {script_median:.1f} s")
        print(f"ratio ec2 / script: {ec2_median / script_median:.2f} (goal: <= 0.5)")
    finally:
        if moto:
            moto.stop()
        host.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
