"""ec2 --urls, in parts: URLs, the listing script, and the forward records."""

import json
import os
import subprocess

import pytest

from conftest import ec2, free_port, held_port

INFO = {"base_url": "/", "hostname": "localhost", "password": False, "pid": 1, "port": 8888,
        "root_dir": "/home/ubuntu", "secure": False, "sock": "", "token": "abc123"}


@pytest.mark.parametrize("changes, url", [
    ({}, "http://localhost:8888/?token=abc123"),
    ({"base_url": "/nb/"}, "http://localhost:8888/nb/?token=abc123"),
    ({"base_url": "nb/lab"}, "http://localhost:8888/nb/lab/?token=abc123"),
    ({"token": ""}, "http://localhost:8888/"),
    ({"token": "", "password": True}, "http://localhost:8888/"),
    ({"secure": True}, "https://localhost:8888/?token=abc123"),
    ({"token": "a&b=c d"}, "http://localhost:8888/?token=a%26b%3Dc%20d"),
    ({"hostname": "::1"}, "http://localhost:8888/?token=abc123"),
])
def test_jupyter_url(changes, url):
    assert ec2.jupyter_url({**INFO, **changes}, 8888) == url


def test_url_uses_the_local_port_not_the_servers():
    assert ec2.jupyter_url({**INFO, "port": 8888}, 8891) == "http://localhost:8891/?token=abc123"


@pytest.mark.parametrize("hostname, host", [
    ("localhost", "localhost"), ("127.0.0.1", "localhost"), ("::1", "localhost"),
    ("0.0.0.0", "localhost"), ("::", "localhost"), ("", "localhost"),
    ("10.0.0.5", "10.0.0.5"), ("fd00::5", "fd00::5"),
])
def test_forward_host(hostname, host):
    assert ec2.forward_host({"hostname": hostname}) == host


def listing(*files):
    """What the remote script prints for (state, path, text) files."""
    return "".join(f"\n{ec2.JUPYTER_MARK} {state} {path}\n{text}" for state, path, text in files)


def test_listing_keeps_running_servers_and_notes_broken_files():
    text = listing(
        ("running", "/r/jpserver-1.json", json.dumps(INFO, indent=1)),
        ("stopped", "/r/jpserver-2.json", json.dumps({**INFO, "port": 9999})),
        ("running", "/r/jpserver-3.json", json.dumps(INFO)[:40]),
        ("running", "/r/nbserver-4.json", "cat: /r/nbserver-4.json: Permission denied"),
    )
    servers, notes = ec2.read_jupyter_servers(text)
    assert servers == [INFO]
    assert notes == ["skipped /r/jpserver-3.json: not a complete Jupyter server file",
                     "skipped /r/nbserver-4.json: not a complete Jupyter server file"]


@pytest.mark.parametrize("port", [0, 8888])  # a socket, whatever port the file gives
def test_a_unix_socket_server_is_skipped_with_a_note(port):
    info = {**INFO, "port": port, "sock": "/run/j.sock"}
    text = listing(("running", "/r/jpserver-5.json", json.dumps(info)))
    servers, notes = ec2.read_jupyter_servers(text)
    assert servers == [] and notes == [
        "skipped /r/jpserver-5.json: the server listens on a Unix socket, /run/j.sock,"
        " which ssh can forward with -- -L PORT:SOCKET"]


def run_script(env):
    return subprocess.run(["sh", "-c", ec2.JUPYTER_SCRIPT], env=env, capture_output=True, text=True)


@pytest.fixture
def dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("variable, runtime", [
    ("JUPYTER_RUNTIME_DIR", "{v}"),
    ("JUPYTER_DATA_DIR", "{v}/runtime"),
    ("XDG_DATA_HOME", "{v}/jupyter/runtime"),
    ("HOME", "{v}/.local/share/jupyter/runtime"),
])
def test_listing_script_finds_the_runtime_dir_as_jupyter_does(tmp_path, dead_pid, variable, runtime):
    runtime = tmp_path / runtime.format(v="v").lstrip("/")
    runtime.mkdir(parents=True)
    (runtime / f"jpserver-{os.getpid()}.json").write_text(json.dumps({**INFO, "port": 1}))
    (runtime / f"nbserver-{os.getpid()}.json").write_text(json.dumps({**INFO, "port": 2}))
    (runtime / f"jpserver-{dead_pid}.json").write_text(json.dumps({**INFO, "port": 3}))
    (runtime / f"jpserver-{os.getpid()}-open.html").write_text("<html>")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "elsewhere"), variable: str(tmp_path / "v")}
    done = run_script(env)
    assert done.returncode == 0, done.stderr
    servers, notes = ec2.read_jupyter_servers(done.stdout)
    assert sorted(s["port"] for s in servers) == [1, 2] and notes == []


def test_listing_script_with_no_runtime_dir_prints_nothing(tmp_path):
    done = run_script({"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert (done.returncode, done.stdout) == (0, "")


def test_listing_script_is_safe_for_any_login_shell():
    # It travels inside one pair of single quotes: nothing may end them or be
    # expanded inside them by csh ('!') or fish ('\').
    assert not set("'\\!\n") & set(ec2.JUPYTER_SCRIPT)


# --- the records of running forwards -------------------------------------------


def test_record_is_found_while_its_process_holds_the_port(tmp_path):
    forwards, _ = ec2.plan_forwards([], free_port())
    with held_port(forwards[0].local):  # ssh, holding the forward's local port
        ec2.record_forwards(str(tmp_path), "ubuntu@box", forwards)
        found = ec2.running_forwards(str(tmp_path), "ubuntu@box")
        assert found == {("localhost", forwards[0].remote_port): forwards[0].local}
        assert ec2.running_forwards(str(tmp_path), "other-box") == {}
    # Same pid, but the port is free again: not a running forward.
    assert ec2.running_forwards(str(tmp_path), "ubuntu@box") == {}


def test_record_of_an_ended_process_is_removed(tmp_path, dead_pid):
    (tmp_path / str(dead_pid)).write_text("box\n8888 localhost 8888\n")
    (tmp_path / "notes.txt").write_text("not a record")
    assert ec2.running_forwards(str(tmp_path), "box") == {}
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_record_of_a_forward_to_a_loopback_address_reaches_localhost_servers(tmp_path):
    forward = ec2.forward_spec(f"{free_port()}:127.0.0.1:8888")
    with held_port(forward.local):
        ec2.record_forwards(str(tmp_path), "box", [forward])
        assert ec2.running_forwards(str(tmp_path), "box") == {("localhost", 8888): forward.local}


def test_garbled_record_is_ignored(tmp_path):
    (tmp_path / str(os.getpid())).write_text("box\nnonsense\n")
    assert ec2.running_forwards(str(tmp_path), "box") == {}


# --- the lines --urls prints -----------------------------------------------------


def suggest(options):
    import shlex

    return shlex.join(["ec2", "-H", "gpu", *options])


def test_forwarded_server_gets_the_forwards_local_port(capsys):
    urls = ec2.print_jupyter_urls([INFO], {("localhost", 8888): 8893}, 8888, set(), suggest)
    assert urls == ["http://localhost:8893/?token=abc123"]
    assert capsys.readouterr().out == ("http://localhost:8893/?token=abc123"
                                       "  instance port 8888  /home/ubuntu\n")


def test_unforwarded_server_gets_the_command_that_forwards_it(capsys, monkeypatch):
    monkeypatch.setattr(ec2, "port_is_free", lambda port, bind=None: True)
    ec2.print_jupyter_urls([{**INFO, "port": 8889}, INFO], {}, 8888, set(), suggest)
    assert capsys.readouterr().out.splitlines() == [
        "http://localhost:8888/?token=abc123  instance port 8888  /home/ubuntu"
        "  (not forwarded; run: ec2 -H gpu -j)",
        "http://localhost:8889/?token=abc123  instance port 8889  /home/ubuntu"
        "  (not forwarded; run: ec2 -H gpu --jupyter-port 8889 -j)",
    ]


def test_server_on_another_address_gets_a_forward_to_that_address(capsys, monkeypatch):
    monkeypatch.setattr(ec2, "port_is_free", lambda port, bind=None: True)
    ec2.print_jupyter_urls([{**INFO, "hostname": "fd00::5"}], {("localhost", 8888): 8888}, 8888,
                           set(), suggest)
    assert capsys.readouterr().out.endswith("(not forwarded; run: ec2 -H gpu -L '8888:[fd00::5]:8888')\n")


def test_unforwarded_url_uses_the_port_j_would_choose(capsys):
    port = free_port()
    with held_port(port):
        urls = ec2.print_jupyter_urls([{**INFO, "port": port}], {}, 8888, set(), suggest)
    assert urls == [f"http://localhost:{ec2.jupyter_local_port(port + 1)}/?token=abc123"]
