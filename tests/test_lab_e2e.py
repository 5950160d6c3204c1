"""ec2 --lab against a real sshd, a real tmux and a real Jupyter, typed into a terminal.

The instance is sshd in a network namespace, with a home directory of its own
where conda-style set-up in ~/.bashrc puts Jupyter on the PATH of login
shells only (conftest.INSTANCE_HOME). Each test has its own Jupyter runtime
directory, and stops every server it started by its pid.
"""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_e2e import attached, detach
from test_jupyter_e2e import api_status

from conftest import free_port, held_port, skip_or_fail, stop_pid, wait_until

RECORDING_BROWSER = """#!{python}
# Records the page it is given, and whether Jupyter answered through the
# forward at that moment (the URL is read from the page, as a browser does).
import re, sys, urllib.request
page = open(sys.argv[1][len("file://"):]).read()
url = re.search(r'url=([^"]+)"', page).group(1).replace("&amp;", "&")
try:
    status = urllib.request.urlopen(url.split("?")[0] + "api", timeout=5).status
except OSError as e:
    status = e
with open({record!r}, "a") as f:
    f.write(f"{{sys.argv[1]}} {{url}} {{status}}\\n")
"""


class Lab:
    """ec2 --lab for the host, with a runtime directory and a config of the test's own."""

    def __init__(self, host, tmp_path):
        self.host = host
        self.runtime = tmp_path / "runtime"
        self.runtime.mkdir()
        self.config = tmp_path / "config"
        self.profile()
        self.browser_record = tmp_path / "browser-record"
        self.browser = tmp_path / "browser"
        self.browser.write_text(RECORDING_BROWSER.format(python=sys.executable,
                                                         record=str(self.browser_record)))
        self.browser.chmod(0o755)

    def profile(self, **settings):
        """Write the [gpu] profile: the test host, and SETTINGS."""
        lines = ["[gpu]", "host = instance"] + [f"{k} = {v}" for k, v in settings.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def args(self, *args):
        return ["-H", "gpu", "--config", str(self.config), *args, "--", "-F", str(self.host.ssh_config),
                "-o", f"SetEnv=JUPYTER_RUNTIME_DIR={self.runtime}"]

    def line(self, *args, browser=True):
        """What a person types to run ec2 ARGS, with the recording browser as $BROWSER."""
        env = f"BROWSER={shlex.quote(str(self.browser))} " if browser else ""
        return env + shlex.join(["ec2", *self.args(*args)])

    def servers(self):
        """{pid: info} of the servers whose runtime files are in this test's directory."""
        found = {}
        for path in self.runtime.glob("jpserver-*.json"):
            pid = int(path.stem.split("-")[1])
            if os.path.exists(f"/proc/{pid}"):
                try:
                    found[pid] = json.loads(path.read_text())
                except ValueError:
                    pass  # being written
        return found

    def window_pid(self, session):
        done = self.host.tmux("display-message", "-p", "-t", f"{session}:jupyter", "#{pane_pid}")
        return int(done.stdout) if done.returncode == 0 else None

    def urls(self):
        done = self.host.run_ec2("--urls", ssh_args=["-o", f"SetEnv=JUPYTER_RUNTIME_DIR={self.runtime}"])
        assert done.returncode == 0, done.stderr
        return [line.split()[0] for line in done.stdout.splitlines()]

    def stop(self):
        for pid in self.servers():
            stop_pid(pid)


@pytest.fixture
def lab(fresh_host, tmp_path):
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        skip_or_fail("the --lab tests need JupyterLab (pip install jupyterlab)")
    lab = Lab(fresh_host, tmp_path)
    yield lab
    lab.stop()  # then fresh_host stops the windows and tmux, by their pids


def shown_url(terminal):
    """The URL ec2 printed, and the instance port, from the screen tmux covers."""
    found = re.search(r"Jupyter: (http://\S+) -> instance port (\d+)", terminal.hidden_screen())
    return found.group(1), int(found.group(2))


def free_pair():
    """A port P with P and P + 1 free here: P for the instance's Jupyter, P + 1 if it moves."""
    return wait_until(lambda: next((p for p in [free_port()] if p < 65535 and free(p + 1)), None),
                      what="two free ports in a row")


def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class ArgvWatch:
    """Every process's argv on this machine (instance and laptop alike), sampled every 20 ms."""

    def __init__(self):
        self.seen, self.running = set(), True
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self):
        while self.running:
            for entry in os.listdir("/proc"):
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        self.seen.add(f.read().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.seen


def test_jupyter_is_on_the_path_of_login_shells_only(fresh_host):
    # The control for the tests below: an ssh command does not find jupyter,
    # so --lab finds it only through the login shell that it runs.
    done = subprocess.run(["ssh", "-F", str(fresh_host.ssh_config), "instance", "command -v jupyter"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and done.stdout == ""


def test_cold_start_serves_opens_the_browser_and_attaches(lab, terminal):
    port = free_pair()
    watch = ArgvWatch()
    try:
        terminal.type(lab.line("work", "--lab", "--jupyter-port", str(port)))
        attached(lab.host, "work")
        url, remote = shown_url(terminal)
        record = wait_until(lambda: lab.browser_record.exists() and lab.browser_record.read_text(),
                            timeout=30, what="the browser")
    finally:
        seen = watch.stop()
    assert ("ec2: starting Jupyter in window 'jupyter' of tmux session 'work' … ready ("
            in terminal.hidden_screen())
    ((pid, info),) = lab.servers().items()
    assert pid == lab.window_pid("work")  # the server is the window's own process
    assert remote == info["port"] == port
    assert url == f"http://localhost:{port}/?token={info['token']}"
    assert api_status(url) == 200 and api_status(url, token=False) == 403
    assert lab.urls() == [url]  # what ec2 --urls says from another terminal
    page, browsed, status = record.split()
    assert (browsed, status) == (url, "200")  # opened once the forward answered
    assert not [argv for argv in seen if info["token"] in argv]  # ps never shows the token
    assert any("new-session -A -s work" in argv for argv in seen)  # and the watch saw ssh
    detach(terminal)


def test_a_second_lab_uses_the_running_server(lab, terminal):
    port = free_pair()
    lab.profile(lab_command="jupyter server --no-browser")
    terminal.type(lab.line("work", "--lab", "--jupyter-port", str(port), browser=False))
    attached(lab.host, "work")
    first = shown_url(terminal)
    (pid,) = lab.servers()
    detach(terminal)
    terminal.type("clear; " + lab.line("work", "--lab", "--no-browser", "--jupyter-port", str(port)))
    attached(lab.host, "work")
    assert "ec2: Jupyter is already running in window 'jupyter' of tmux session 'work'" \
        in terminal.hidden_screen()
    assert shown_url(terminal) == first
    assert list(lab.servers()) == [pid]
    detach(terminal)


def test_the_users_window_stays_the_current_one(lab, terminal):
    port = free_pair()
    lab.profile(lab_command="jupyter server --no-browser")
    # The user's session, made on the instance (in its home, as a login there would).
    subprocess.run(["ssh", "-F", str(lab.host.ssh_config), "instance", "tmux new-session -d -s work -n mine"],
                   check=True, timeout=30, stdin=subprocess.DEVNULL)
    terminal.type(lab.line("work", "--lab", "--no-browser", "--jupyter-port", str(port)))
    attached(lab.host, "work")
    wait_until(lab.servers, what="the server")
    windows = lab.host.tmux("list-windows", "-t", "work", "-F", "#{window_name} #{window_active}").stdout
    assert windows.splitlines() == ["mine 1", "jupyter 0"]
    detach(terminal)


def test_conda_env_is_activated_in_the_login_shell(lab, terminal):
    port = free_pair()
    lab.profile(lab_command="jupyter server --no-browser", conda_env="second")
    terminal.type(lab.line("nb", "--lab", "--no-browser", "--jupyter-port", str(port)))
    attached(lab.host, "nb")
    ((pid, _),) = lab.servers().items()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"CONDA_DEFAULT_ENV=second" in environ
    detach(terminal)


def test_the_forward_follows_jupyter_to_the_next_port(lab, terminal, tmp_path):
    port = free_pair()
    lab.profile(lab_command="jupyter server --no-browser")
    holder = lab.host.spawn(sys.executable, "-c", "import socket, time; s = socket.socket();"
                            f" s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(600)")
    wait_until(lambda: subprocess.run(["ip", "netns", "exec", lab.host.ns, "ss", "-ltnH", f"sport = {port}"],
                                      capture_output=True, text=True).stdout.strip(), what="the holder")
    try:
        terminal.type(lab.line("nb", "--lab", "--no-browser", "--jupyter-port", str(port)))
        attached(lab.host, "nb")
        url, remote = shown_url(terminal)
        assert remote == port + 1 and urlsplit(url).port == port + 1
        assert api_status(url) == 200
    finally:
        stop_pid(holder.pid)
    detach(terminal)


def test_a_taken_local_port_moves_and_says_so(lab, terminal):
    port = free_pair()
    lab.profile(lab_command="jupyter server --no-browser")
    with held_port(port):
        terminal.type(lab.line("nb", "--lab", "--no-browser", "--jupyter-port", str(port)))
        attached(lab.host, "nb")
        url, remote = shown_url(terminal)
        assert remote == port and urlsplit(url).port != port
        assert f"-> instance port {port} ({port} is in use here)" in terminal.hidden_screen()
        assert api_status(url) == 200
    detach(terminal)


def failure(lab, terminal, *args):
    """Run ec2 ARGS in the terminal; return what it printed, once it has exited."""
    terminal.type(lab.line(*args, browser=False) + "; echo exit=$?")
    wait_until(lambda: re.search(r"^exit=\d", terminal.screen(), re.M), timeout=60,
               what=f"ec2 to exit:\n{terminal.screen()}")
    return terminal.screen()


def test_jupyter_not_found(lab, terminal):
    lab.profile(conda_env="empty")
    screen = failure(lab, terminal, "nb", "--lab")
    assert "ec2: `jupyter lab --no-browser` was not found on instance by `/bin/bash -lic`" in screen
    assert "pip install jupyterlab" in screen and "jupyter: not found" in screen
    assert "exit=1" in screen and "Traceback" not in screen


def test_a_crash_at_start_shows_its_last_lines(lab, terminal, tmp_path):
    missing = tmp_path / "no-such-dir"
    lab.profile(lab_command=f"jupyter server --no-browser --ServerApp.root_dir={missing}")
    screen = failure(lab, terminal, "nb", "--lab")
    assert "ec2: Jupyter exited with status 1 while starting on instance" in screen
    assert f"No such directory: '{missing}'" in screen or f"{missing}" in screen.split("last lines:")[1]
    assert "exit=1" in screen
    # The window stays, with the output, for the user to read.
    window = lab.host.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "nb:jupyter").stdout
    assert str(missing) in window


def test_a_server_that_never_answers_times_out(lab, terminal):
    lab.profile(lab_command="sleep 600", lab_timeout="2")
    began = time.monotonic()
    screen = failure(lab, terminal, "nb", "--lab")
    assert "ec2: Jupyter did not answer within 2 s (lab_timeout); it is still starting in window" in screen
    assert "exit=1" in screen and time.monotonic() - began < 20
    assert lab.window_pid("nb")  # still running, for a later --lab to use


def test_a_stale_runtime_file_is_not_a_server(lab, terminal):
    port = free_pair()
    lab.profile(lab_command="jupyter server --no-browser")
    child = subprocess.Popen(["true"])
    child.wait()
    (lab.runtime / f"jpserver-{child.pid}.json").write_text(json.dumps({"port": 1, "token": "old"}))
    terminal.type(lab.line("nb", "--lab", "--jupyter-port", str(port), browser=False, ))
    attached(lab.host, "nb")
    assert "ec2: starting Jupyter" in terminal.hidden_screen()
    url, _ = shown_url(terminal)
    assert "old" not in url and api_status(url) == 200
    detach(terminal)


def test_a_forward_is_its_own_connection_under_a_control_master(fresh_host, terminal, tmp_path):
    # With ControlMaster in the user's ssh config, ec2 -j must still own its
    # forward: it ends when ec2's ssh ends, not with the master.
    from test_e2e import serve_http

    host = fresh_host
    port = free_port()
    serve_http(host, port, tmp_path)
    config = tmp_path / "multiplexing"
    sockets = tempfile.mkdtemp(prefix="ec2cm")  # a socket's path must be short
    config.write_text(f"Host instance\n  ControlMaster auto\n  ControlPath {sockets}/%C\n"
                      f"  ControlPersist yes\nInclude {host.ssh_config}\n")
    subprocess.run(["ssh", "-F", str(config), "instance", "true"], check=True, timeout=30,
                   stdin=subprocess.DEVNULL, capture_output=True)
    check = subprocess.run(["ssh", "-F", str(config), "-O", "check", "instance"], capture_output=True,
                           text=True, timeout=30)
    master = int(re.search(r"pid=(\d+)", check.stderr).group(1))
    try:
        terminal.type(shlex.join(["ec2", "-H", "instance", "-j", "--jupyter-port", str(port),
                                  "--", "-F", str(config)]))
        terminal.wait_for_foreground("ssh")
        wait_until(lambda: not free(port), what="the forward")
        terminal.type("exit")
        terminal.wait_for_foreground("bash")
        wait_until(lambda: free(port), what="the forward to end with ec2's ssh")
        assert os.path.exists(f"/proc/{master}")  # while the master goes on
    finally:
        stop_pid(master)
        shutil.rmtree(sockets)
