"""Idle stop's guard, the real script, fast: in a machine of namespaces made for each test.

Each test runs the guard (ec2.GUARD_SCRIPT, installed as arming installs it)
with `unshare` in a mount and PID namespace of its own: /etc, /var,
/usr/local and the home directory are overlays whose writes land in the
test's directory, and /tmp, /run and the terminals (a devpts) are its own,
so the guard sees only what the test made. shutdown, systemctl and
nvidia-smi are stand-ins on its PATH; a Jupyter server is a stand-in that
answers /api/kernels as jupyter_server does. Time is compressed: with
EC2_IDLE_STOP_MINUTE=1 a minute of the window lasts a second.
test_idle_e2e.py runs the same guard on a real instance over ssh, with a
real tmux, Jupyter server and kernel.
"""

import json
import os
import pwd
import re
import shutil
import subprocess
import sys

import pytest

from conftest import NVIDIA_SMI, PRIVATE_MACHINE, RECORDING, ec2, private_machine, skip_or_fail

GUARD = ec2.GUARD_BIN
LIB = "/var/lib/ec2-idle-stop"

# After PRIVATE_MACHINE: the guard from $1, the stand-ins from the directory
# $3, and a window of $2 minutes armed 1000 s ago; then the test's own lines,
# with $g the guard and state() printing its state and why.
SETUP = f"""
cp "$1" {GUARD}; chmod 755 {GUARD}
mkdir -p /usr/local/sbin; cp "$3"/* /usr/local/sbin; chmod 755 /usr/local/sbin/*
mkdir -p {LIB}/keep; chmod 1777 {LIB}/keep
echo window=$2 > /etc/ec2-idle-stop.conf; echo $(($(date +%s) - 1000)) > {LIB}/started
export EC2_IDLE_STOP_MINUTE=1; g={GUARD}
state() {{ sed -n 1s/\\ .*//p {LIB}/state; sed -n 2p {LIB}/state; }}
set +e
"""

# A stand-in Jupyter server: it writes its file as jupyter_server does (the
# token from $TOKEN, never an argv) and answers GET /api/kernels with
# $KERNELS, to that token only (or to $ACCEPT's).
JUPYTER = """
import http.server, json, os, sys
runtime = os.path.expanduser("~/.local/share/jupyter/runtime")
os.makedirs(runtime, exist_ok=True)
class Kernels(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
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
with open(runtime + "/jpserver-%d.json" % os.getpid(), "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)
print("ready", flush=True)
server.serve_forever()
"""


@pytest.fixture
def machine(tmp_path):
    """run(WINDOW, LINES): LINES run in a machine of their own after SETUP; their stdout."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        skip_or_fail("the guard's tests make namespaces: they need root and unshare (util-linux)")
    runs = []

    def run(window, lines, env=None):
        base = tmp_path / f"machine{len(runs)}"  # each run a machine of its own
        runs.append(base)
        standins = base / "standins"
        standins.mkdir(parents=True)
        (base / "guard").write_text(ec2.GUARD_SCRIPT)
        (standins / "nvidia-smi").write_text(NVIDIA_SMI)
        for name in ("shutdown", "systemctl"):
            (standins / name).write_text(RECORDING.replace("{name}", name))
        for name in ("python3", "curl"):  # the real ones, each argv recorded on the way
            (standins / name).write_text(RECORDING.replace("{name}", name) + f'exec /usr/bin/{name} "$@"\n')
        done = subprocess.run(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c",
             PRIVATE_MACHINE + SETUP + lines, "sh", *private_machine(base, base / "home"),
             str(base / "guard"), str(window), str(standins)],
            # HOME as the passwd file has it, where the guard looks (its overlay takes the writes).
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "HOME": pwd.getpwuid(os.getuid()).pw_dir, **(env or {})})
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def calls(text):
    """The calls of a stand-in, as its -calls file has them."""
    return [call.split("\x1f")[:-1] for call in text.split("\x1e")[:-1]]


def test_nothing_in_use_for_the_window_powers_off_in_5_minutes_once(machine):
    out = machine(3, "$g check; $g check; cat /var/tmp/shutdown-calls; echo ---; state; $g status;"
                     " echo ---; cat /var/log/ec2-idle-stop.log")
    shutdowns, state, log = out.split("---\n")
    state = state.splitlines()
    assert len(calls(shutdowns)) == 1 and calls(shutdowns)[0][:2] == ["-P", "+5"]  # never a halt
    assert calls(shutdowns)[0][2].startswith("ec2 idle stop: nothing has used this instance for 3 min;"
                                             " it stops at ")
    assert state[:2] == ["stopping", "armed at " + state[1].split()[-1]]
    assert state[2].startswith("stopping at ")
    assert state[2].endswith(": unused for 3 min; ec2 --keep 2h keeps it")
    assert log.count(": stopping at ") == 1


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
    # A keep file that no user name could be named counts for nothing.
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


def test_input_on_a_terminal_within_the_window_is_use_and_cancels_a_stop(machine):
    # A terminal held open, untouched for 1000 s, then typed on: its atime, as input sets it.
    hold = shlex_join([sys.executable, "-c", "import os, pty, time; pty.openpty(); time.sleep(30)"])
    out = machine(3, f"{hold} & p=$!; sleep 0.5; touch -a -d @$(($(date +%s) - 1000)) /dev/pts/0;"
                     " $g check; state; touch -a /dev/pts/0; $g check; state; echo ---;"
                     " cat /var/tmp/shutdown-calls; echo ---; tail -n 1 /var/log/ec2-idle-stop.log; kill $p")
    states, shutdowns, log = out.split("---\n")
    lines = states.splitlines()
    assert lines[0] == "stopping"
    assert lines[2] == "idle" and lines[3] == "input on pts/0 (root)"
    assert [call[0] for call in calls(shutdowns)] == ["-P", "-c"]
    assert log == f"{log[:19]} in use: input on pts/0 (root): stop cancelled\n"


def shlex_join(words):
    import shlex

    return shlex.join(words)


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


def kernels_seen(machine, kernels, asker, token="s3cret-token-42", accept=None):
    """What the guard sees of a Jupyter server answering KERNELS, asked with ASKER
    (curl, or python3 where there is no curl); and every argv it gave either."""
    mask = "rm /usr/local/sbin/curl; mount --bind /dev/null $(readlink -f /usr/bin/curl);" \
        if asker == "python3" else ""
    jupyter = shlex_join([sys.executable, "-c", JUPYTER])
    out = machine(3, f"{jupyter} > /tmp/ready & p=$!; until [ -s /tmp/ready ]; do sleep 0.05; done;"
                     f" {mask} $g check; state; echo ---; cat /var/tmp/python3-calls /var/tmp/curl-calls"
                     f" 2>/dev/null; echo ---; cat {LIB}/state /var/log/ec2-idle-stop.log; $g status;"
                     " kill $p",
                  env={"TOKEN": token, "KERNELS": kernels, "ACCEPT": accept or token})
    seen, argvs, kept = out.split("---\n")
    assert token not in kept  # nor in the state, the log or what status says
    return seen.splitlines(), calls(argvs)


@pytest.mark.parametrize("asker", ["python3", "curl"])
def test_a_busy_kernel_is_in_use_however_old_its_last_activity_and_the_token_is_on_no_argv(machine, asker):
    seen, argvs = kernels_seen(machine, BUSY, asker)
    assert seen[0] == "in-use" and seen[1].startswith("kernel python3 busy (Jupyter pid ")
    assert not any("s3cret-token-42" in word for call in argvs for word in call)
    curled = [call for call in argvs if "-K" in call]
    pythons = [call for call in argvs if call[:1] == ["-c"]]
    assert (bool(curled), bool(pythons)) == (asker == "curl", asker == "python3")  # python3 only without curl


@pytest.mark.parametrize("asker", ["python3", "curl"])
def test_a_kernel_active_within_the_window_is_use_and_an_idle_or_stuck_starting_one_is_not(machine, asker):
    seen, _ = kernels_seen(machine, recent(), asker)
    assert seen[0] == "idle" and seen[1].startswith("kernel ir active (Jupyter pid ")
    for kernels in (IDLE, STARTING):
        assert kernels_seen(machine, kernels, asker)[0][0] == "stopping"


def test_a_server_that_refuses_the_token_counts_for_nothing(machine):
    seen, _ = kernels_seen(machine, BUSY, "python3", accept="another")  # not the token of its file
    assert seen[0] == "stopping"


def test_install_with_cron_then_remove_leaves_nothing(machine):
    if not shutil.which("crontab"):
        skip_or_fail("the guard's cron install needs crontab (apt-get install cron)")
    out = machine(3, f"rm -rf {LIB} /etc/ec2-idle-stop.conf {GUARD}; sh \"$1\" install 60; crontab -l;"
                     f" cat /etc/ec2-idle-stop.conf; sleep 0.5; p=$(cat {LIB}/pid); kill -0 $p && echo loop;"
                     f" $g remove; crontab -l; echo; for f in {LIB} {GUARD} /etc/ec2-idle-stop.conf"
                     " /var/log/ec2-idle-stop.log; do [ ! -e $f ] || echo left $f; done;"
                     " kill -0 $p 2>/dev/null || echo stopped")
    lines = out.splitlines()
    assert lines[0] == "ec2-idle armed 60 cron"
    assert f"@reboot {GUARD} run # ec2-idle-stop" in lines and "window=60" in lines and "loop" in lines
    assert lines[-3:] == ["ec2-idle removed", "", "stopped"]  # no crontab line, no file, no loop left


def test_install_with_systemd_writes_a_unit_and_starts_it(machine):
    out = machine(3, f"rm -rf {LIB} {GUARD}; mkdir -p /run/systemd/system; sh \"$1\" install 45;"
                     " cat /etc/systemd/system/ec2-idle-stop.service; cat /var/tmp/systemctl-calls;"
                     " $g remove; ls /etc/systemd/system/ec2-idle-stop.service 2>&1;"
                     " cat /var/tmp/systemctl-calls")
    assert out.startswith("ec2-idle armed 45 systemd\n[Unit]\n")
    assert f"ExecStart={GUARD} run\n" in out and "Restart=always\n" in out
    made = calls(out.split("[Install]\nWantedBy=multi-user.target\n")[1].split("ls: ")[0])
    assert made == [["daemon-reload"], ["enable", "ec2-idle-stop.service"],
                    ["restart", "ec2-idle-stop.service"]]
    assert ["disable", "--now", "ec2-idle-stop.service"] in calls(out.split("No such file")[-1])


def test_install_without_systemd_or_cron_says_so_and_installs_nothing(machine):
    out = machine(3, f"rm -rf {LIB} /etc/ec2-idle-stop.conf {GUARD}; p=$(command -v crontab) &&"
                     " mount --bind /dev/null $p; sh \"$1\" install 60; ls {LIB} {GUARD} 2>&1 | wc -l")
    assert out.splitlines() == ["ec2-idle no-boot", "2"]


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
    out = machine(3, "useradd -M alice; setpriv --reuid alice --regid alice --clear-groups $g keep 30m;"
                     f" ls {LIB}/keep; $g check; state")
    lines = out.splitlines()
    assert lines[1] == "alice" and lines[2] == "in-use" and lines[3].endswith(" by alice")


def test_the_stop_is_said_in_every_tmux_session(machine):
    out = machine(3, "tmux new-session -d -s work; script -qf -c 'tmux attach -t work' /tmp/screen"
                     " < /dev/null > /dev/null 2>&1 &"
                     # Drawn, so done reading its terminal at start: then untouched for 1000 s.
                     " until grep -q '\\[work\\]' /tmp/screen 2>/dev/null; do sleep 0.1; done; sleep 0.2;"
                     " touch -a -d @$(($(date +%s) - 1000)) /dev/pts/*; $g check;"
                     " n=0; until grep -q 'ec2 idle stop: nothing' /tmp/screen || [ $n = 100 ]; do"
                     " sleep 0.1; n=$((n + 1)); done;"
                     " grep -c 'ec2 idle stop: nothing has used this instance for 3 min' /tmp/screen;"
                     " tmux kill-server")
    assert out.splitlines() == ["1"]
