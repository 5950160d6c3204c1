"""Idle stop's guard, the real script, on an instance of the tests' own.

The instance is a GuardedHost: sshd in namespaces of its own, so the guard
sees only the instance's processes and terminals, and writes only into
overlays. Its tmux, Jupyter server and kernels are real; `shutdown` and
`nvidia-smi` are stand-ins that record their arguments. Time is compressed:
with EC2_IDLE_STOP_MINUTE=1 (a setting only tests use) a minute of the
window lasts a second, while shutdown's own +5 stays five real minutes.
"""

import re
import shlex
import subprocess
import sys
import time

import pytest

from conftest import STILL_DISKS, Terminal, ec2, stop_pid, wait_until

GUARD = ec2.GUARD_BIN
LIB = "/var/lib/ec2-idle-stop"


class Guard:
    """The guard installed on the instance, as arming installs it, but with no loop:
    each test runs its checks, so that none runs between them."""

    def __init__(self, host):
        self.host = host

    def arm(self, window, armed_ago=1000):
        """Window WINDOW minutes (seconds, here), armed ARMED_AGO seconds ago; nothing checked yet."""
        self.host.put(GUARD, ec2.guard_source(), mode="755")
        self.host.ssh(f"rm -rf {LIB} /var/log/ec2-idle-stop.log /var/tmp/*-calls /var/tmp/gpu"
                      f" && mkdir -p {LIB}/keep && chmod 1777 {LIB}/keep"
                      f" && echo window={window} > /etc/ec2-idle-stop.conf"
                      f" && echo $(($(date +%s) - {armed_ago})) > {LIB}/started")

    def run(self, *words, user=None, check=True):
        return self.host.ssh(shlex.join(["env", "EC2_IDLE_STOP_MINUTE=1", GUARD, *words]), user=user,
                             check=check)

    def check(self):
        self.run("check")
        return self.state()

    def state(self):
        """(state, why) as the last check left them."""
        lines = (self.host.read(f"{LIB}/state") or "\n\n").splitlines()
        return lines[0].split()[0], lines[1]

    def status(self):
        return self.run("status").stdout.strip()

    def shutdowns(self):
        return self.host.calls("shutdown")

    def log(self):
        text = self.host.read("/var/log/ec2-idle-stop.log") or ""
        return [line.split(" ", 2)[2] for line in text.splitlines()]


@pytest.fixture
def guard(guarded_host):
    g = Guard(guarded_host)
    yield g
    stop_instance_tmux(guarded_host)
    guarded_host.ssh(f"rm -rf {GUARD} {LIB} /etc/ec2-idle-stop.conf /var/log/ec2-idle-stop.log")


def stop_instance_tmux(host):
    """Stop the instance's tmux server by its pid (its panes go with it)."""
    done = host.ssh("tmux display-message -p '#{pid}'", check=False)
    pid = done.stdout.strip()
    if done.returncode == 0 and pid.isdigit():
        host.ssh(f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.1; done")


def age_terminals(host, seconds=1000):
    """Make every terminal of the instance look untouched for SECONDS: its atime, as input sets it."""
    host.ssh(f"for t in /dev/pts/[0-9]*; do [ -e \"$t\" ] &&"
             f" touch -a -d @$(($(date +%s) - {seconds})) \"$t\"; done; true")


def test_nothing_in_use_gives_5_minutes_notice_in_which_a_user_logs_in_and_keeps_it(guard, guarded_host):
    guarded_host.add_user("ubuntu", sudo=True)
    guard.arm(3)
    assert guard.check()[0] == "stopping"
    assert guard.check()[0] == "stopping" and guard.shutdowns() == []  # the guard counts the notice itself
    assert guard.status().startswith("stopping at ")
    # Nothing blocks a login (shutdown +5 would have written /run/nologin): the default user
    # logs in, and keeps the instance as the notice says.
    assert guarded_host.ssh("ls /run/nologin /etc/nologin 2>&1; true").stdout.count("No such file") == 2
    said = guard.run("keep", "2h", user="ubuntu").stdout
    assert said.startswith("in use until ")
    state, why = guard.check()
    assert (state, why.split(" until ")[0]) == ("in-use", "kept")
    assert guard.log()[-1] == f"in use: {why}: stop cancelled" and guard.shutdowns() == []


def test_the_notice_run_out_with_nothing_in_use_powers_off_once_a_check_comes(guard):
    guard.arm(3)
    assert guard.check()[0] == "stopping"
    time.sleep(5)  # the notice: 5 minutes, here seconds
    guard.check()
    assert guard.shutdowns() == [["-P", "now"]]  # power off: never halt, which leaves it billing
    log = [line.split(":")[0] for line in guard.log()]
    assert re.fullmatch(r"idle 100\d of 3 min", log[0]) and log[1:] == ["unused for 3 min"]


def test_asking_the_guard_during_the_notice_is_not_using_the_instance(guard, guarded_host):
    guard.arm(3)
    assert guard.check()[0] == "stopping"
    ask = ["ssh", "-F", str(guarded_host.ssh_config), "instance"]
    for _ in range(3):  # status queries, as ec2 --idle-stop asks
        said = subprocess.run(ask + ec2.remote_sh(ec2.GUARD_ASK, "status"), capture_output=True, text=True)
        assert said.stdout.startswith("stopping at ")
    # A query caught in the act: its guard stops itself as it starts (a wrapper run as its
    # Python), a check runs, then it goes on. And a connection that does anything else.
    guarded_host.put("/usr/local/sbin/stopped-python", '#!/bin/sh\nkill -STOP $$\nexec python3 "$@"\n',
                     mode="755")
    query = subprocess.Popen(ask + ["env", "EC2_PYTHON=/usr/local/sbin/stopped-python",
                                    *ec2.remote_sh(ec2.GUARD_ASK, "status")], stdout=subprocess.PIPE)
    try:
        stopped = wait_until(lambda: guarded_host.ssh("ps -ww -o pid=,stat=,args= -e | awk '$2 ~ /^T/ &&"
                                                      " /ec2-idle-stop status$/ { print $1 }'").stdout,
                             what="the query's guard, stopped")
        assert guard.check() == guard.state() and guard.state()[0] == "stopping"
        guarded_host.ssh(f"kill -CONT {stopped.split()[0]}")
        assert query.communicate(timeout=30)[0].startswith(b"stopping at ")
    finally:
        stop_pid(query.pid)
    held = subprocess.Popen(ask + ["sleep 5"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)  # connected, and its command runs
        state, why = guard.check()
        assert state == "in-use" and why.startswith("ssh connection without a terminal"), why
    finally:
        stop_pid(held.pid)
    assert sum("cancelled" in line for line in guard.log()) == 1  # the sleep's, alone


def test_typing_in_tmux_keeps_it_and_typing_in_the_notice_period_cancels_the_stop(guard, guarded_host,
                                                                                   tmp_path):
    host = guarded_host
    guard.arm(20)  # more than the 8 s in which Linux keeps a terminal's atime as it was
    host.ssh("tmux new-session -d -s work")
    # A person attached to it over ssh, in a terminal of their own.
    term = Terminal(tmp_path, {"PATH": "/usr/bin:/bin", "HOME": "/root", "TERM": "screen-256color",
                               "LANG": "C.UTF-8"})
    try:
        term.type(shlex.join(["ssh", "-t", "-F", str(host.ssh_config), "instance",
                              "tmux", "attach", "-t", "work"]))
        wait_until(lambda: host.ssh("tmux list-clients", check=False).stdout.strip(), what="a tmux client")
        term.wait_for("[work]")  # drawn: done reading its terminal at start
        time.sleep(0.2)
        age_terminals(host)
        assert guard.check()[0] == "stopping"  # tmux and a client, but nobody typed for the window
        wait_until(lambda: "ec2 idle stop: nothing has used this instance for 20 min" in term.screen(),
                   what="the notice in the tmux session")
        term.type("echo still here")
        wait_until(lambda: "still here" in term.screen(), what="the typing on the instance")
        state, why = guard.check()
        assert (state, why.split(" (")[0]) == ("idle", "input on pts/1")  # unused for 0 of 20 min
        assert guard.shutdowns() == []
        assert guard.log()[-1] == f"in use: {why}: stop cancelled"
        assert re.fullmatch(r"idle [012] of 20 min \(last: input on pts/1 \(root\)\);"
                            r" idle stop after 20 min unused", guard.status())
        # And input within the window keeps it, check after check.
        assert guard.check()[0] == "idle"
        assert guard.shutdowns() == []
    finally:
        term.close()


def start_jupyter(host, ip=None):
    """A real Jupyter server on the instance, in tmux as a user starts it (on IP, if given);
    returns its token."""
    host.ssh(shlex.join(["tmux", "new-session", "-d", "-s", "lab", sys.executable, "-m", "jupyter_server",
                         "--no-browser", "--ServerApp.port=8888", *([f"--ServerApp.ip={ip}"] if ip else [])]))
    found = wait_until(lambda: host.ssh("cat ~/.local/share/jupyter/runtime/jpserver-*.json",
                                        check=False).stdout, 60, what="the Jupyter server's file")
    import json

    return json.loads(found)["token"]


# Starts a kernel on the instance's server, and has it run the cell argv[1]
# without waiting for it: no browser, nothing connected.
RUN_CELL = """
import glob, json, os, sys, time, urllib.request
from jupyter_client import BlockingKernelClient
runtime = os.path.expanduser("~/.local/share/jupyter/runtime")
info = json.load(open(glob.glob(runtime + "/jpserver-*.json")[0]))
ask = urllib.request.Request(info["url"].rstrip("/") + "/api/kernels", data=b"{}",
                             headers={"Authorization": "token " + info["token"]})
kernel = json.load(urllib.request.urlopen(ask))
client = BlockingKernelClient(connection_file=runtime + "/kernel-%s.json" % kernel["id"])
client.load_connection_file()
client.start_channels()
client.wait_for_ready(timeout=60)
client.execute(sys.argv[1])
time.sleep(1)
client.stop_channels()
"""


def swept_check(guard, host):
    """Run a check while the instance's every argv is read, again and again; return them all."""
    sweep = ("env EC2_IDLE_STOP_MINUTE=1 " + GUARD + " check & c=$!; : > /tmp/sweep;"
             " while kill -0 $c 2>/dev/null; do for f in /proc/[0-9]*/cmdline; do"
             " tr '\\0' ' ' < $f >> /tmp/sweep 2>/dev/null; echo >> /tmp/sweep; done; done; cat /tmp/sweep")
    return host.ssh(sweep).stdout


@pytest.mark.parametrize("where", ["localhost", "the instance's own address"])
def test_a_kernel_busy_with_a_silent_cell_keeps_it_and_its_token_is_on_no_argv(guard, guarded_host, where):
    host = guarded_host
    try:
        token = start_jupyter(host, ip=None if where == "localhost" else host.address)
        guard.arm(3)
        host.ssh(shlex.join([sys.executable, "-c", RUN_CELL, "import time; time.sleep(9)"]))
        time.sleep(4)  # longer than the window: last_activity alone would say idle
        argvs = swept_check(guard, host)
        state, why = guard.state()
        assert (state, why.split(" (")[0]) == ("in-use", "kernel python3 busy"), why
        assert argvs.count(GUARD) > 3 and token not in argvs
        kept = host.read("/var/log/ec2-idle-stop.log") + host.read(f"{LIB}/state")
        assert token not in kept + guard.status()
        if where == "localhost":  # the same for both: once is enough
            # When the cell ends, the kernel's last activity counts for a window, then it stops.
            assert wait_until(lambda: guard.check()[0] == "stopping", 30, what="the stop once the cell ended")
            assert "kernel python3 active" in guard.log()[-2]
    finally:
        stop_jupyter(host)


def stop_jupyter(host):
    """Stop the instance's Jupyter servers by their pids (their kernels go with them)."""
    # Ended is gone or a zombie: tmux 3.3a can be slow to reap its pane's process.
    host.ssh("for f in ~/.local/share/jupyter/runtime/jpserver-*.json; do [ -e \"$f\" ] || continue;"
             " p=${f##*-}; p=${p%.json}; kill $p;"
             " while s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null) && [ \"$s\" != Z ]; do sleep 0.1; done;"
             " done")


def test_a_busy_gpu_keeps_it_and_an_idle_one_does_not(guard, guarded_host):
    guard.arm(3)
    guarded_host.put("/var/tmp/gpu", "0, 3\n1, 97\n")
    assert guard.check() == ("in-use", "GPU 1 at 97%")
    assert guard.status() == "in use: GPU 1 at 97%; idle stop after 3 min unused"
    guarded_host.put("/var/tmp/gpu", "0, 9\n1, 0\n")  # below the 10% that counts
    time.sleep(4)
    assert guard.check()[0] == "stopping"


def test_a_process_on_a_cpu_keeps_it(guard, guarded_host):
    guard.arm(3)
    pid = guarded_host.ssh("nohup sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        guard.check()  # the first check samples; the next one measures
        time.sleep(1)
        state, why = guard.check()
        assert state == "in-use" and why.startswith("CPU at ") and f"(most: sh pid {pid})" in why
    finally:
        guarded_host.ssh(f"kill {pid}")
    time.sleep(4)
    guard.check()
    assert guard.check()[0] == "stopping"


def test_a_keep_by_any_user_keeps_it_until_it_ends(guard, guarded_host):
    guarded_host.add_user("alice", sudo=False)
    guard.arm(3)
    said = guard.run("keep", "6m", user="alice").stdout  # six seconds, here
    assert said.startswith("in use until ")
    state, why = guard.check()
    assert state == "in-use" and why.startswith("kept until ") and why.endswith(" by alice")
    time.sleep(4)
    assert guard.check()[0] == "in-use"
    assert wait_until(lambda: guard.check()[0] == "stopping", 15, what="the stop after the keep")
    assert guard.run("keep", "often", check=False).returncode == 2


def test_the_first_window_after_boot_keeps_it(guard, guarded_host):
    guard.arm(4)
    # The instance booted a second ago, as /proc/stat's btime says.
    guarded_host.ssh("sed \"s/^btime .*/btime $(($(date +%s) - 1))/\" /proc/stat > /var/tmp/stat"
                     " && mount --bind /var/tmp/stat /proc/stat")
    try:
        state, why = guard.check()
        assert state == "idle" and why.startswith("booted at ")
        assert re.match(r"idle [123] of 4 min \(last: booted at ", guard.status())
        assert wait_until(lambda: guard.check()[0] == "stopping", 15, what="the stop a window after boot")
    finally:
        guarded_host.ssh("umount /proc/stat")


def test_an_ssh_connection_without_a_terminal_counts_until_its_backstop(guard, guarded_host):
    guard.arm(3)  # so the backstop is 4 windows: 12 s
    opened = time.monotonic()
    vscode = subprocess.Popen(["ssh", "-F", str(guarded_host.ssh_config), "-N", "instance"])
    try:
        wait_until(lambda: "ssh connection" in guard.check()[1], what="the connection counted")
        assert guard.state()[0] == "in-use"
        assert guard.state()[1].startswith("ssh connection without a terminal (root, open since ")
        wait_until(lambda: guard.check()[0] == "stopping", 30, what="the stop past the backstop")
        # Held past the window, to its backstop (the guard counts whole seconds).
        assert time.monotonic() - opened > 12
        assert vscode.poll() is None  # still open
    finally:
        stop_pid(vscode.pid)


@pytest.mark.parametrize("cell", ["busy", "idle"])
def test_a_vscode_style_kernel_keeps_it_while_a_cell_runs_and_not_when_idle(guard, guarded_host, cell):
    from test_guard import KERNEL

    guard.arm(3)
    # On the instance, as VS Code's Jupyter extension starts one: ipykernel, a connection file, no
    # server; left running on its own, as the connection that started it counts by itself.
    guarded_host.ssh(shlex.join(["setsid", sys.executable, "-c", KERNEL, cell]) + " > /var/tmp/kernel 2>&1"
                     " < /dev/null &")
    kernel = wait_until(lambda: (guarded_host.read("/var/tmp/kernel") or "").strip(), 60, what="the kernel")
    try:
        state, why = guard.check()
        if cell == "busy":
            assert (state, why) == ("in-use", f"kernel busy (ipykernel pid {kernel}, root)")
        else:
            assert state == "stopping", why
    finally:
        guarded_host.ssh(f"kill $(ps -o ppid= -p {kernel}) {kernel}; rm /var/tmp/kernel", check=False)


# Receives whatever comes to port 9000 of the instance, and throws it away.
SINK = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("", 9000)); s.listen()
while True:
    c, _ = s.accept()
    while c.recv(65536):
        pass
"""


def send(address, rate, seconds):
    """Send RATE bytes a second to ADDRESS:9000 (the instance) for SECONDS, in tenths."""
    import socket

    with socket.create_connection((address, 9000), timeout=5) as sock:
        for _ in range(int(seconds * 10)):
            sock.sendall(b"x" * (rate // 10))
            time.sleep(0.1)


@pytest.mark.parametrize("rate, counts", [(1_000_000, True), (2_000, False)])
def test_a_1_mb_a_second_copy_keeps_it_and_background_chatter_does_not(guard, guarded_host, rate, counts):
    sink = guarded_host.spawn("python3", "-c", SINK)
    try:
        wait_until(lambda: guarded_host.ssh("ss -ltn | grep -q ':9000 '", check=False).returncode == 0,
                   what="the sink")
        guard.arm(3)
        guard.check()  # the first sample
        send(guarded_host.address, rate, 2)
        state, why = guard.check()
        if counts:
            assert state == "in-use" and re.fullmatch(r"network at \d+ kB/s", why), why
            assert 500 < int(why.split()[2]) < 1500  # about 1000 kB/s, as sent
        else:
            assert state == "stopping", why
    finally:
        stop_pid(sink.pid)


WRITER = """
import os, sys, time
with open("/var/tmp/disk-job", "wb") as f:
    for _ in range(30):  # 400 kB each tenth of a second: 4 MB/s, to the disk
        f.write(os.urandom(400_000)); f.flush(); os.fsync(f.fileno()); time.sleep(0.1)
"""


def test_a_disk_bound_job_keeps_it(guard, guarded_host):
    guard.arm(3)
    guarded_host.ssh("umount /proc/diskstats")  # the real counters, this machine's disks
    try:
        guard.check()
        guarded_host.ssh(shlex.join(["python3", "-c", WRITER]))
        state, why = guard.check()
        assert state == "in-use" and re.fullmatch(r"disk at \d+ kB/s", why), why
    finally:
        guarded_host.ssh(f"rm -f /var/tmp/disk-job; {STILL_DISKS}")
