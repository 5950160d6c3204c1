"""--lab without an instance: its arguments, its script, its answers, its browser helper."""

import http.server
import io
import json
import os
import re
import shlex
import sys
import threading
import time

import pytest

from conftest import ec2, free_port, wait_until, write_config

INFO = {"base_url": "/", "hostname": "localhost", "pid": 4242, "port": 8890, "root_dir": "/home/u",
        "secure": False, "sock": "", "token": "s3cret", "url": "http://localhost:8890/"}


def dry_lines(ec2_run, *args):
    status, argv, out, err = ec2_run("--dry-run", *args)
    assert status == 0 and argv is None, err
    return out.splitlines(), err


def remote_args(prep_line):
    """The arguments LAB_SCRIPT gets on the instance, from the printed ssh command."""
    words = shlex.split(prep_line)
    at = words.index("sh")
    assert words[at + 1] == "-c" and shlex.split(words[at + 2]) == [ec2.LAB_SCRIPT]
    return [shlex.split(word)[0] if word != "''" else "" for word in words[at + 4:]]


# --- the command line ----------------------------------------------------------


def test_lab_defaults_to_session_lab_and_prints_both_commands(ec2_run):
    lines, err = dry_lines(ec2_run, "--lab", "-H", "box")
    assert lines[0] == ("# find Jupyter on the instance, or start it in window 'jupyter'"
                        " of tmux session 'lab':")
    assert remote_args(lines[1]) == ["lab", "8888", "90", "", "jupyter lab --no-browser"]
    assert lines[2].startswith("# then connect")
    assert shlex.split(lines[3])[-7:] == ["-t", "box", "tmux", "-2", "new-session", "-A", "-s", "lab"][-7:]
    assert "-L" in shlex.split(lines[3]) and "Jupyter: http://localhost:" in err


def test_lab_takes_the_session_the_port_and_the_profile_settings(ec2_run, clean_env):
    write_config(clean_env, "[gpu]\nhost = box\nconda_env = torch-2.1\nlab_timeout = 30\n"
                 "lab_command = jupyter lab --no-browser --notebook-dir=~/work\n")
    lines, _ = dry_lines(ec2_run, "work", "--lab", "-H", "gpu", "--jupyter-port", "9999")
    assert remote_args(lines[1]) == ["work", "9999", "30", "torch-2.1",
                                     "jupyter lab --no-browser --notebook-dir=~/work"]
    assert "9999:localhost:9999" in shlex.split(lines[3])


def test_lab_command_reaches_the_instance_as_one_word(ec2_run, clean_env):
    hostile = """jupyter lab; touch /tmp/x '$(id)' "`id`" \\ \\\\ !!"""
    write_config(clean_env, f"[gpu]\nhost = box\nlab_command = {hostile}\n")
    lines, _ = dry_lines(ec2_run, "--lab", "-H", "gpu")
    assert remote_args(lines[1])[-1] == hostile


@pytest.mark.parametrize("args, message", [
    (["--lab", "--list"], "--lab does not go with --list"),
    (["--lab", "--urls"], "--lab does not go with --urls"),
    (["--lab", "--open"], "--lab does not go with --urls"),
    (["--lab", "--status"], "--lab does not go with --status"),
    (["--lab", "--stop"], "--lab does not go with --stop"),
    (["--no-browser"], "--no-browser goes with --lab only"),
    (["work", "-j", "--no-browser"], "--no-browser goes with --lab only"),
])
def test_lab_usage_errors(ec2_run, args, message):
    status, argv, _, err = ec2_run(*args, "-H", "box")
    assert (status, argv) == (2, None)
    assert err.splitlines()[-1] == f"ec2: error: {message}"


@pytest.mark.parametrize("key, value, message", [
    ("conda_env", "x;touch y", "invalid conda environment"),
    ("conda_env", "$(id)", "invalid conda environment"),
    ("conda_env", "-n", "invalid conda environment"),
    ("conda_env", "my env", "invalid conda environment"),
    ("conda_env", "ünï", "invalid conda environment"),
    ("lab_timeout", "0", "not a number of seconds"),
    ("lab_timeout", "3601", "not a number of seconds"),
    ("lab_timeout", "1.5", "not a number of seconds"),
    ("open_browser", "maybe", "neither yes nor no"),
    ("lab_command", "jupyter\n  lab", "must be one line"),
])
def test_lab_profile_keys_are_checked(ec2_run, clean_env, key, value, message):
    path = write_config(clean_env, f"[gpu]\nhost = box\n{key} = {value}\n")
    status, argv, _, err = ec2_run("--lab", "-H", "gpu", "--dry-run")
    assert (status, argv) == (1, None)
    assert err.startswith(f"ec2: {path}: [gpu] {key}: ") and message in err


@pytest.mark.parametrize("value, expected", [("torch", "torch"), ("/opt/envs/py3.11", "/opt/envs/py3.11"),
                                             ("a_b-c+d", "a_b-c+d")])
def test_conda_env_names_and_paths_are_accepted(value, expected):
    assert ec2.conda_env_name(value) == expected


@pytest.mark.parametrize("value, expected", [("yes", True), ("No", False), ("on", True), ("0", False)])
def test_open_browser_reads_yes_and_no(value, expected):
    assert ec2.yes_no(value) is expected


def test_forwards_are_never_multiplexed():
    forward = ec2.forward_spec("8888")
    assert "ControlPath=none" in ec2.build_ssh_argv("box", forwards=[forward])
    assert "ControlPath=none" not in ec2.build_ssh_argv("box")


@pytest.mark.parametrize("name", ["LAB_SCRIPT", "JUPYTER_SCRIPT"])
def test_scripts_read_the_same_to_every_login_shell(name):
    script = getattr(ec2, name)
    assert "\n" not in script and "'" not in script and "!" not in script
    assert re.findall(r"\\(.)", script) == [c for c in re.findall(r"\\(.)", script) if c in '"$']


# --- what the instance answers ---------------------------------------------------


def answer(head, body=""):
    return head + "\n" + body


def lab_server(text, **profile_settings):
    profile = ec2.Profile("gpu", "/cfg")
    for key, value in profile_settings.items():
        setattr(profile, key, value)
    return ec2.lab_server(text, "box", "window 'jupyter' of tmux session 'work'", profile,
                          "ec2 -H gpu work --lab")


@pytest.mark.parametrize("how", ["window", "other"])
def test_a_ready_server_is_read_from_its_runtime_file(how):
    info = lab_server(answer(f"ec2-lab ready {how} /r/jpserver-4242.json", json.dumps(INFO)))
    assert info["port"] == 8890 and info["token"] == "s3cret" and info["ec2_reused"] == how


def test_a_runtime_file_path_may_have_spaces():
    info = lab_server(answer("ec2-lab ready other /my dir/jpserver-1.json", json.dumps(INFO)))
    assert info["port"] == 8890


def test_a_half_written_runtime_file_says_to_try_again():
    with pytest.raises(ec2.Failure, match=r"^/r/jpserver-1.json on box is not a complete Jupyter"
                       r" server file; try again: ec2 -H gpu work --lab$"):
        lab_server(answer("ec2-lab ready window /r/jpserver-1.json", '{"port": 88'))


def test_a_server_on_a_unix_socket_cannot_be_forwarded_by_port():
    with pytest.raises(ec2.Failure, match="listens on a Unix socket, /run/j.sock"):
        lab_server(answer("ec2-lab ready other /r/jpserver-1.json",
                          json.dumps({**INFO, "sock": "/run/j.sock", "port": 0})))


def test_tmux_missing():
    with pytest.raises(ec2.Failure, match=r"^tmux is not installed on box .*install tmux there$"):
        lab_server(answer("ec2-lab no-tmux"))


def test_tmux_error_is_shown():
    with pytest.raises(ec2.Failure, match=r"could not make window 'jupyter' of tmux session 'work':"
                       r" create window failed: index 3 in use$"):
        lab_server(answer("ec2-lab tmux-error", "create window failed:\nindex 3 in use\n"))


def test_jupyter_not_found_says_how_it_was_looked_for_and_what_to_do():
    with pytest.raises(ec2.Failure) as e:
        lab_server(answer("ec2-lab exited 127 -lic /bin/bash", "bash: exec: jupyter: not found\n"
                          "Pane is dead (status 127, Fri)\n"))
    message = str(e.value)
    assert message.startswith("`jupyter lab --no-browser` was not found on box by `/bin/bash -lic`")
    assert "pip install jupyterlab" in message
    assert "'conda_env =' or 'lab_command =' in [gpu] of /cfg" in message
    assert message.endswith("its last lines:\n  bash: exec: jupyter: not found")


def test_a_crash_gives_the_status_and_the_last_lines():
    window = "".join(f"line {n}\n" for n in range(50)) + "\n\nValueError: no such dir\n\n"
    with pytest.raises(ec2.Failure) as e:
        lab_server(answer("ec2-lab exited 1 -lic /bin/zsh", window))
    head, *lines = str(e.value).splitlines()
    assert head == ("Jupyter exited with status 1 while starting on box; window 'jupyter' of tmux"
                    " session 'work' keeps its output until the next --lab; its last lines:")
    assert len(lines) == ec2.LAB_TAIL_LINES
    assert lines[0] == "  line 21" and lines[-1] == "  ValueError: no such dir"


def test_an_exit_status_tmux_does_not_know_is_left_out():
    with pytest.raises(ec2.Failure, match=r"^Jupyter exited while starting on box; .*--lab$"):
        lab_server(answer("ec2-lab exited ? -ic /bin/tcsh"))


def test_timeout_names_the_setting_and_the_rerun():
    with pytest.raises(ec2.Failure) as e:
        lab_server(answer("ec2-lab timeout", "[I 12:00] loading extensions\n"), lab_timeout=5)
    assert str(e.value) == (
        "Jupyter did not answer within 5 s (lab_timeout); it is still starting in window"
        " 'jupyter' of tmux session 'work', and `ec2 -H gpu work --lab` uses it once it is up;"
        " its last lines:\n  [I 12:00] loading extensions")


def test_an_answer_from_something_else_is_not_taken_for_a_server():
    with pytest.raises(ec2.Failure, match="unexpected answer from box: ec2-lab ready"):
        lab_server(answer("ec2-lab ready"))


def progress(monkeypatch, lines, tty):
    """Run run_lab_script on a stand-in for ssh that prints LINES; return (result, stderr)."""
    stderr = io.StringIO()
    stderr.isatty = lambda: tty
    monkeypatch.setattr(sys, "stderr", stderr)
    argv = [sys.executable, "-c", f"print({chr(10).join(lines)!r})"]
    return ec2.run_lab_script(argv, "window 'jupyter' of tmux session 'work'"), stderr.getvalue()


def test_progress_without_a_terminal_is_two_lines(monkeypatch):
    (result, started), err = progress(monkeypatch, [
        "motd noise", "ec2-lab starting", "ec2-lab wait 0", "ec2-lab wait 1",
        "ec2-lab ready window /r/f.json", '{"port": 1}'], tty=False)
    assert started and result == 'ec2-lab ready window /r/f.json\n{"port": 1}\n'
    assert err.splitlines()[0] == "ec2: starting Jupyter in window 'jupyter' of tmux session 'work'"
    assert re.fullmatch(r"ec2: Jupyter is ready \(\d+ s\)", err.splitlines()[1])


def test_progress_on_a_terminal_is_one_line_rewritten(monkeypatch):
    _, err = progress(monkeypatch, ["ec2-lab starting", "ec2-lab wait 0", "ec2-lab wait 1",
                                    "ec2-lab ready window /r/f.json", "{}"], tty=True)
    assert err.count("\n") == 1 and "\r" in err
    assert "… 1 s" in err and re.search(r"\r.* … ready \(\d+ s\)\n$", err)


def test_a_reused_server_shows_no_progress(monkeypatch):
    (result, started), err = progress(monkeypatch, ["ec2-lab ready other /r/f.json", "{}"], tty=True)
    assert not started and err == "" and result.startswith("ec2-lab ready other")


def test_a_failed_ssh_gives_no_answer(monkeypatch):
    (result, started), _ = progress(monkeypatch, [], tty=False)
    assert result is None and not started


# --- the browser ---------------------------------------------------------------


def test_redirect_page_leads_to_the_url_and_escapes_it():
    page = ec2.redirect_page('http://localhost:8888/?token=a&b"<')
    assert 'content="0;url=http://localhost:8888/?token=a&amp;b&quot;&lt;"' in page
    assert "token=a&b" not in page


def test_private_files_are_for_their_owner_only(tmp_path):
    ec2.write_private(tmp_path / "p.html", "x")
    assert (tmp_path / "p.html").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("environ, expected", [
    ({}, sys.platform == "darwin"), ({"BROWSER": "firefox"}, True), ({"DISPLAY": ":0"}, True),
    ({"WAYLAND_DISPLAY": "wayland-0"}, True),
    ({"WSL_DISTRO_NAME": "Ubuntu", "PATH": "/nowhere"}, sys.platform == "darwin"),
])
def test_a_browser_is_opened_only_where_there_is_one(environ, expected):
    assert ec2.can_open_browser(environ) is expected


class FakeJupyter(http.server.BaseHTTPRequestHandler):
    body = b'{"version": "2.14.0"}'

    def do_GET(self):
        self.send_response(200 if self.path == "/api" else 404)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def serve_later(port, delay, handler=FakeJupyter, after=lambda: True):
    """An HTTP server on PORT after DELAY seconds, once AFTER() is true; returns (started-at box, stop)."""
    server = http.server.HTTPServer(("localhost", port), handler, bind_and_activate=False)
    began = []

    def run():
        time.sleep(delay)
        while not after():
            time.sleep(0.01)
        server.server_bind()
        server.server_activate()
        began.append(time.monotonic())
        server.serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def stop():
        # shutdown() waits for serve_forever(), so the server must have started.
        wait_until(lambda: began, timeout=delay + 30, what="the server to start")
        server.shutdown()
        thread.join()
        server.server_close()

    return began, stop


def test_the_browser_opens_only_once_jupyter_answers(monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda page: opened.append((page, time.monotonic())) or True)
    port = free_port()
    began, stop = serve_later(port, 0.6)
    try:
        assert ec2.wait_and_open(f"http://localhost:{port}/api", "/p.html", time.monotonic() + 10,
                                 os.getpid())
    finally:
        stop()
    assert opened[0][0] == "file:///p.html" and opened[0][1] >= began[0]


def test_something_else_on_the_port_is_not_jupyter(monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)

    class NotJupyter(FakeJupyter):
        body = b"<html>hello</html>"

    port = free_port()
    _, stop = serve_later(port, 0, NotJupyter)
    try:
        began = time.monotonic()
        assert not ec2.wait_and_open(f"http://localhost:{port}/api", "/p", began + 1.0, os.getpid())
    finally:
        stop()
    assert opened == [] and 1.0 <= time.monotonic() - began < 3


def test_the_helper_gives_up_at_its_deadline(monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    began = time.monotonic()
    assert not ec2.wait_and_open(f"http://localhost:{free_port()}/api", "/p", began + 0.8, os.getpid())
    assert opened == [] and 0.8 <= time.monotonic() - began < 3


def test_the_helper_ends_with_the_ssh_it_waits_for(monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    began = time.monotonic()
    assert not ec2.wait_and_open(f"http://localhost:{free_port()}/api", "/p", began + 30, ended_pid())
    assert opened == [] and time.monotonic() - began < 2


def ended_pid():
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    return child


def test_the_page_of_an_ended_ssh_is_removed_with_its_record(tmp_path):
    (tmp_path / f"{ended_pid()}.html").write_text("token")
    (tmp_path / f"{os.getpid()}.html").write_text("token")
    assert ec2.running_forwards(str(tmp_path), "box") == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{os.getpid()}.html"]


@pytest.mark.parametrize("port", ['"x"', "null", '"8888"'])
def test_a_port_that_is_no_number_is_an_incomplete_file(port):
    text = answer("ec2-lab ready window /r/f.json", '{"port": ' + port + '}')
    if port == '"8888"':
        assert lab_server(text)["port"] == "8888"  # as Jupyter's own files may have it; int() reads it
    else:
        with pytest.raises(ec2.Failure, match="is not a complete Jupyter server file"):
            lab_server(text)


def test_a_short_exited_line_is_an_unexpected_answer():
    with pytest.raises(ec2.Failure, match="^unexpected answer from box: ec2-lab exited 127$"):
        lab_server(answer("ec2-lab exited 127"))


def test_an_unexpected_answer_is_shown_in_200_characters():
    with pytest.raises(ec2.Failure) as e:
        lab_server(answer("ec2-lab what " + "x" * 300))
    assert str(e.value) == "unexpected answer from box: " + ("ec2-lab what " + "x" * 300)[:200]


def test_a_progress_line_without_a_count_is_no_traceback(monkeypatch):
    (result, started), err = progress(monkeypatch, ["ec2-lab starting", "ec2-lab wait",
                                                    "ec2-lab ready window /r/f.json", "{}"], tty=True)
    assert started and result.startswith("ec2-lab ready") and "ready (" in err
