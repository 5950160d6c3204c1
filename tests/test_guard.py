"""Idle stop's guard, the real one, fast: in a machine of namespaces made for each test.

Each test runs the guard (ec2 itself, installed as arming installs it) with
`unshare` in a mount, PID and network namespace of its own: /etc, /var,
/usr/local and the home directory are overlays whose writes land in the
test's directory, and /tmp, /run, the terminals (a devpts) and the network
(loopback alone) are its own, so the guard sees only what the test made;
/proc/diskstats is held still, as this machine's other disks are not the
instance's. shutdown, systemctl and nvidia-smi are stand-ins on its PATH; a
Jupyter server is a stand-in that answers /api/kernels as jupyter_server
does, run by an unprivileged user; tmux, a kernel and a terminal are real.
Time is compressed: with EC2_IDLE_STOP_MINUTE=1 a minute lasts a second.
test_idle_e2e.py runs the same guard on an instance over ssh.
"""

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from conftest import NVIDIA_SMI, PRIVATE_MACHINE, RECORDING, STILL_DISKS, ec2, private_machine, skip_or_fail

GUARD = ec2.GUARD_BIN
LIB = "/var/lib/ec2-idle-stop"
# An unprivileged user's Python: this one's lies under root's home, which no other user may enter.
USER_PYTHON = "/usr/bin/python3"

# After PRIVATE_MACHINE: loopback up, the disks' counters held still, the
# guard from $1, the stand-ins from the directory $3, a window of $2 minutes
# armed 1000 s ago, and the user alice (as_alice runs a command as her); then
# the test's own lines, with $g the guard and state() printing its state and why.
SETUP = f"""
ip link set lo up
{STILL_DISKS.strip()}
cp "$1" {GUARD}; chmod 755 {GUARD}
mkdir -p /usr/local/sbin; cp "$3"/* /usr/local/sbin; chmod 755 /usr/local/sbin/*
mkdir -p {LIB}/keep; chmod 1777 {LIB}/keep
echo window=$2 > /etc/ec2-idle-stop.conf; echo $(($(date +%s) - 1000)) > {LIB}/started
useradd -m alice
# Makes every terminal look untouched for 1000 s and checks, until the check gives
# notice (at most 8 times): a client still drawing may read its terminal after.
idle_check() {{
    for i in 1 2 3 4 5 6 7 8; do
        touch -a -d @$(($(date +%s) - 1000)) /dev/pts/[0-9]* 2>/dev/null; $g check
        [ "$(sed -n 's/ .*//p;q' {LIB}/state)" = stopping ] && return; sleep 0.5
    done
}}
# Waits (for at most 10 s) until the sh test $1 passes.
wait_for() {{ n=0; until eval "$1" || [ $n = 200 ]; do sleep 0.05; n=$((n + 1)); done; }}
export EC2_IDLE_STOP_MINUTE=1; g={GUARD}
state() {{ sed -n 1s/\\ .*//p {LIB}/state; sed -n 2p {LIB}/state; }}
set +e
"""


@pytest.fixture
def machine(tmp_path):
    """run(WINDOW, LINES): LINES run in a machine of their own after SETUP; their stdout."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        skip_or_fail("the guard's tests make namespaces: they need root, unshare and setpriv (util-linux)")
    runs = []

    def run(window, lines, env=None, timeout=60, programs=None):
        base = tmp_path / f"machine{len(runs)}"  # each run a machine of its own
        runs.append(base)
        standins = base / "standins"
        standins.mkdir(parents=True)
        # Named as arming names it: run by that name, ec2 is the guard.
        (base / "ec2-idle-stop.sent").write_text(ec2.guard_source())
        (base / "ec2-idle-stop.sent").chmod(0o755)
        (standins / "nvidia-smi").write_text(NVIDIA_SMI)
        for name in ("shutdown", "systemctl"):
            (standins / name).write_text(RECORDING.replace("{name}", name))
        (standins / "as_alice").write_text("#!/bin/sh\n"
                                           'exec setpriv --reuid alice --regid alice --clear-groups "$@"\n')
        for name, text in (programs or {}).items():  # where alice may run them too
            (standins / name).write_text(text)
        done = subprocess.run(
            ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child", "--mount-proc", "sh", "-c",
             PRIVATE_MACHINE + SETUP + lines, "sh", *private_machine(base, base / "home"),
             str(base / "ec2-idle-stop.sent"), str(window), str(standins)],
            # HOME as the passwd file has it (its overlay takes the writes). The guard runs on this
            # Python (or EC2_PYTHON's), never a shim that costs more CPU than the checks measure.
            capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "HOME": pwd.getpwuid(os.getuid()).pw_dir,
                 "EC2_PYTHON": os.environ.get("EC2_PYTHON", sys.executable), **(env or {})})
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def calls(text):
    """The calls of a stand-in, as its -calls file has them."""
    return [call.split("\x1f")[:-1] for call in text.split("\x1e")[:-1]]


def test_nothing_in_use_for_the_window_gives_5_minutes_notice_then_powers_off(machine):
    out = machine(3, "$g check; state; cat /var/tmp/shutdown-calls 2>/dev/null; echo ---; $g check;"
                     " $g status; sleep 5; $g check; cat /var/tmp/shutdown-calls; echo ---;"
                     " cat /var/log/ec2-idle-stop.log")
    before, after, log = out.split("---\n")
    lines = before.splitlines()
    assert lines[0] == "stopping" and lines[1].startswith("armed at ")
    assert len(lines) == 2  # no shutdown yet: the guard counts the notice itself, logins stay open
    status, shutdowns = after.split("\n", 1)
    assert re.fullmatch(r"stopping at \d\d:\d\d: unused for 3 min; ec2 --keep 2h keeps it", status)
    assert calls(shutdowns) == [["-P", "now"]]  # power off, never a halt, which keeps an instance billing
    log = [line[20:] for line in log.splitlines()]
    assert len(log) == 2 and re.fullmatch(r"idle 100\d of 3 min: stopping at \d\d:\d\d", log[0])
    assert log[1] == "unused for 3 min: powering off"


def test_a_power_off_that_fails_is_said_and_tried_again_each_minute_by_the_loop(machine):
    out = machine(3, "for p in shutdown systemctl; do echo 'exit 1' >> /usr/local/sbin/$p; done;"
                     " $g run & r=$!; sleep 9; kill $r;"
                     " tr '\\036' '\\n' < /var/tmp/shutdown-calls | grep -c now;"
                     " grep -c 'the power-off failed' /var/log/ec2-idle-stop.log")
    tried, said = (int(n) for n in out.split())
    # The notice (5 s here), then about once a second (the minute, here) for the rest: never in a spin.
    assert 2 <= tried <= 6 and said == tried


def test_a_check_that_fails_is_said_and_the_loop_goes_on(machine):
    out = machine(3, f"mkdir {LIB}/state.new; $g run & r=$!; sleep 3; kill -0 $r && echo running; kill $r;"
                     " grep -c 'the check failed: IsADirectoryError' /var/log/ec2-idle-stop.log")
    running, failed = out.split()
    assert running == "running" and 2 <= int(failed) <= 4  # once a second (the minute, here)


def test_a_gpu_at_10_percent_is_in_use_and_at_9_is_not(machine):
    out = machine(3, "echo '0, 9' > /var/tmp/gpu; $g check; state;"
                     " echo '0, 2\n1, 10' > /var/tmp/gpu; rm /var/lib/ec2-idle-stop/state; $g check; state")
    assert out.splitlines()[0] == "stopping"
    assert out.splitlines()[2:] == ["in-use", "GPU 1 at 10%"]


def test_processes_using_half_a_cpu_since_the_last_check_are_in_use(machine):
    out = machine(3, "sh -c 'while :; do :; done' & p=$!; $g check; sleep 1; $g check; state; echo $p;"
                     " sleep 1; $g check; sleep 1; $g check; kill $p; wait $p; sleep 4; $g check; state")
    lines = out.splitlines()
    assert lines[0] == "in-use" and lines[1].startswith("CPU at ")
    assert lines[1].endswith(f"(most: sh pid {lines[2]})")
    assert int(lines[1].split()[2].rstrip("%")) >= 50
    # A window after the last check that saw it: its time, now its parent's (cutime), is not counted again.
    assert lines[3] == "stopping"


def test_a_keep_is_in_use_until_it_ends_and_off_ends_it(machine):
    out = machine(3, "$g keep 30m; $g check; state; $g keep off; $g check; state; $g keep soon; echo $?;"
                     f" echo 9999999999 > {LIB}/keep/'a b'; $g check; state")
    lines = out.splitlines()
    assert lines[0].startswith("in use until ")
    assert lines[1] == "in-use" and lines[2].startswith("kept until ") and lines[2].endswith(" by root")
    assert lines[3:6] == ["no longer kept in use", "idle", lines[2]]  # idle from when the keep ended
    # A keep file that is not named after its owner counts for nothing.
    assert lines[6:] == ["2", "idle", lines[2]]


def test_the_first_window_after_boot_is_in_use(machine):
    out = machine(4, "sed \"s/^btime .*/btime $(($(date +%s) - 1))/\" /proc/stat > /tmp/stat;"
                     " mount --bind /tmp/stat /proc/stat; $g check; state; sleep 2; $g status; sleep 2;"
                     " $g check; state")
    lines = out.splitlines()
    assert lines[0] == "idle" and lines[1].startswith("booted at ")
    assert re.match(r"idle [34] of 4 min \(last: booted at \d\d:\d\d\); idle stop after 4 min unused",
                    lines[2])
    assert lines[3] == "stopping"


HOLD_PTY = shlex.join([sys.executable, "-c", "import os, pty, sys, time; m, s = pty.openpty();"
                       " print(os.ttyname(s), flush=True); time.sleep(30)"])


def test_input_on_a_terminal_cancels_the_notice_which_was_said_on_it(machine):
    # A terminal held open, untouched for 1000 s, then typed on: its atime, as input sets it.
    out = machine(3, f"{HOLD_PTY} > /tmp/tty & p=$!; until [ -s /tmp/tty ]; do sleep 0.05; done;"
                     " touch -a -d @$(($(date +%s) - 1000)) /dev/pts/0; $g check; state;"
                     " touch -a /dev/pts/0; $g check; state; echo ---;"
                     " cat /var/tmp/shutdown-calls 2>/dev/null;"
                     " echo ---; tail -n 1 /var/log/ec2-idle-stop.log; kill $p")
    states, shutdowns, log = out.split("---\n")
    lines = states.splitlines()
    assert lines[0] == "stopping"
    assert lines[2] == "idle" and lines[3] == "input on pts/0 (root)"
    assert shutdowns == ""  # nothing was scheduled, so nothing is cancelled but the guard's own count
    assert log == f"{log[:19]} in use: input on pts/0 (root): stop cancelled\n"


def test_the_notice_is_said_on_a_terminal_outside_tmux(machine):
    # The pty's other end: what a person's terminal would show.
    reader = shlex.join([sys.executable, "-c", "import os, pty, select, sys, time; m, s = pty.openpty();"
                         " print(os.ttyname(s), flush=True); end = time.time() + 20\n"
                         "while time.time() < end:\n"
                         "    if select.select([m], [], [], 0.1)[0]:"
                         " sys.stdout.write(os.read(m, 4096).decode()); sys.stdout.flush()"])
    out = machine(3, f"{reader} > /tmp/screen & p=$!; until [ -s /tmp/screen ]; do sleep 0.05; done;"
                     " idle_check;"
                     " n=0; until grep -q 'it stops at' /tmp/screen || [ $n = 50 ]; do sleep 0.1;"
                     " n=$((n + 1)); done; kill $p; cat /tmp/screen")
    # On a line of its own (the reader's newlines are \n, as Python reads text).
    assert re.search(r"\nec2 idle stop: nothing has used this instance for 3 min; it stops at \d\d:\d\d\."
                     r" To keep it: type in any terminal, or run: ec2-idle-stop keep 2h"
                     r" \(or ec2 --keep 2h\)\n", out)


# A stand-in Jupyter server, as its own program (a process named jupyter-server):
# it writes its file as jupyter_server does (the fields from $INFO over the
# real ones, the token from $TOKEN: never an argv) and answers GET /api/kernels
# with $KERNELS, to that token only (or to $ACCEPT's); $SLOW: it never answers.
JUPYTER = """
import http.server, json, os, sys, time
runtime = os.environ.get("JUPYTER_RUNTIME_DIR") or os.path.expanduser("~/.local/share/jupyter/runtime")
os.makedirs(runtime, exist_ok=True)
class Kernels(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("/tmp/asked", "a") as f:
            f.write(self.path + "\\n")
        if os.environ.get("SLOW"):
            time.sleep(60)
        accept = os.environ.get("ACCEPT", os.environ["TOKEN"])
        ok = self.path == "/api/kernels" and self.headers.get("Authorization") == "token " + accept
        body = os.environ["KERNELS"].encode() if ok else b"{}"
        self.send_response(200 if ok else 403)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Kernels)
info = {"base_url": "/", "hostname": "localhost", "pid": os.getpid(), "port": server.server_port,
        "secure": False, "token": os.environ["TOKEN"], "url": "http://localhost:%d/" % server.server_port}
info.update(json.loads(os.environ.get("INFO", "{}")))
with open(runtime + "/jpserver-%d.json" % os.getpid(), "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)
print("ready", flush=True)
server.serve_forever()
"""

# Listens on 127.0.0.2:80, "another machine", and notes every connection.
ELSEWHERE = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.2", 80))
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    open("/tmp/elsewhere", "a").write("connected\\n")
    c.close()
"""

BUSY = json.dumps([{"id": "k1", "name": "python3", "last_activity": "2020-01-01T00:00:00.000000Z",
                    "execution_state": "busy", "connections": 0}])
IDLE = json.dumps([{"id": "k1", "name": "python3", "last_activity": "2020-01-01T00:00:00.000000Z",
                    "execution_state": "idle", "connections": 1}])
STARTING = json.dumps([{"id": "k1", "name": "python3", "last_activity": "2020-01-01T00:00:00.000000Z",
                        "execution_state": "starting", "connections": 0}])


def recent():
    from datetime import datetime, timezone

    return json.dumps([{"id": "k1", "name": "ir", "last_activity": datetime.now(timezone.utc).isoformat()
                        .replace("+00:00", "Z"), "execution_state": "idle", "connections": 0}])


def kernels_seen(machine, tmp_path, kernels, token="s3cret-token-42", accept=None, info=None, before="",
                 env=None):
    """What the guard sees of a Jupyter server of alice's answering KERNELS: (its state and
    why, what was asked of it, whether anything reached "another machine", the check's seconds)."""
    elsewhere = shlex.join([sys.executable, "-c", ELSEWHERE])
    out = machine(3, f"{elsewhere} > /tmp/listening & e=$!;"
                     f" {before} as_alice env HOME=/home/alice {USER_PYTHON}"
                     " /usr/local/sbin/jupyter-server > /tmp/ready & p=$!;"
                     " wait_for '[ -s /tmp/ready ] && [ -s /tmp/listening ]';"
                     " s=$(date +%s%N); $g check; echo $((($(date +%s%N) - s) / 1000000)); state; echo ---;"
                     " cat /tmp/asked 2>/dev/null; echo ---; cat /tmp/elsewhere 2>/dev/null; echo ---;"
                     f" cat {LIB}/state /var/log/ec2-idle-stop.log; $g status; kill $p $e",
                  env={"TOKEN": token, "KERNELS": kernels, "ACCEPT": accept or token,
                       "INFO": json.dumps(info or {}), **(env or {})}, programs={"jupyter-server": JUPYTER})
    seen, asked, elsewhere, kept = out.split("---\n")
    assert token not in kept  # nor in the state, the log or what status says
    assert "root:" not in kept  # nor anything of /etc/shadow
    seconds, *seen = seen.splitlines()
    return seen, asked.splitlines(), elsewhere, int(seconds) / 1000


def test_a_busy_kernel_is_in_use_however_old_its_last_activity(machine, tmp_path):
    seen, asked, elsewhere, _ = kernels_seen(machine, tmp_path, BUSY)
    assert seen[0] == "in-use" and re.fullmatch(r"kernel python3 busy \(Jupyter pid \d+\)", seen[1])
    assert asked == ["/api/kernels"] and elsewhere == ""


def test_a_kernel_active_within_the_window_is_use_and_an_idle_or_stuck_starting_one_is_not(machine, tmp_path):
    seen, _, _, _ = kernels_seen(machine, tmp_path, recent())
    assert seen[0] == "idle" and seen[1].startswith("kernel ir active (Jupyter pid ")
    for kernels in (IDLE, STARTING):
        assert kernels_seen(machine, tmp_path, kernels)[0][0] == "stopping"


def test_a_server_that_refuses_the_token_counts_for_nothing(machine, tmp_path):
    seen, _, _, _ = kernels_seen(machine, tmp_path, BUSY, accept="another")  # not the token of its file
    assert seen[0] == "stopping"


def test_a_server_with_its_runtime_directory_elsewhere_is_found(machine, tmp_path):
    seen, _, _, _ = kernels_seen(machine, tmp_path, BUSY, env={"JUPYTER_RUNTIME_DIR": "/tmp/rt-alice"},
                                 before="mkdir -m 700 /tmp/rt-alice; chown alice /tmp/rt-alice;")
    assert seen[0] == "in-use" and seen[1].startswith("kernel python3 busy")


@pytest.mark.parametrize("info", [{"port": "1@127.0.0.2:80"}, {"hostname": "127.0.0.2", "port": 80},
                                  {"base_url": "/[1-99999]/"}, {"base_url": "http://127.0.0.2/"},
                                  {"token": "s3cret-token-42\r\nHost: 127.0.0.2"}])
def test_a_hostile_runtime_file_sends_nothing_anywhere_else_and_asks_nothing(machine, tmp_path, info):
    seen, asked, elsewhere, seconds = kernels_seen(machine, tmp_path, BUSY, info=info)
    assert elsewhere == "" and asked == [] and seen[0] == "stopping"
    assert seconds < 3


def test_a_runtime_file_that_is_a_link_to_etc_shadow_is_not_read(machine, tmp_path):
    # The server's file, replaced by a link: root would read through it, alice cannot.
    seen, asked, _, _ = kernels_seen(
        machine, tmp_path, BUSY,
        before="(while :; do for f in /home/alice/.local/share/jupyter/runtime/jpserver-*; do"
               " [ -L \"$f\" ] || { rm -f \"$f\"; ln -s /etc/shadow \"$f\"; }; done; sleep 0.01; done)"
               " & l=$!;")
    assert asked == [] and seen[0] == "stopping"


def test_a_server_that_never_answers_holds_the_check_up_no_longer_than_its_limit(machine, tmp_path):
    seen, asked, _, seconds = kernels_seen(machine, tmp_path, BUSY, env={"SLOW": "1"})
    assert asked == ["/api/kernels"] and seen[0] == "stopping"
    assert 3 <= seconds < 3 + 2  # the README's 3 s for a question, and the rest of the check


def test_a_server_in_another_network_and_mount_namespace_is_found_as_in_a_container(machine, tmp_path):
    # Its runtime directory is a tmpfs that only its own mount namespace has, and
    # its 127.0.0.1 is its own network namespace's.
    seen, asked, _, _ = kernels_seen(
        machine, tmp_path, BUSY, env={"JUPYTER_RUNTIME_DIR": "/srv/rt"},
        before="mkdir -p /srv/rt; unshare --mount --net sh -c 'ip link set lo up;"
               " mount -t tmpfs -o mode=1777 tmpfs /srv/rt; exec \"$@\"' sh")
    assert asked == ["/api/kernels"]
    assert seen[0] == "in-use" and seen[1].startswith("kernel python3 busy")


# A kernel as VS Code's Jupyter extension starts it: ipykernel with a connection
# file, no server; argv[1] "busy" has it run a silent cell.
KERNEL = """
import os, subprocess, sys, time
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file
path, info = write_connection_file("/tmp/kernel-vscode.json")
kernel = subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", "--f=" + path],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
client = BlockingKernelClient(connection_file=path)
client.load_connection_file()
client.start_channels()
client.wait_for_ready(timeout=60)
client.execute("x = 42" if sys.argv[1] == "idle" else "import time; time.sleep(30)")
time.sleep(1)
print(kernel.pid, flush=True)
time.sleep(30)
"""


@pytest.mark.parametrize("cell", ["busy", "idle"])
def test_a_kernel_with_no_server_counts_while_it_runs_a_cell_and_not_when_idle(machine, tmp_path, cell):
    try:
        import ipykernel  # noqa: F401
    except ImportError:
        skip_or_fail("the kernel test needs ipykernel (pip install jupyterlab)")
    kernel = shlex.join([sys.executable, "-c", KERNEL, cell])
    out = machine(3, f"{kernel} > /tmp/kernel & p=$!; until [ -s /tmp/kernel ]; do sleep 0.1; done;"
                     " $g check; state; cat /tmp/kernel; kill $p; kill $(cat /tmp/kernel)", timeout=120)
    state, why, pid = out.splitlines()
    if cell == "busy":
        assert (state, why) == ("in-use", f"kernel busy (ipykernel pid {pid}, root)")
    else:
        assert state == "stopping"


# A fake tmux server of a local user: to every client that connects it answers
# MSG_SHELL (type 209, protocol 8, tmux 3.3a), which has the client exec the
# program argv[1] names, as the client's user. It calls itself "tmux: server".
FAKE_TMUX = """
import os, socket, struct, sys
with open("/proc/self/comm", "w") as f:
    f.write("tmux: server")
folder = "/tmp/tmux-%d" % os.getuid()
os.makedirs(folder, mode=0o700, exist_ok=True)
listener = socket.socket(socket.AF_UNIX)
listener.bind(folder + "/default")
listener.listen()
print("ready", flush=True)
shell = sys.argv[1].encode() + b"\\0"
while True:
    client, _ = listener.accept()
    client.sendall(struct.pack("=IHHII", 209, 16 + len(shell), 0, 8, 0) + shell)
"""


def test_a_users_fake_tmux_server_gets_no_root_and_real_sessions_still_get_the_notice(machine, tmp_path):
    fake = shlex.join([USER_PYTHON, "-c", FAKE_TMUX, "/usr/local/sbin/evil"])
    out = machine(3, f"as_alice {fake} > /tmp/fake & f=$!;"
                     " tmux new-session -d -s work; script -qf -c 'tmux attach -t work' /tmp/screen"
                     " < /dev/null > /dev/null 2>&1 &"
                     " until grep -q '\\[work\\]' /tmp/screen 2>/dev/null && [ -s /tmp/fake ];"
                     " do sleep 0.1; done;"
                     " sleep 0.2; idle_check;"
                     " n=0; until grep -q 'ec2 idle stop: nothing' /tmp/screen || [ $n = 100 ]; do"
                     " sleep 0.1; n=$((n + 1)); done;"
                     " grep -c 'ec2 idle stop: nothing has used this instance for 3 min' /tmp/screen;"
                     " cat /tmp/ran-as; id -u alice; kill $f; tmux kill-server",
                  programs={"evil": "#!/bin/sh\nid -u >> /tmp/ran-as\n"})
    count, *ran_as, alice = out.splitlines()
    assert count == "1"  # the real session, once
    # The guard did ask the fake server, as its owner: whatever it has run, it ran as alice.
    assert ran_as and set(ran_as) == {alice} and "0" not in ran_as


def test_install_with_cron_then_remove_leaves_nothing(machine):
    if not shutil.which("crontab"):
        skip_or_fail("the guard's cron install needs crontab (apt-get install cron)")
    out = machine(3, f"rm -rf {LIB} /etc/ec2-idle-stop.conf {GUARD}; sh \"$1\" install 60; crontab -l;"
                     f" cat /etc/ec2-idle-stop.conf; sleep 1; p=$(cat {LIB}/pid); kill -0 $p && echo loop;"
                     f" $g remove; crontab -l; echo; for f in {LIB} {GUARD} /etc/ec2-idle-stop.conf"
                     " /var/log/ec2-idle-stop.log; do [ ! -e $f ] || echo left $f; done;"
                     " sleep 0.2; kill -0 $p 2>/dev/null || echo stopped")
    lines = out.splitlines()
    assert lines[0] == "ec2-idle armed 60 cron"
    # Run by the Python that installed it, whatever PATH cron has.
    assert [re.sub(r"^@reboot EC2_PYTHON=/\S*/python3?(\.\d+)? ", "@reboot EC2_PYTHON=PYTHON ", line)
            for line in lines if "@reboot" in line] == [f"@reboot EC2_PYTHON=PYTHON {GUARD} run"
                                                         " # ec2-idle-stop"]
    assert "window=60" in lines and "loop" in lines
    assert lines[-3:] == ["ec2-idle removed", "", "stopped"]  # no crontab line, no file, no loop left


def test_install_with_systemd_writes_a_unit_and_starts_it(machine):
    out = machine(3, f"rm -rf {LIB} {GUARD}; mkdir -p /run/systemd/system; sh \"$1\" install 45;"
                     " cat /etc/systemd/system/ec2-idle-stop.service; cat /var/tmp/systemctl-calls;"
                     " $g remove; ls /etc/systemd/system/ec2-idle-stop.service 2>&1;"
                     " cat /var/tmp/systemctl-calls")
    assert out.startswith("ec2-idle armed 45 systemd\n[Unit]\n")
    assert re.search(r"\nEnvironment=EC2_PYTHON=/\S*/python3?(\.\d+)?\n", out)
    assert f"\nExecStart={GUARD} run\n" in out and "Restart=always\n" in out
    made = calls(out.split("[Install]\nWantedBy=multi-user.target\n")[1].split("ls: ")[0])
    assert made == [["daemon-reload"], ["enable", "ec2-idle-stop.service"],
                    ["restart", "ec2-idle-stop.service"]]
    assert ["disable", "--now", "ec2-idle-stop.service"] in calls(out.split("No such file")[-1])


def test_install_without_systemd_or_cron_says_so_and_installs_nothing(machine):
    out = machine(3, f"rm -rf {LIB} /etc/ec2-idle-stop.conf {GUARD}; p=$(command -v crontab) &&"
                     " mount --bind /dev/null $p; sh \"$1\" install 60; ls {LIB} {GUARD} 2>&1 | wc -l")
    assert out.splitlines() == ["ec2-idle no-boot", "2"]


@pytest.mark.parametrize("how", ["install 90", "remove"])
def test_rearming_or_removing_during_the_notice_cancels_the_stop_and_says_so(machine, how):
    out = machine(3, f"{HOLD_PTY} > /tmp/tty & p=$!; until [ -s /tmp/tty ]; do sleep 0.05; done;"
                     " mkdir -p /run/systemd/system; idle_check;"
                     f" state; cp {GUARD} /tmp/ec2-idle-stop.sent;"
                     f" python3 /tmp/ec2-idle-stop.sent {how} > /dev/null;"
                     f" cat {LIB}/state 2>/dev/null; echo ---;"
                     " tail -n 2 /var/log/ec2-idle-stop.log 2>/dev/null;"
                     " echo ---; cat /var/tmp/shutdown-calls 2>/dev/null; kill $p")
    states, log, shutdowns = out.split("---\n")
    assert states.splitlines()[0] == "stopping" and len(states.splitlines()) == 2  # no state left behind
    if how == "remove":
        assert log == ""  # the log went with all the rest
    else:
        assert log.splitlines()[0].endswith(" stop cancelled: re-armed with a window of 90 min")
    assert shutdowns == ""


def test_rearming_over_the_sh_guard_during_its_notice_cancels_its_shutdown(machine):
    old = "#!/bin/sh\n# ec2-idle-stop: stops this instance once nobody and nothing has used it\n"
    out = machine(3, f"printf '{old}' > {GUARD}; echo 'stopping 1 2' > {LIB}/state; echo why >> {LIB}/state;"
                     " mkdir -p /run/systemd/system; sh \"$1\" install 60 > /dev/null;"
                     " cat /var/tmp/shutdown-calls")
    assert calls(out) == [["-c", "ec2 idle stop re-armed with a window of 1h"]]


def test_a_whole_window_unused_is_enough_to_stop(machine):
    out = machine(3, f"echo $(($(date +%s) - 3)) > {LIB}/started; $g check; state")
    assert out.splitlines()[0] == "stopping"  # 3 of 3 minutes unused


def test_a_process_started_since_the_last_check_and_short_lived_children_count(machine):
    out = machine(3, "$g check; sh -c 'while :; do :; done' & p=$!; sleep 1; $g check; state; kill $p;"
                     " sleep 2; $g check;"
                     # A make that runs one short compiler after another: each lives between two checks.
                     " sh -c 'while :; do sh -c \"i=0; while [ \\$i -lt 3000 ];"
                     " do i=\\$((i + 1)); done\"; done'"
                     " & p=$!; sleep 1; $g check; state; kill $p")
    lines = out.splitlines()
    assert lines[0] == "in-use" and lines[1].startswith("CPU at ")
    assert lines[2] == "in-use" and lines[3].startswith("CPU at ")


def test_a_keep_counts_for_the_user_who_asked_it(machine):
    out = machine(3, f"as_alice $g keep 30m; ls {LIB}/keep; $g check; state")
    lines = out.splitlines()
    assert lines[1] == "alice" and lines[2] == "in-use" and lines[3].endswith(" by alice")


def test_the_stop_is_said_in_every_tmux_session_once(machine):
    out = machine(3, "tmux new-session -d -s work; script -qf -c 'tmux attach -t work' /tmp/screen"
                     " < /dev/null > /dev/null 2>&1 &"
                     # Drawn, so done reading its terminal at start: then untouched for 1000 s.
                     " until grep -q '\\[work\\]' /tmp/screen 2>/dev/null; do sleep 0.1; done; sleep 0.2;"
                     " idle_check;"
                     " n=0; until grep -q 'ec2 idle stop: nothing' /tmp/screen || [ $n = 100 ]; do"
                     " sleep 0.1; n=$((n + 1)); done; sleep 0.5; cat /tmp/screen; tmux kill-server")
    said = [m.start() for m in re.finditer("ec2 idle stop: nothing has used this instance for 3 min", out)]
    # Drawn by tmux in the client's status line (it may draw it again), never also written
    # on a line of its own under the pane's program.
    assert said and all(out[at - 1] not in "\r\n" for at in said), out[-2000:]


# The metadata service, in miniature, on its own address: IMDSv2's token, then a
# Spot instance with EC2's notice of an interruption 2 minutes from now.
METADATA = """
import datetime, http.server, json
when = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=150)).replace(microsecond=0)
notice = json.dumps({"action": "stop", "time": when.isoformat().replace("+00:00", "Z")}).encode()
class Metadata(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        self.answer(b"tok" if self.path == "/latest/api/token" else b"")
    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != "tok":
            self.send_response(401); self.end_headers(); return
        self.answer({"/latest/meta-data/instance-life-cycle": b"spot",
                     "/latest/meta-data/spot/instance-action": notice}.get(self.path, b""))
    def answer(self, body):
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("169.254.169.254", 80), Metadata)
print(when.timestamp(), flush=True)
server.serve_forever()
"""


def test_a_spot_interruption_is_said_in_every_tmux_client_while_the_guard_runs(machine):
    metadata = shlex.join([sys.executable, "-c", METADATA])
    out = machine(60, "ip addr add 169.254.169.254/32 dev lo; "
                      f"{metadata} > /tmp/when & m=$!; tmux new-session -d -s work;"
                      " script -qf -c 'tmux attach -t work' /tmp/screen < /dev/null > /dev/null 2>&1 &"
                      " until grep -q '\\[work\\]' /tmp/screen 2>/dev/null && [ -s /tmp/when ];"
                      " do sleep 0.1; done;"
                      " EC2_IDLE_STOP_MINUTE=60 $g run & r=$!;"
                      " n=0; until grep -q 'Spot instance' /tmp/screen || [ $n = 150 ]; do sleep 0.1;"
                      " n=$((n + 1)); done; kill $r $m; tmux kill-server; cat /tmp/when;"
                      " grep -o 'EC2 will [^:]*:[^:]*:[^)]*)'"
                      " /tmp/screen | head -n 1; tail -n 1 /var/log/ec2-idle-stop.log", timeout=90)
    when, said, log = out.splitlines()
    hhmmss = time.strftime("%H:%M:%S", time.localtime(float(when)))
    assert said in (f"EC2 will stop this Spot instance at {hhmmss} (in 2 min)",
                    f"EC2 will stop this Spot instance at {hhmmss} (in 1 min)")
    assert log.endswith(f" Spot interruption: stop at {hhmmss}")
