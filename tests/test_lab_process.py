"""ec2 --lab as a process: a recording ssh answers for the instance, a recording browser."""

import json
import os
import shlex
import sys
import time
from pathlib import Path

import pytest
from test_lab_unit import INFO, serve_later
from test_process import with_terminal

from conftest import free_port, wait_until

RECORDING_BROWSER = """#!{python}
# Records the page it is given, and whether Jupyter answered at that moment.
import sys, urllib.request
try:
    urllib.request.urlopen("http://localhost:{port}/api", timeout=2).close()
    answered = "answered"
except OSError:
    answered = "silent"
with open({record!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + " " + answered + "\\n")
"""


def lab_answer(port, token="t0ken-42"):
    info = {**INFO, "port": port, "token": token}
    return f"ec2-lab starting\nec2-lab wait 0\nec2-lab ready window /r/jpserver-4242.json\n{json.dumps(info)}"


@pytest.fixture
def browser(tmp_path):
    """A recording $BROWSER; returns (environment, record path, port it checks)."""
    port = free_port()
    record = tmp_path / "browser-record"
    script = tmp_path / "browser"
    script.write_text(RECORDING_BROWSER.format(python=sys.executable, port=port, record=str(record)))
    script.chmod(0o755)
    return {"BROWSER": str(script)}, record, port


def test_exec_is_exactly_what_dry_run_prints(recorder):
    port = free_port()
    dry = recorder.run("--dry-run", "work", "--lab", "--jupyter-port", str(port), "-H", "box")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    real = with_terminal(recorder, "work", "--lab", "--no-browser", "--jupyter-port", str(port),
                         "-H", "box", env={"EC2_TEST_SSH_STDOUT": lab_answer(port)})
    assert real.returncode == 0, real.stderr
    prep, final = recorder.calls()
    assert prep == shlex.split(lines[1])
    assert final == shlex.split(lines[3])


def test_the_url_has_the_token_and_the_token_is_in_no_argv(recorder, browser, tmp_path):
    environ, record, port = browser
    done = with_terminal(recorder, "--lab", "-H", "box", "--jupyter-port", str(port),
                         env={**environ, "EC2_TEST_SSH_STDOUT": lab_answer(port)})
    assert done.returncode == 0, done.stderr
    assert f"Jupyter: http://localhost:{port}/?token=t0ken-42 -> instance port {port}\n" in done.stderr
    assert all("t0ken-42" not in word for call in recorder.calls() for word in call)
    assert recorder.argv()[-3:] == ["-A", "-s", "lab"]


def connecting(recorder):
    """Whether ec2 has become the interactive ssh: its second call, after --lab's round trip.

    By then ec2 has checked the local port; a server that starts later leaves it where it is.
    """
    return lambda: (recorder.record.parent / f"{recorder.record.name}.2").exists()


def test_the_browser_gets_a_private_page_once_jupyter_answers(recorder, browser):
    environ, record, port = browser
    began, stop = serve_later(port, 0.3, after=connecting(recorder))
    try:
        done = with_terminal(recorder, "--lab", "-H", "box", "--jupyter-port", str(port),
                             env={**environ, "EC2_TEST_SSH_STDOUT": lab_answer(port),
                                  "EC2_TEST_SSH_SECONDS": "2.5"})
        assert done.returncode == 0, done.stderr
        line = wait_until(lambda: record.exists() and record.read_text(), what=f"the browser {done.stderr}")
    finally:
        stop()
    page, answered = line.split()
    assert answered == "answered"  # not opened before the forward worked
    path = Path(page[len("file://"):])
    assert path.stat().st_mode & 0o777 == 0o600
    assert f"http://localhost:{port}/?token=t0ken-42" in path.read_text()
    assert "t0ken-42" not in page


@pytest.mark.parametrize("how", [["--no-browser"], []])
def test_no_browser_by_flag_or_by_profile(recorder, browser, tmp_path, how):
    environ, record, port = browser
    config = tmp_path / "config"
    config.write_text("[gpu]\nhost = box\n" + ("" if how else "open_browser = no\n"))
    began, stop = serve_later(port, 0, after=connecting(recorder))
    try:
        done = with_terminal(recorder, "--lab", "-H", "gpu", "--config", str(config), *how,
                             "--jupyter-port", str(port), env={**environ, "EC2_TEST_SSH_SECONDS": "1.5",
                                                               "EC2_TEST_SSH_STDOUT": lab_answer(port)})
        assert done.returncode == 0, done.stderr
        # A helper polls every 0.25 s, and the server answers as soon as ssh
        # runs: in the time ssh lasted, one would have opened the page, as the
        # test above shows.
        time.sleep(0.5)
    finally:
        stop()
    assert not record.exists()


def test_a_failure_on_the_instance_is_one_message_and_no_connection(recorder):
    answer = "ec2-lab starting\nec2-lab exited 127 -lic /bin/bash\nbash: exec: jupyter: not found"
    done = with_terminal(recorder, "--lab", "-H", "box", env={"EC2_TEST_SSH_STDOUT": answer})
    assert done.returncode == 1
    assert "ec2: `jupyter lab --no-browser` was not found on box by `/bin/bash -lic`" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(recorder.calls()) == 1  # no interactive ssh after it


def test_an_ssh_failure_starts_nothing_more(recorder):
    done = with_terminal(recorder, "--lab", "-H", "box", env={"EC2_TEST_SSH_STATUS": "255"})
    assert done.returncode == 1
    assert done.stderr.endswith("ec2: ssh to box failed, so Jupyter was neither found nor started\n")
    assert len(recorder.calls()) == 1


def test_lab_needs_a_terminal_before_it_starts_anything(recorder):
    done = recorder.run("--lab", "-H", "box")
    assert done.returncode == 1 and "needs a terminal" in done.stderr
    assert recorder.calls() == []


def test_the_forward_record_lets_urls_show_the_same_url(recorder, tmp_path):
    port = free_port()
    cache = tmp_path / "cache"
    done = with_terminal(recorder, "--lab", "--no-browser", "-H", "box", "--jupyter-port", str(port),
                         env={"EC2_TEST_SSH_STDOUT": lab_answer(port), "XDG_CACHE_HOME": str(cache)})
    assert done.returncode == 0, done.stderr
    record = cache / "ec2" / "forwards"
    # The recording ssh has ended, so its record names a dead pid; read it as written.
    (written,) = [p for p in record.iterdir() if p.name.isdecimal()]
    assert written.read_text() == f"box\n{port} localhost {port}\n"
    assert os.path.exists(written)
