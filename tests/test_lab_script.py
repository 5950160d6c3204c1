"""LAB_SCRIPT run by a real sh against a real tmux on a private socket, without ssh.

Fast and without root: the login shell is bash with a home of the test's
own (conftest.INSTANCE_HOME), and the server a small stand-in for Jupyter
that writes its runtime file as Jupyter does, or fails as told.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import INSTANCE_HOME, ec2, skip_or_fail, stop_pid

FAKE_JUPYTER = """#!{python}
# Serves nothing: writes its runtime file as Jupyter does, at JUPYTER_PORT,
# then waits; or, told by its arguments, fails first.
import json, os, sys, time
if "--crash" in sys.argv:
    print("Traceback (most recent call last):")
    print("ValueError: No such directory: '/nowhere'")
    sys.exit(3)
if "--never" in sys.argv:
    time.sleep(600)
port = int(os.environ.get("JUPYTER_PORT", "8888"))
info = dict(port=port, token="tok-" + str(os.getpid()), base_url="/", hostname="localhost",
            pid=os.getpid(), env=os.environ.get("CONDA_DEFAULT_ENV"))
path = os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], "jpserver-%d.json" % os.getpid())
with open(path + ".new", "w") as f:
    json.dump(info, f)
os.rename(path + ".new", path)
time.sleep(600)
"""


class Instance:
    """sh, tmux and bash as the instance has them, on this machine."""

    def __init__(self, tmp_path):
        self.home = tmp_path / "home"
        for name, text in INSTANCE_HOME.items():
            (self.home / name).parent.mkdir(parents=True, exist_ok=True)
            (self.home / name).write_text(text)
        for env in ("base", "second"):
            (self.home / "envs" / env / "bin").mkdir(parents=True)
            jupyter = self.home / "envs" / env / "bin" / "jupyter"
            jupyter.write_text(FAKE_JUPYTER.format(python=sys.executable))
            jupyter.chmod(0o755)
        (self.home / "envs" / "empty" / "bin").mkdir(parents=True)
        self.runtime = tmp_path / "runtime"
        self.runtime.mkdir()
        self.tmux_dir = tmp_path / "tmux"
        self.tmux_dir.mkdir(mode=0o700)
        self.env = {"HOME": str(self.home), "SHELL": shutil.which("bash"), "PATH": os.environ["PATH"],
                    "TMUX_TMPDIR": str(self.tmux_dir), "JUPYTER_RUNTIME_DIR": str(self.runtime),
                    "LANG": "C.UTF-8", "TERM": "screen"}

    def lab(self, session="work", port=8890, timeout=10, conda_env="", command="jupyter lab", path=None):
        """Run LAB_SCRIPT as ssh would; return ec2's reading of its answer (or the Failure)."""
        env = {**self.env, "PATH": path or self.env["PATH"]}
        done = subprocess.run(["sh", "-c", ec2.LAB_SCRIPT, "sh", session, str(port), str(timeout),
                               conda_env, command], env=env, capture_output=True, text=True,
                              timeout=timeout + 20)
        assert done.returncode == 0, done.stderr
        self.output = done.stdout
        profile = ec2.Profile("gpu", "/cfg")
        profile.lab_command, profile.lab_timeout = command, timeout
        try:
            return ec2.lab_server(done.stdout[done.stdout.index("ec2-lab ready") if "ec2-lab ready"
                                                in done.stdout else done.stdout.rindex("ec2-lab "):],
                                  "box", "the window", profile, "rerun")
        except ec2.Failure as e:
            return e

    def tmux(self, *args):
        return subprocess.run(["tmux", *args], env=self.env, capture_output=True, text=True)

    def window_pid(self, session):
        done = self.tmux("display-message", "-p", "-t", f"{session}:jupyter", "#{pane_pid}")
        return int(done.stdout) if done.returncode == 0 and done.stdout.strip() else None

    def stop(self):
        for pid in self.tmux("list-panes", "-a", "-F", "#{pane_pid}").stdout.split():
            stop_pid(int(pid), timeout=3, signals=(signal.SIGHUP, signal.SIGTERM, signal.SIGKILL))
        done = self.tmux("display-message", "-p", "#{pid}")
        if done.returncode == 0 and done.stdout.strip().isdigit():
            stop_pid(int(done.stdout))


@pytest.fixture
def instance(tmp_path):
    if not shutil.which("tmux") or not shutil.which("bash"):
        skip_or_fail("these tests need tmux and bash (apt-get install tmux)")
    instance = Instance(tmp_path)
    yield instance
    instance.stop()


def test_starts_the_server_as_the_windows_own_process(instance):
    info = instance.lab(port=8899)
    assert "ec2-lab starting" in instance.output
    assert info["ec2_reused"] == "window"
    assert info["pid"] == instance.window_pid("work")
    assert info["port"] == 8899  # asked for through JUPYTER_PORT


def test_a_second_run_uses_the_running_server(instance):
    first = instance.lab()
    second = instance.lab()
    assert "ec2-lab starting" not in instance.output
    assert (second["pid"], second["ec2_reused"]) == (first["pid"], "window")
    assert len(list(instance.runtime.glob("jpserver-*.json"))) == 1


def test_a_server_started_elsewhere_is_used(instance, tmp_path):
    other = subprocess.Popen(["sleep", "600"])
    try:
        (instance.runtime / f"jpserver-{other.pid}.json").write_text(json.dumps({"port": 7777}))
        info = instance.lab()
        assert (info["port"], info["ec2_reused"]) == (7777, "other")
        assert instance.tmux("has-session", "-t", "work").returncode == 1  # nothing started
    finally:
        stop_pid(other.pid)


def test_a_stale_runtime_file_is_no_server(instance):
    child = subprocess.Popen(["true"])
    child.wait()
    (instance.runtime / f"jpserver-{child.pid}.json").write_text(json.dumps({"port": 7777}))
    info = instance.lab(port=8891)
    assert info["port"] == 8891 and info["pid"] == instance.window_pid("work")


def test_the_users_current_window_stays_current(instance):
    instance.tmux("new-session", "-d", "-s", "work", "-n", "mine")
    instance.lab()
    windows = instance.tmux("list-windows", "-t", "work", "-F", "#{window_name} #{window_active}")
    assert windows.stdout.splitlines() == ["mine 1", "jupyter 0"]


def test_a_session_whose_name_begins_the_same_is_not_taken_for_it(instance):
    instance.tmux("new-session", "-d", "-s", "work2")
    instance.lab(session="work")
    sessions = instance.tmux("list-sessions", "-F", "#{session_name} #{session_windows}").stdout
    assert sorted(sessions.splitlines()) == ["work 2", "work2 1"]


def test_conda_env_is_activated_first(instance):
    info = instance.lab(conda_env="second", command="jupyter")
    assert info["env"] == "second"


def test_jupyter_not_found_is_status_127(instance):
    failure = instance.lab(conda_env="empty", command="jupyter lab")
    assert isinstance(failure, ec2.Failure)
    assert str(failure).startswith("`jupyter lab` was not found on box by `")
    assert "-lic` (your login shell" in str(failure)


def test_a_crash_leaves_its_output_in_the_window(instance):
    failure = instance.lab(command="jupyter --crash")
    assert isinstance(failure, ec2.Failure)
    assert "Jupyter exited with status 3 while starting" in str(failure)
    assert str(failure).endswith("ValueError: No such directory: '/nowhere'")
    window = instance.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "work:jupyter").stdout
    assert "ValueError: No such directory" in window


def test_a_dead_window_is_started_again(instance):
    assert isinstance(instance.lab(command="jupyter --crash"), ec2.Failure)
    info = instance.lab()
    assert info["pid"] == instance.window_pid("work")
    assert instance.tmux("list-windows", "-t", "work", "-F", "#{window_name}").stdout.count("jupyter") == 1


def test_a_window_still_starting_is_waited_for_not_started_again(instance):
    failure = instance.lab(command="jupyter --never", timeout=1)
    assert str(failure).startswith("Jupyter did not answer within 1 s (lab_timeout)")
    pid = instance.window_pid("work")
    assert isinstance(instance.lab(command="jupyter --never", timeout=1), ec2.Failure)
    assert "ec2-lab waiting" in instance.output
    assert instance.window_pid("work") == pid


def test_progress_is_counted_in_seconds(instance):
    instance.lab(command="jupyter --never", timeout=2)
    assert [line for line in instance.output.splitlines() if line.startswith("ec2-lab wait")] == [
        "ec2-lab wait 0", "ec2-lab wait 1"]


def test_without_tmux(instance, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "cat", "grep", "date", "sleep"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    failure = instance.lab(path=str(bin_dir))
    assert str(failure).startswith("tmux is not installed on box")


def test_the_server_is_the_windows_process_when_the_shell_would_not_exec_it(instance):
    # bash runs a lone command in place of itself, unless a trap is set (as
    # history-saving set-ups do): then only ec2's `exec` makes the server
    # the window's own process.
    with open(instance.home / ".bashrc", "a") as f:
        f.write("trap 'history -a' EXIT\n")
    info = instance.lab()
    assert info["pid"] == instance.window_pid("work")


# --- the login shell: what its interactive start-up puts on PATH, Jupyter finds ------------

# Each shell's start-up file, with Jupyter's directory on PATH only where the shell is interactive.
STARTUP = {
    "bash": {},  # INSTANCE_HOME's ~/.bashrc, as conda init leaves it
    "zsh": {".zshrc": "if [[ -o interactive ]]; then\n    export PATH=$HOME/envs/base/bin:$PATH\nfi\n"},
    "fish": {".config/fish/config.fish":
             "if status is-interactive\n    set -gx PATH $HOME/envs/base/bin $PATH\nend\n"},
    "csh": {".cshrc": "if ($?prompt) then\n    setenv PATH $HOME/envs/base/bin:$PATH\nendif\n"},
    "tcsh": {".tcshrc": "if ($?prompt) then\n    setenv PATH $HOME/envs/base/bin:$PATH\nendif\n"},
}


def with_login_shell(instance, name, files=None):
    shell = shutil.which(name)
    if not shell:
        skip_or_fail(f"these tests need {name} (apt-get install {name})")
    for path, text in (STARTUP[name] if files is None else files).items():
        (instance.home / path).parent.mkdir(parents=True, exist_ok=True)
        (instance.home / path).write_text(text)
    instance.env["SHELL"] = shell  # tmux's default shell too, which reads the window's command
    # The PATH of an ssh command, where no jupyter is.
    instance.env["PATH"] = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                                           if not os.path.exists(os.path.join(d, "jupyter")))
    return shell


@pytest.mark.parametrize("name", list(STARTUP))
def test_each_login_shell_finds_jupyter_where_its_interactive_start_up_puts_it(instance, name):
    with_login_shell(instance, name)
    assert not shutil.which("jupyter", path=instance.env["PATH"])
    info = instance.lab(port=8897)
    assert not isinstance(info, ec2.Failure), info
    assert info["pid"] == instance.window_pid("work") and info["port"] == 8897


def test_tcsh_reads_cshrc_when_it_has_no_tcshrc(instance):
    with_login_shell(instance, "tcsh", {".cshrc": STARTUP["tcsh"][".tcshrc"]})
    assert not isinstance(instance.lab(), ec2.Failure)


@pytest.mark.parametrize("name", ["csh", "tcsh"])
def test_csh_says_command_not_found_and_that_is_not_found(instance, name):
    shell = with_login_shell(instance, name)
    failure = instance.lab(command="jupyter-nowhere lab")
    assert isinstance(failure, ec2.Failure)
    assert str(failure).startswith(f"`jupyter-nowhere lab` was not found on box by `{shell} -fc`"
                                   f" (your login shell, which reads ~/.{name}rc as an interactive"
                                   " shell does)")
    assert str(failure).endswith("its last lines:\n  jupyter-nowhere: Command not found.")
