"""ec2 on every laptop: Windows' browser under WSL, native Windows refused, launchers
with a bare PATH, and expired AWS logins.

The browser tests run the real script with the recording ssh answering for
the instance, and stand-ins on PATH for what WSL has and this machine does
not: wslview, cmd.exe, explorer.exe and wslpath. Each records its argv, so a
test sees every command line ec2 made.
"""

import json
import os
import sys
from pathlib import Path

import pytest
from test_lab_process import connecting, lab_answer
from test_lab_unit import serve_later
from test_process import jupyter_listing, with_terminal

from conftest import EC2, ec2, free_port, wait_until

TOKEN = "t0ken-9f3a"
# What WSL's wslpath -w makes of a Linux path, for the distribution "Test".
WINDOWS_PREFIX = "\\\\wsl.localhost\\Test"
STANDIN = """#!{python}
# Records its argv and directory, one JSON line a call; and answers as {name} would.
import json, os, sys, urllib.request
with open({record!r}, "a") as f:
    f.write(json.dumps([{name!r}, os.getcwd(), *sys.argv[1:]]) + "\\n")
if {name!r} == "wslpath":
    print({prefix!r} + sys.argv[-1].replace("/", "\\\\"))
"""


def windows_to_linux(path):
    assert path.startswith(WINDOWS_PREFIX + "\\"), path
    return path[len(WINDOWS_PREFIX):].replace("\\", "/")


@pytest.fixture
def wsl(tmp_path):
    """Stand-ins for WSL's programs, in a directory to put on PATH: (make(names), calls())."""
    record = tmp_path / "wsl-calls"

    def make(*names):
        directory = tmp_path / "wsl-bin"
        directory.mkdir(exist_ok=True)
        for name in names:
            (directory / name).write_text(STANDIN.format(python=sys.executable, name=name,
                                                         record=str(record), prefix=WINDOWS_PREFIX))
            (directory / name).chmod(0o755)
        return directory

    def calls():
        return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []

    return make, calls


def wsl_env(recorder, directory, **extra):
    """The environment of a WSL shell with DIRECTORY first on PATH: no display, no $BROWSER."""
    env = {k: v for k, v in recorder.env.items() if k not in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY")}
    env.update(PATH=f"{directory}{os.pathsep}{env['PATH']}", WSL_DISTRO_NAME="Test",
               WSL_INTEROP="/run/WSL/8_interop", **extra)
    return env


def server_info(port):
    return {"base_url": "/", "hostname": "localhost", "port": port, "root_dir": "/srv", "token": TOKEN}


def run_open(recorder, env):
    """ec2 --urls --open with one server on the instance; returns (done, its URL)."""
    port = free_port()
    recorder.env = env
    done = recorder.run("--urls", "--open", "-H", "box",
                        env={"EC2_TEST_SSH_STDOUT": jupyter_listing(server_info(port))})
    return done, f"http://localhost:{port}/?token={TOKEN}"


def leads_to(page, url):
    """Whether PAGE is a file of this user's alone that sends the browser to URL, and only there."""
    text = Path(page).read_text()
    return (Path(page).stat().st_mode & 0o777 == 0o600
            and f'content="0;url={url}"' in text and text.count(url) == text.count("://") == 2)


# --- --open: the browser gets a page, never the token ------------------------------


def test_open_gives_the_browser_a_private_page_and_no_token(recorder, tmp_path):
    record = tmp_path / "browser-argv"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {record}\n')
    browser.chmod(0o755)
    done, url = run_open(recorder, {**recorder.env, "BROWSER": str(browser)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(url + "  instance port")  # the URL with its token is printed
    opened = record.read_text().split()
    assert len(opened) == 1 and opened[0].startswith("file:///") and opened[0].endswith(".html")
    assert leads_to(opened[0][len("file://"):], url)
    assert all(TOKEN not in word for call in recorder.calls() for word in call) and TOKEN not in opened[0]


def test_open_with_no_browser_says_to_open_the_url_by_hand(recorder):
    env = {k: v for k, v in recorder.env.items() if k not in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY")}
    done, url = run_open(recorder, {**env, "PATH": f"{recorder.bin}{os.pathsep}/usr/bin:/bin"})
    if sys.platform == "darwin":
        pytest.skip("macOS always has a browser")
    assert done.returncode == 0 and done.stdout.startswith(url)
    assert done.stderr == "ec2: found no browser to open; open the URL above by hand\n"


# --- WSL: the Windows browser --------------------------------------------------------


def test_under_wsl_wslview_opens_the_page_by_its_linux_path(recorder, wsl):
    make, calls = wsl
    done, url = run_open(recorder, wsl_env(recorder, make("wslview", "cmd.exe", "wslpath")))
    assert done.returncode == 0, done.stderr
    [(name, _, page)] = calls()  # wslview alone: it translates the path itself
    assert name == "wslview" and leads_to(page, url)


def test_under_wsl_without_wslview_cmd_start_opens_the_windows_path(recorder, wsl):
    make, calls = wsl
    directory = make("cmd.exe", "explorer.exe", "wslpath")
    done, url = run_open(recorder, wsl_env(recorder, directory))
    assert done.returncode == 0, done.stderr
    (translate, _, *asked), (name, cwd, *words) = calls()
    assert translate == "wslpath" and asked[0] == "-w" and leads_to(asked[1], url)
    # start's first quoted word is a window title: the empty one keeps the page from being taken as it.
    assert (name, words) == ("cmd.exe", ["/c", "start", "", WINDOWS_PREFIX + asked[1].replace("/", "\\")])
    assert cwd == str(directory)  # not a Linux directory, which cmd.exe refuses as its own
    assert leads_to(windows_to_linux(words[-1]), url)


def test_under_wsl_with_only_explorer_it_opens_the_windows_path(recorder, wsl):
    make, calls = wsl
    done, url = run_open(recorder, wsl_env(recorder, make("explorer.exe", "wslpath")))
    assert done.returncode == 0, done.stderr
    (translate, _, *_), (name, _, page) = calls()
    assert (translate, name) == ("wslpath", "explorer.exe") and leads_to(windows_to_linux(page), url)


def test_under_wsl_with_none_of_them_it_says_to_open_the_url_by_hand(recorder, wsl):
    make, calls = wsl
    done, _ = run_open(recorder, wsl_env(recorder, make("wslpath")))
    assert done.returncode == 0 and calls() == []
    assert done.stderr == "ec2: found no browser to open; open the URL above by hand\n"


def test_under_wsl_browser_is_still_the_users_choice(recorder, wsl, tmp_path):
    make, calls = wsl
    record = tmp_path / "browser-argv"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {record}\n')
    browser.chmod(0o755)
    done, url = run_open(recorder, wsl_env(recorder, make("wslview", "wslpath"), BROWSER=str(browser)))
    assert done.returncode == 0 and calls() == []
    assert leads_to(record.read_text().strip()[len("file://"):], url)


def test_under_wsl_lab_opens_the_windows_browser_once_jupyter_answers(recorder, wsl):
    make, calls = wsl
    port = free_port()
    recorder.env = wsl_env(recorder, make("cmd.exe", "wslpath"))
    began, stop = serve_later(port, 0.3, after=connecting(recorder))
    try:
        done = with_terminal(recorder, "--lab", "-H", "box", "--jupyter-port", str(port),
                             env={"EC2_TEST_SSH_STDOUT": lab_answer(port, token=TOKEN),
                                  "EC2_TEST_SSH_SECONDS": "2.5"})
        assert done.returncode == 0, done.stderr
        wait_until(lambda: len(calls()) == 2, what="cmd.exe")
    finally:
        stop()
    (_, _, _, page), (name, _, *words) = calls()
    assert name == "cmd.exe" and leads_to(windows_to_linux(words[-1]), f"http://localhost:{port}/?token={TOKEN}")
    assert all(TOKEN not in word for call in calls() + recorder.calls() for word in call)


# --- native Windows: one line, and nothing else runs ------------------------------------


@pytest.mark.parametrize("argv", [[], ["work", "--lab"], ["--urls"], ["--proxy", "gpu"],
                                  ["--complete", "-H", ""], ["--help"], ["-H", "gpu", "--stop"]])
def test_native_windows_is_refused_before_anything_else_runs(monkeypatch, capsys, argv):
    def forbidden(*args, **kwargs):
        raise AssertionError("ran on Windows")

    for name in ("fork", "kill", "execvp", "execv", "execve", "system", "open"):
        monkeypatch.setattr(os, name, forbidden)
    import subprocess

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    called = []

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == str(EC2):
            called.append(frame.f_code.co_name)

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(os, "name", "nt")
    sys.setprofile(profiler)
    try:
        status = ec2.main(argv)
    finally:
        sys.setprofile(None)
        monkeypatch.undo()
    assert status == 1 and called == ["main"]
    out, err = capsys.readouterr()
    assert out == "" and err == ec2.NOT_ON_WINDOWS + "\n" and err.count("\n") == 1
    assert "WSL" in err and "wsl --install" in err


@pytest.mark.parametrize("platform, name", [("win32", "posix"), ("linux", "nt")])
def test_either_sign_of_windows_is_enough(monkeypatch, capsys, platform, name):
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(os, "name", name)
    try:
        status = ec2.main(["--version"])
    finally:
        monkeypatch.undo()
    assert status == 1 and capsys.readouterr().err == ec2.NOT_ON_WINDOWS + "\n"
