"""ec2 on every laptop: Windows' browser under WSL, native Windows refused, launchers
with a bare PATH, and expired AWS logins.

The browser tests run the real script with the recording ssh answering for
the instance, and stand-ins on PATH for what WSL has and this machine does
not: wslview, cmd.exe, explorer.exe and wslpath. Each records its argv, so a
test sees every command line ec2 made.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_lab_process import connecting, lab_answer
from test_lab_unit import serve_later
from test_process import jupyter_listing, with_terminal

from conftest import EC2, aws_calls, ec2, free_port, install_aws_standin, skip_or_fail, wait_until

TOKEN = "t0ken-9f3a"
# What WSL's wslpath -w makes of a Linux path, for the distribution "Test".
WINDOWS_PREFIX = "\\\\wsl.localhost\\Test"
STANDIN = """#!{python}
# Records its argv and directory, one JSON line a call; and answers as {name} would,
# or chatters on stdout and stderr, as cmd.exe does about a UNC directory.
import json, os, sys
with open({record!r}, "a") as f:
    f.write(json.dumps([{name!r}, os.getcwd(), *sys.argv[1:]]) + "\\n")
if {name!r} == "wslpath":
    print({prefix!r} + sys.argv[-1].replace("/", "\\\\"))
else:
    print("chatter on stdout")
    print("UNC paths are not supported.  Defaulting to Windows directory.", file=sys.stderr)
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
    if sys.platform == "darwin":
        pytest.skip("macOS always has a browser")
    found = [name for name in ("www-browser", "links", "elinks", "lynx", "w3m") if shutil.which(name)]
    if found:  # a browser Python's webbrowser would run, without a display
        skip_or_fail(f"this machine has a browser for a terminal, which webbrowser would run: {found[0]}")
    env = {k: v for k, v in recorder.env.items() if k not in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY")}
    done, url = run_open(recorder, {**env, "PATH": f"{recorder.bin}{os.pathsep}/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.startswith(url)
    assert done.stderr == "ec2: found no browser to open; open the URL above by hand\n"


# --- WSL: the Windows browser --------------------------------------------------------


def test_under_wsl_wslview_opens_the_page_by_its_linux_path(recorder, wsl):
    make, calls = wsl
    done, url = run_open(recorder, wsl_env(recorder, make("wslview", "cmd.exe", "wslpath")))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.count("\n") == 1  # its chatter is not ec2's to show
    [(name, _, page)] = calls()  # wslview alone: it translates the path itself
    assert name == "wslview" and leads_to(page, url)


def test_under_wsl_without_wslview_cmd_start_opens_the_windows_path(recorder, wsl):
    make, calls = wsl
    directory = make("cmd.exe", "explorer.exe", "wslpath")
    done, url = run_open(recorder, wsl_env(recorder, directory))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.count("\n") == 1
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


# --- launchers with a bare PATH: the Host blocks of --ssh-config ---------------------------

# macOS's /usr/bin/python3 before the developer tools are installed.
XCODE_STUB = """#!/bin/sh
echo "xcode-select: note: No developer tools were found, requesting install." >&2
exit 1
"""


def bare_path(tmp_path):
    """A launcher's PATH, /usr/bin:/bin, behind a python3 that is macOS's stub."""
    stub = tmp_path / "stub-bin"
    stub.mkdir()
    (stub / "python3").write_text(XCODE_STUB)
    (stub / "python3").chmod(0o755)
    return f"{stub}{os.pathsep}/usr/bin{os.pathsep}/bin"


def write_blocks(tmp_path, profiles, path, ec2_file=EC2, python=sys.executable):
    """ec2 --ssh-config's blocks for PROFILES, as ec2_file run by PYTHON with PATH writes them."""
    config = tmp_path / "ec2.ini"
    config.write_text(profiles)
    done = subprocess.run([str(python), str(ec2_file), "--config", str(config), "--ssh-config"],
                          capture_output=True, text=True, env={**os.environ, "PATH": path})
    assert done.returncode == 0, done.stderr
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host *\n  BatchMode yes\n  StrictHostKeyChecking no\n"
                          "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n\n" + done.stdout)
    return ssh_config


@pytest.mark.parametrize("mode", [0o755, 0o644])  # ec2 as copied to ~/bin, or a file only Python runs
def test_a_host_block_works_from_a_launcher_with_a_bare_path(tmp_path, mode):
    aws_dir = tmp_path / "aws-bin"  # where the user's shell finds aws, and the launcher does not
    log = install_aws_standin(aws_dir)
    copied = tmp_path / "ec2"
    shutil.copy(EC2, copied)
    copied.chmod(mode)
    ssh_config = write_blocks(tmp_path, "[gpu]\ninstance = i-0123456789abcdef0\nuser = u\n"
                              "connect = direct\naddress = private-ip\n",
                              f"{aws_dir}{os.pathsep}{os.environ['PATH']}", ec2_file=copied)
    found = {"InstanceId": "i-0123456789abcdef0", "State": {"Name": "running"},
             "PrivateIpAddress": "127.0.0.1"}
    with socket.socket() as server:  # the instance's sshd, as far as the connection goes
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(20)
        env = {"HOME": str(tmp_path), "PATH": bare_path(tmp_path), "EC2_TEST_AWS_LOG": str(log),
               "EC2_TEST_DESCRIBE": json.dumps({"Reservations": [{"Instances": [found]}]})}
        ssh = subprocess.Popen(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "ssh", "-F",
                                str(ssh_config), "-o", f"Port={server.getsockname()[1]}", "gpu", "true"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        try:
            conn, _ = server.accept()  # ec2 --proxy ran, found aws, and connected
            conn.close()
            _, stderr = ssh.communicate(timeout=20)
        finally:
            if ssh.poll() is None:
                ssh.kill()
            ssh.wait()
    assert "xcode-select" not in stderr and "ec2:" not in stderr
    assert [call[:2] for call in aws_calls(log)] == [["ec2", "describe-instances"]]


@pytest.mark.parametrize("gone", ["python", "ec2"])
def test_a_host_block_whose_python_or_ec2_has_moved_says_to_run_ssh_config_again(tmp_path, gone):
    moved = {"python": tmp_path / "python3", "ec2": tmp_path / "ec2"}
    moved["python"].symlink_to(sys.executable)
    shutil.copy(EC2, moved["ec2"])
    ssh_config = write_blocks(tmp_path, "[gpu]\ninstance = gpu-box\n", os.environ["PATH"],
                              ec2_file=moved["ec2"], python=moved["python"])
    moved[gone].unlink()
    done = subprocess.run(["env", "-i", f"HOME={tmp_path}", f"PATH={bare_path(tmp_path)}", "ssh", "-F",
                           str(ssh_config), "gpu", "true"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=20)
    assert done.returncode == 255
    assert done.stderr.splitlines()[0] == (f"ec2: {moved[gone]} is gone, so this Host block cannot work:"
                                           " run ec2 --ssh-config again")


# --- expired or missing AWS logins: the CLI's words, and what to run ---------------------
# (test_aws.py has the real CLI say each of these, in every mode.)

SAID = {  # what botocore and AWS say, word for word
    "sso": "The SSO session associated with this profile has expired or is otherwise invalid. To refresh"
           " this SSO session run aws sso login with the corresponding profile.",
    "sso-session": "Error when retrieving token from sso: Token has expired and refresh failed",
    "no-token": "Error loading SSO Token: Token for team does not exist",
    "expired": "An error occurred (ExpiredToken) when calling the DescribeInstances operation: The security"
               " token included in the request is expired",
    "none": 'Unable to locate credentials. You can configure credentials by running "aws configure".',
    "region": 'You must specify a region. You can also configure your region by running "aws configure".',
    "profile": "The config profile (work) could not be found",
    "denied": "An error occurred (UnauthorizedOperation) when calling the DescribeInstances operation:"
              " You are not authorized to perform this operation.",
}


def profile(aws_profile=None, name="gpu"):
    p = ec2.Profile(name, "/c/ec2.ini")
    p.aws_profile = aws_profile
    return p


@pytest.mark.parametrize("said, hint", [
    ("sso", "log in again: aws sso login --profile work"),
    ("sso-session", "log in again: aws sso login --profile work"),
    ("no-token", "log in again: aws sso login --profile work"),
    ("expired", "these AWS credentials have expired; renew them, or set up lasting ones:"
                " aws configure --profile work"),
    ("none", "set up AWS credentials: aws configure --profile work (or aws configure sso --profile work)"),
    ("region", "set a region: aws configure --profile work, or region = in [gpu] of /c/ec2.ini"),
    ("profile", "make that AWS profile: aws configure --profile work (or aws configure sso)"),
    ("denied", None),
])
def test_a_login_hint_says_what_to_run_for_the_aws_profile_ec2_passed(said, hint, tmp_path):
    environ = {"AWS_CONFIG_FILE": str(tmp_path / "none")}
    assert ec2.login_hint(SAID[said], profile("work"), environ) == hint


def test_without_aws_profile_the_hint_names_aws_profile_else_none(tmp_path):
    environ = {"AWS_CONFIG_FILE": str(tmp_path / "none")}
    assert ec2.login_hint(SAID["sso"], profile(), {**environ, "AWS_PROFILE": "team"}) == (
        "log in again: aws sso login --profile team")
    assert ec2.login_hint(SAID["sso"], profile(), environ) == "log in again: aws sso login"
    assert ec2.login_hint(SAID["region"], profile(name=None), environ) == (
        "set a region: aws configure, or region = in a profile of ec2's config file")


@pytest.mark.parametrize("key", ["sso_session = team", "sso_start_url = https://example.awsapps.com/start"])
def test_an_expired_token_of_an_sso_profile_says_to_log_in_again(tmp_path, key):
    config = tmp_path / "config"
    config.write_text(f"[profile work]\n{key}\n\n[default]\n{key}\n\n[profile keys]\nregion = us-east-1\n")
    environ = {"AWS_CONFIG_FILE": str(config)}
    assert ec2.login_hint(SAID["expired"], profile("work"), environ) == (
        "log in again: aws sso login --profile work")
    assert ec2.login_hint(SAID["expired"], profile(), environ) == "log in again: aws sso login"
    assert ec2.login_hint(SAID["expired"], profile("keys"), environ).startswith("these AWS credentials")


def test_the_hint_is_one_line_after_the_clis_words(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(f"#!/bin/sh\necho '{SAID['sso']}' >&2\nexit 255\n")
    (bin_dir / "aws").chmod(0o755)
    config = tmp_path / "ec2.ini"
    config.write_text("[gpu]\ninstance = gpu-box\naws_profile = work\n")
    done = subprocess.run([sys.executable, str(EC2), "--config", str(config), "-H", "gpu", "--status"],
                          env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"ec2: aws: {SAID['sso']}\nec2: log in again: aws sso login --profile work\n"


def test_a_proxy_that_finds_no_aws_says_where_it_looked_and_to_run_ssh_config_again(tmp_path):
    config = tmp_path / "ec2.ini"
    config.write_text("[gpu]\ninstance = gpu-box\n")
    done = subprocess.run([sys.executable, str(EC2), "--config", str(config), "--proxy", "gpu:22"],
                          env={**os.environ, "PATH": "/nowhere"}, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr == (f"ec2: {ec2.AWS_NOT_FOUND}; if it is installed, run ec2 --ssh-config again in a"
                           " shell that finds it (this PATH is /nowhere)\n")


def test_the_aws_profile_in_a_hint_is_quoted_for_the_shell(tmp_path):
    environ = {"AWS_CONFIG_FILE": str(tmp_path / "none")}
    assert ec2.login_hint(SAID["sso"], profile("data team"), environ) == (
        "log in again: aws sso login --profile 'data team'")
    assert ec2.login_hint("The config profile (data team) could not be found", profile("data team"),
                          environ) == ("make that AWS profile: aws configure --profile 'data team'"
                                       " (or aws configure sso)")


def test_outside_wsl_windows_programs_on_path_are_not_used(wsl):
    make, calls = wsl
    directory = make("wslview", "cmd.exe", "explorer.exe", "wslpath")
    environ = {"PATH": str(directory), "HOME": "/nonexistent"}  # no WSL_DISTRO_NAME, no WSL_INTEROP
    assert ec2.wsl_opener(environ) is None
    assert ec2.wsl_opener({**environ, "WSL_INTEROP": "/run/WSL/8_interop"})[0] == str(directory / "wslview")
    assert ec2.wsl_opener({**environ, "WSL_DISTRO_NAME": "Test"})[0] == str(directory / "wslview")


def test_under_wsl_a_wslpath_that_fails_is_no_browser(recorder, wsl):
    make, calls = wsl
    directory = make("cmd.exe")
    (directory / "wslpath").write_text("#!/bin/sh\necho 'wslpath: not a WSL path' >&2\nexit 1\n")
    (directory / "wslpath").chmod(0o755)
    done, _ = run_open(recorder, wsl_env(recorder, directory))
    assert done.returncode == 0 and calls() == []  # cmd.exe is not run without a Windows path
    assert done.stderr == "ec2: found no browser to open; open the URL above by hand\n"


def test_ssh_config_that_cannot_tell_where_ec2_is_says_so(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/nonexistent/ec2"])
    with pytest.raises(ec2.Failure, match="^cannot tell where ec2 or its Python is; run ec2 --ssh-config by"
                                          " its path$"):
        ec2.proxy_words(None, {"PATH": "/nonexistent"})


@pytest.mark.parametrize("apart", [False, True])  # session-manager-plugin beside aws, or elsewhere
def test_a_host_block_names_ec2_and_the_directories_of_aws_by_absolute_paths(tmp_path, apart):
    import shlex

    aws_dir, plugin_dir = tmp_path / "aws-bin", tmp_path / ("plugin-bin" if apart else "aws-bin")
    install_aws_standin(aws_dir, plugin=not apart)
    if apart:
        plugin_dir.mkdir()
        (plugin_dir / ec2.SSM_PLUGIN).write_text("#!/bin/sh\n")
        (plugin_dir / ec2.SSM_PLUGIN).chmod(0o755)
    (tmp_path / "ec2.ini").write_text("[gpu]\ninstance = gpu-box\n")
    shutil.copy(EC2, tmp_path / "ec2")  # run by a path relative to the directory it is run in
    done = subprocess.run([sys.executable, "ec2", "--config", "ec2.ini", "--ssh-config"], cwd=tmp_path,
                          capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{plugin_dir}:{aws_dir}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if "ProxyCommand" in line)
    words = shlex.split(line.split("ProxyCommand ", 1)[1])
    where = f"{aws_dir}{os.pathsep}{plugin_dir}" if apart else str(aws_dir)  # aws's first, each once
    assert words[4:] == [where, sys.executable, str(tmp_path / "ec2"), "--config",
                         str(tmp_path / "ec2.ini"), "--proxy", "gpu:%p"]


def test_under_wsl_a_cmd_exe_that_cannot_be_run_is_no_browser(recorder, wsl):
    make, calls = wsl
    directory = make("wslpath")
    (directory / "cmd.exe").write_text("#!/nonexistent/interpreter\n")  # on PATH, but exec fails
    (directory / "cmd.exe").chmod(0o755)
    done, _ = run_open(recorder, wsl_env(recorder, directory))
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert done.stderr == "ec2: found no browser to open; open the URL above by hand\n"


def test_the_profile_s_aws_profile_beats_aws_profile_in_the_environment(tmp_path):
    environ = {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_PROFILE": "other"}
    hint = ec2.login_hint(SAID["sso"], profile("work"), environ)
    assert hint == "log in again: aws sso login --profile work"
