#!/usr/bin/env python3
"""What the prices cost `ec2 --instances`: a benchmark run by hand, not by pytest.

    python3 tests/bench_instances.py [--runs N] [--before REV]

Against moto (tests/moto_ec2.py) and the Price List stand-in
(tests/price_list.py), both on 127.0.0.1, through the real AWS CLI, with
four instances (a g5.xlarge on demand, one on Spot, a t3.large on demand
and a stopped one; so two Price List requests and one Spot price request),
it times, interleaved so that all see the same machine load, first with the
g5.xlarge alone (one price request), then with all four:
  - `ec2 --instances` of REV (default: 791b9ec, before prices), which makes
    one describe-instances call;
  - this checkout's, cold: its price file removed before each run, so it
    asks every price, all at the same time, after describe-instances;
  - this checkout's, remembered: the prices of a run before kept;
  - `aws ec2 describe-instances`, one run of the CLI.
It prints the medians, and the ratios to REV's. The goals: cold, at most one
CLI run longer than REV's; remembered, within 1.1 times.
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
from price_list import PriceList  # noqa: E402

from conftest import Moto  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(argv, env):
    began = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    return took, done.stdout


def measure(runs, old, env, base, what):
    """Time the four commands RUNS times each, interleaved; print the medians."""
    cold_env = {**env, "XDG_CACHE_HOME": str(base / "cold")}
    warm_env = {**env, "XDG_CACHE_HOME": str(base / "warm")}
    shutil.rmtree(base / "warm", ignore_errors=True)
    _, listed = timed([sys.executable, str(ROOT / "ec2"), "--instances"], warm_env)
    assert "$1.006/h" in listed, listed
    kinds = {"before": ([sys.executable, str(old), "--instances"], env),
             "cold": ([sys.executable, str(ROOT / "ec2"), "--instances"], cold_env),
             "remembered": ([sys.executable, str(ROOT / "ec2"), "--instances"], warm_env),
             "one CLI run": (["aws", "ec2", "describe-instances", "--output", "json"], env)}
    times = {kind: [] for kind in kinds}
    for _ in range(runs):
        for kind, (argv, run_env) in kinds.items():
            if kind == "cold":
                shutil.rmtree(base / "cold", ignore_errors=True)
            times[kind].append(timed(argv, run_env)[0])
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    print(f"{what}; {runs} runs each, interleaved, medians:")
    for kind, median in medians.items():
        print(f"  {kind:12} {median * 1000:7.0f} ms  {median / medians['before']:5.2f}x")
    print(f"  cold - before = {(medians['cold'] - medians['before']) * 1000:.0f} ms"
          f" = {(medians['cold'] - medians['before']) / medians['one CLI run']:.2f} CLI runs", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each command (default: 9)")
    parser.add_argument("--before", default="791b9ec", help="the ec2 to compare with (default: 791b9ec)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ec2-bench-"))
    moto = prices = None
    try:
        old = base / "ec2-before"
        old.write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{args.before}:ec2"], check=True,
                                      capture_output=True, text=True).stdout)
        prices = PriceList()
        moto = Moto(base, env={})
        moto.env.update(prices.env)  # the answering stand-in, not the suite's refusing one
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_", "XDG_"))}
        env.update(moto.env, XDG_CONFIG_HOME=str(base / "config"))
        moto.launch("a-g5", "g5.xlarge", image=moto.linux_image)
        measure(args.runs, old, env, base, "one running instance: one price request")
        moto.launch("b-spot", "g5.xlarge", image=moto.linux_image, spot=True)
        moto.launch("c-t3", "t3.large", image=moto.linux_image)
        off = moto.launch("d-off", "t3.large", image=moto.linux_image)
        moto.aws("ec2", "stop-instances", "--instance-ids", off)
        measure(args.runs, old, env, base, "three running, one stopped: three price requests")
    finally:
        if moto:
            moto.stop()  # and its refusing stand-in
        if prices:
            prices.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
