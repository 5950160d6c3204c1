"""ec2 against a real OpenSSH server and a real tmux, typed into a terminal.

The instance is sshd in a network namespace (the `host` fixture); the person
is a tmux pane on a private socket (the `terminal` fixture).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request

import pytest

from conftest import EC2, ec2, free_port, held_port, stop_pid, wait_until


def attached(host, session):
    """Wait until the instance's tmux has a client attached to SESSION."""
    wait_until(lambda: (session, "1") in host.sessions(attached=True),
               what=f"a client attached to {session!r}: {host.sessions(attached=True)}")


def detach(terminal):
    """Type C-b d, and wait for this detach's message (not an earlier one's)."""
    before = terminal.screen().count("[detached (from session ")
    terminal.keys("C-b", "d")
    wait_until(lambda: terminal.screen().count("[detached (from session ") > before,
               what=f"the detach message:\n{terminal.screen()}")


def test_creates_session_types_into_it_detaches_and_reattaches(fresh_host, terminal, tmp_path):
    host = fresh_host
    terminal.type(host.ec2_line("work"))
    attached(host, "work")
    assert host.sessions() == ["work"]

    marker = tmp_path / "typed"
    terminal.type(f"echo typed-$((6 * 7)) > {marker}; echo shown-$((6 * 7))")
    wait_until(lambda: marker.exists() and marker.read_text() == "typed-42\n", what="typed command")
    terminal.wait_for("shown-42")

    detach(terminal)
    terminal.type("echo back-$((1 + 1))")
    terminal.wait_for("back-2")  # the local shell has the terminal again
    assert host.sessions() == ["work"]  # detaching left the session running

    terminal.type("clear; " + host.ec2_line("work"))
    attached(host, "work")
    terminal.wait_for("shown-42")  # the same session, with what was typed before
    assert host.sessions() == ["work"]  # attached, not created a second time
    detach(terminal)


def test_list_shows_no_sessions_then_the_session(fresh_host, terminal):
    done = fresh_host.run_ec2("--list")
    assert (done.returncode, done.stdout) == (0, "no sessions on instance\n"), done.stderr
    terminal.type(fresh_host.ec2_line("analysis"))
    attached(fresh_host, "analysis")
    done = fresh_host.run_ec2("--list")
    assert done.returncode == 0 and done.stdout.startswith("analysis: 1 windows"), done.stdout
    detach(terminal)


def test_unicode_session_name_reaches_tmux_intact(fresh_host, terminal):
    terminal.type(fresh_host.ec2_line("données"))
    attached(fresh_host, "données")
    assert fresh_host.sessions() == ["données"]  # shown as donn_es without a UTF-8 locale
    detach(terminal)


def test_exit_status_of_the_remote_shell_comes_back(fresh_host, terminal):
    terminal.type(fresh_host.ec2_line())
    terminal.wait_for_foreground("ssh")  # ec2 replaced itself with ssh
    terminal.type("echo remote-$((2 + 3))")
    terminal.wait_for("remote-5")
    terminal.type("exit 3")
    terminal.wait_for_foreground("bash")
    terminal.type("echo status=$?")
    terminal.wait_for("status=3")


def serve_http(host, port, tmp_path):
    """An HTTP server on the instance's own loopback, not reachable from here."""
    root = tmp_path / "www"
    root.mkdir()
    token = f"served-by-the-instance-{port}"
    (root / "api").write_text(token)
    host.spawn(sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
               "--directory", str(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)"
    wait_until(lambda: subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, "-c", probe],
                                      capture_output=True).returncode == 0,
               what="the HTTP server on the instance")
    return token


def fetch(port):
    with urllib.request.urlopen(f"http://localhost:{port}/api", timeout=5) as response:
        return response.status, response.read().decode()


def test_jupyter_forward_carries_http_to_the_instance(fresh_host, terminal, tmp_path):
    port = free_port()
    token = serve_http(fresh_host, port, tmp_path)
    with pytest.raises(OSError):
        fetch(port)  # nothing here listens yet: the page can only come through ssh
    terminal.type(fresh_host.ec2_line("-j", "--jupyter-port", str(port)))
    terminal.wait_for(f"Jupyter: http://localhost:{port} -> instance port {port}")
    assert wait_until(lambda: _try_fetch(port), what="the forward") == (200, token)


def _try_fetch(port):
    try:
        return fetch(port)
    except OSError:
        return None


def test_taken_jupyter_port_moves_and_the_notice_survives_tmux(fresh_host, terminal, tmp_path):
    port = free_port()
    token = serve_http(fresh_host, port, tmp_path)
    with held_port(port, "::1"):  # taken on ::1 only
        terminal.type(fresh_host.ec2_line("nb", "-j", "--jupyter-port", str(port)))
        attached(fresh_host, "nb")
        assert "Jupyter: http://localhost:" not in terminal.screen()  # tmux painted over it
        moved = int(re.search(r"Jupyter: http://localhost:(\d+) ", terminal.hidden_screen()).group(1))
        assert moved != port
        assert wait_until(lambda: _try_fetch(moved), what="the moved forward") == (200, token)
        detach(terminal)
    # After detaching, the notice is on screen again.
    terminal.wait_for(f"Jupyter: http://localhost:{moved} -> instance port {port} ({port} is in use here)")


HOSTILE = {
    "semicolon": "x;touch {m}",
    "substitution": "$(touch {m})",
    "backticks": "`touch {m}`",
    "quote-breakout": "x' ; touch {m} '",
    "tmux-format": "x#(touch {m})",
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_session_names_are_refused_and_run_nothing(fresh_host, terminal, tmp_path, kind):
    marker = tmp_path / f"pwned-{kind}"
    fresh_host.tmux("new-session", "-d", "-s", "keep")  # a server that would run #()
    terminal.type(fresh_host.ec2_line(HOSTILE[kind].format(m=marker)) + "; echo exit=$?")
    terminal.wait_for("exit=2")
    assert "invalid session name" in terminal.screen()
    assert fresh_host.sessions() == ["keep"]
    assert not marker.exists()


@pytest.mark.parametrize("kind", [k for k in HOSTILE if k != "tmux-format"])
def test_quoted_remote_words_reach_tmux_as_one_inert_word(fresh_host, tmp_path, kind):
    # Past ec2's name check, the quoting alone keeps the remote shell from
    # acting: send the words ec2 builds for a hostile name through real ssh.
    marker = tmp_path / f"pwned-{kind}"
    command = ec2.remote_tmux_command(HOSTILE[kind].format(m=marker))
    done = subprocess.run(["ssh", "-F", str(fresh_host.ssh_config), "instance", *command],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert "not a terminal" in done.stderr, done.stderr  # tmux itself got the name
    assert not marker.exists()


def test_unquoted_words_would_run_a_command(fresh_host, tmp_path):
    # The control for the test above: without quoting the same name runs
    # touch on the instance, so a marker check there can fail.
    marker = tmp_path / "ran"
    subprocess.run(["ssh", "-F", str(fresh_host.ssh_config), "instance",
                    "tmux", "-2", "new-session", "-A", "-s", f"x;touch {marker}"],
                   capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert marker.exists()


def test_tmux_runs_format_commands_in_session_names(fresh_host, tmp_path):
    # Why quoting is not enough and ec2 refuses '#': tmux itself runs #(...).
    marker = tmp_path / "format-ran"
    fresh_host.tmux("new-session", "-d", "-s", f"x#(touch {marker})")
    wait_until(marker.exists, what="tmux running the #() command")


def login_profile(host, tmp_path, **keys):
    """A config whose [box] reaches the host by its address, with no ssh config but ssh_options."""
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    options = (f"-F /dev/null -o UserKnownHostsFile={host.base}/known_hosts -o GlobalKnownHostsFile=/dev/null"
               " -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR")
    settings = {"host": host.address, "user": user, "identity": str(host.base / "user_key"),
                "ssh_options": options, **keys}
    config = tmp_path / "config"
    config.write_text("[box]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items() if v is not None))
    return config


def run_ec2(config, *args):
    return subprocess.run([sys.executable, str(EC2), "--config", str(config), "-H", "box", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_profiles_identity_and_user_log_in(fresh_host, tmp_path):
    done = run_ec2(login_profile(fresh_host, tmp_path), "--list")
    assert (done.returncode, done.stdout) == (0, f"no sessions on {done.stdout.split()[-1]}\n"), done.stderr
    assert done.stdout.split()[-1].endswith(f"@{fresh_host.address}")


@pytest.mark.parametrize("missing", ["identity", "user"])
def test_without_the_profiles_identity_or_user_there_is_no_login(fresh_host, tmp_path, missing):
    # The control for the test above: the login rests on those two keys.
    keys = {"identity": None} if missing == "identity" else {"user": "nobody-here"}
    done = run_ec2(login_profile(fresh_host, tmp_path, **keys), "--list")
    assert done.returncode == 255 and "Permission denied" in done.stderr


def test_an_explicit_forward_reaches_the_instance(fresh_host, terminal, tmp_path):
    remote, local = free_port(), free_port()
    token = serve_http(fresh_host, remote, tmp_path)
    config = login_profile(fresh_host, tmp_path)
    terminal.type(shlex.join(["ec2", "--config", str(config), "-H", "box", "-L", f"{local}:{remote}"]))
    terminal.wait_for_foreground("ssh")
    assert wait_until(lambda: _try_fetch(local), what="the -L forward") == (200, token)


def test_a_port_taken_after_ecs_check_ends_ssh(fresh_host, tmp_path):
    # A stand-in ssh has the port taken on both loopbacks, by a process of
    # its own (ssh closes the descriptors it inherits), between ec2's check
    # and the real ssh's bind: ExitOnForwardFailure must then end ssh,
    # rather than leave a session without the forward.
    port = free_port()
    holder = tmp_path / "holder.pid"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"""#!{sys.executable}
import os, socket, sys, time
ready_r, ready_w = os.pipe()
if os.fork() == 0:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # not holding ec2's pipes open
    held = [socket.socket(family) for family in (socket.AF_INET, socket.AF_INET6)]
    for s, address in zip(held, ("127.0.0.1", "::1")):
        s.bind((address, {port}))
        s.listen()
    open({str(holder)!r}, "w").write(str(os.getpid()))
    os.write(ready_w, b"x")
    time.sleep(60)
    os._exit(0)
os.read(ready_r, 1)
os.execv({shutil.which("ssh")!r}, ["ssh", *sys.argv[1:]])
""")
    (bin_dir / "ssh").chmod(0o755)
    config = login_profile(fresh_host, tmp_path)
    try:
        done = subprocess.run([sys.executable, str(EC2), "--config", str(config), "-H", "box", "-j",
                               "--jupyter-port", str(port)], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL,
                              env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    finally:
        if holder.exists():
            stop_pid(int(holder.read_text()))
    assert done.returncode == 255, done.stderr
    assert "Could not request local forwarding" in done.stderr
