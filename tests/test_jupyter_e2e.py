"""ec2 --urls against real Jupyter servers on the instance (sshd in a namespace)."""

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import free_port, held_port, skip_or_fail, stop_pid, wait_until

TOKEN = "e2e-token-0123456789abcdef"


def start_jupyter(host, tmp_path, name, port, token, base_url="/"):
    """A real jupyter_server on the instance's loopback; returns its pid."""
    root = tmp_path / name
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env.update(JUPYTER_RUNTIME_DIR=str(host.jupyter_runtime), JUPYTER_CONFIG_DIR=str(root / "config"),
               JUPYTER_DATA_DIR=str(root / "data"))
    log = open(tmp_path / f"{name}.log", "w")
    proc = host.spawn(sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                      f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
                      f"--ServerApp.base_url={base_url}", f"--IdentityProvider.token={token}",
                      "--ServerApp.password=", env=env, stdout=log, stderr=log)
    info = host.jupyter_runtime / f"jpserver-{proc.pid}.json"
    wait_until(lambda: proc.poll() is None and info.exists(), timeout=60,
               what=f"jupyter_server {name} (see {log.name})")
    return proc.pid


@pytest.fixture(scope="module")
def jupyter(host, tmp_path_factory):
    """Two servers: one with a token, one without a token under /nb/."""
    try:
        import jupyter_server  # noqa: F401
    except ImportError:
        skip_or_fail("the Jupyter tests need jupyter_server (pip install jupyter_server)")
    tmp_path = tmp_path_factory.mktemp("jupyter")
    with_token, without = free_port(), free_port()
    pids = [start_jupyter(host, tmp_path, "with-token", with_token, TOKEN),
            start_jupyter(host, tmp_path, "no-token", without, "", base_url="/nb/")]
    yield {"with_token": with_token, "without": without, "root": tmp_path}
    for pid in pids:
        stop_pid(pid)


def urls(host):
    done = host.run_ec2("--urls")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return {int(re.search(r"  instance port (\d+)  ", line).group(1)): line for line in lines}


def forwarded(host, port):
    """The --urls line for the server on PORT once a running forward reaches it, else None."""
    line = urls(host)[port]
    return None if "not forwarded" in line else line


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def api_status(url, token=True):
    """GET BASE/api/status with the URL's token (or without), to prove the token right."""
    parts = urlsplit(url)
    return status(urlunsplit(parts._replace(path=parts.path + "api/status",
                                            query=parts.query if token else "")))


def hold_forward(terminal, host, *args):
    """Run ec2 ARGS in the terminal, and wait until it has become ssh."""
    terminal.type(host.ec2_line(*args))
    terminal.wait_for_foreground("ssh")


def test_url_opens_the_server_through_the_running_forward(host, jupyter, terminal):
    port = jupyter["with_token"]
    hold_forward(terminal, host, "-j", "--jupyter-port", str(port))
    line = wait_until(lambda: forwarded(host, port), what="--urls to see the running forward")
    url = line.split()[0]
    assert url == f"http://localhost:{port}/?token={TOKEN}"
    assert line.endswith(f"  instance port {port}  {jupyter['root'] / 'with-token'}")
    assert wait_until(lambda: status(url), what="Jupyter through the forward") == 200
    assert api_status(url) == 200
    assert api_status(url, token=False) == 403  # so the 200 above is the token's doing


def test_second_server_is_listed_with_the_command_that_forwards_it(host, jupyter, terminal):
    port = jupyter["without"]
    line = urls(host)[port]
    url, _, advice = line.partition("  (not forwarded; run: ")
    assert url.split()[0] == f"http://localhost:{port}/nb/"  # no token parameter
    command = advice.rstrip(")")
    assert shlex.split(command) == ["ec2", "-H", "instance", "--jupyter-port", str(port), "-j",
                                    "--", "-F", str(host.ssh_config)]
    terminal.type(command)  # as a person would paste it
    terminal.wait_for_foreground("ssh")
    assert wait_until(lambda: api_status(url.split()[0], token=False), what="the forward") == 200
    assert "not forwarded" not in wait_until(lambda: forwarded(host, port), what="--urls to see it")


def test_stale_and_half_written_files_are_left_out(host, jupyter, tmp_path):
    child = subprocess.Popen(["true"])
    child.wait()
    stale = host.jupyter_runtime / f"jpserver-{child.pid}.json"
    stale.write_text(json.dumps({"port": 1, "base_url": "/", "token": "old"}))
    half = host.jupyter_runtime / f"jpserver-{host.sshd.pid}.json"  # a live pid
    half.write_text('{"base_url": "/", "port": 88')
    try:
        done = host.run_ec2("--urls")
        assert done.returncode == 0
        assert set(urls(host)) == {jupyter["with_token"], jupyter["without"]}
        assert done.stderr == f"ec2: skipped {half}: not a complete Jupyter server file\n"
    finally:
        stale.unlink()
        half.unlink()


def test_url_follows_a_local_port_that_moved(host, jupyter, terminal):
    port = jupyter["with_token"]
    # Another test's forward of this port may have left connections in TIME_WAIT.
    with held_port(port, reuse=True):
        hold_forward(terminal, host, "-j", "--jupyter-port", str(port))
        line = wait_until(lambda: forwarded(host, port), what="--urls to see the moved forward")
        url = line.split()[0]
        moved = urlsplit(url).port
        assert moved != port and url == f"http://localhost:{moved}/?token={TOKEN}"
        assert f"Jupyter: http://localhost:{moved} -> instance port {port}" in terminal.screen()
        assert wait_until(lambda: api_status(url), what="Jupyter through the moved forward") == 200


def test_no_server_running(host, jupyter, tmp_path):
    done = host.run_ec2("--urls", ssh_args=["-o", f"SetEnv=JUPYTER_RUNTIME_DIR={tmp_path}"])
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "ec2: no Jupyter server running on instance\n"
