"""The real script in a subprocess, with a recording ssh first on PATH."""

import os
import pty
import shlex
import subprocess
import sys

import pytest

from conftest import EC2, ec2, free_port


def with_terminal(recorder, *args, **kwargs):
    """Run ec2 with a pseudo-terminal as stdin, as from a person's shell."""
    controller, terminal = pty.openpty()
    try:
        return recorder.run(*args, stdin=terminal, **kwargs)
    finally:
        os.close(controller)
        os.close(terminal)


# Argument sets for which ec2 must exec exactly what --dry-run prints (the
# installed command too: test_install.py).
EXEC_ARGUMENT_SETS = [
    ["-H", "ubuntu@box"],
    ["work", "-H", "box"],
    ["new_sesh", "-j", "--jupyter-port", "{port}", "-H", "box"],
    ["-j", "--jupyter-port", "{port}", "-H", "box", "-L", "{port2}:9000"],
    ["données", "-H", "box", "--", "-A", "-o", "ServerAliveInterval=5"],
    ["work", "-H", "box", "--", "-o", "ProxyCommand=sh -c 'echo %h; nc %h %p'"],
]


@pytest.mark.parametrize("args", EXEC_ARGUMENT_SETS)
def test_exec_is_exactly_what_dry_run_prints(recorder, args):
    args = [a.format(port=free_port(), port2=free_port()) for a in args]
    dry = recorder.run("--dry-run", *args)
    assert dry.returncode == 0, dry.stderr
    assert recorder.argv() is None  # a dry run connects to nothing
    assert dry.stdout.count("\n") == 1
    real = with_terminal(recorder, *args)
    assert real.returncode == 0, real.stderr
    assert recorder.argv() == shlex.split(dry.stdout)


def test_ssh_exit_status_becomes_ec2s(recorder):
    done = recorder.run("-H", "box", env={"EC2_TEST_SSH_STATUS": "42"})
    assert done.returncode == 42 and recorder.argv() == ["ssh", "box"]


def test_ssh_not_found_exits_127(recorder, tmp_path):
    done = recorder.run("-H", "box", env={"PATH": str(tmp_path / "empty")})
    assert done.returncode == 127
    assert done.stderr.startswith("ec2: ssh not found") and "Traceback" not in done.stderr


def test_output_is_flushed_before_the_exec(recorder, tmp_path):
    # Through a pipe, Python 3.8 buffers stderr in blocks (3.9 and later, by
    # lines): unflushed text would be lost when the process becomes ssh. The
    # CI runs this file under 3.8 too, where it can fail.
    if sys.version_info >= (3, 9):
        pytest.skip("stderr is line-buffered from Python 3.9 on; this checks 3.8")
    env = {k: v for k, v in recorder.env.items() if k != "PYTHONUNBUFFERED"}
    port = free_port()
    done = subprocess.run([sys.executable, str(EC2), "-j", "--jupyter-port", str(port), "-H", "box"],
                          env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert f"Jupyter: http://localhost:{port} -> instance port {port}" in done.stderr


# One of each way ec2 ends without ssh; their messages in full are test_unit.py's.
@pytest.mark.parametrize("args, status, message", [
    (["a;rm -rf ~", "-H", "box"], 2, "invalid session name"),  # an argument type
    ([], 2, "no host given; name one with -H HOST, set EC2_HOST=HOST"),  # a Failure of status 2
    (["-L", "abc", "-H", "box"], 2, "invalid forward 'abc'"),
    (["--jupyter-port", "0", "-H", "box"], 2, "'0' is not a port"),
    (["-i", "/nonexistent/key.pem", "-H", "box"], 1, "identity file /nonexistent/key.pem not found"),
    (["--nonsense"], 2, "unrecognized arguments"),  # argparse's own
])
def test_errors_are_one_line_and_run_no_ssh(recorder, args, status, message):
    done = recorder.run(*args)
    assert done.returncode == status
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("ec2: ")
    assert recorder.argv() is None


def test_session_needs_a_terminal(recorder):
    done = recorder.run("work", "-H", "box")  # stdin is /dev/null
    assert done.returncode == 1 and recorder.argv() is None
    assert done.stderr == ("ec2: tmux session 'work' needs a terminal, and stdin is not one;"
                           " run ec2 from a terminal, or leave out SESSION for plain ssh\n")




def test_list_prints_the_sessions_in_one_round_trip(recorder):
    done = recorder.run("--list", "-H", "box",
                        env={"EC2_TEST_SSH_STDOUT": "work: 1 windows (created Wed Nov 25)"})
    assert done.returncode == 0 and done.stdout == "work: 1 windows (created Wed Nov 25)\n"
    assert recorder.argv() == ["ssh", "box", "sh", "-c", "'tmux list-sessions 2>&1'"]


@pytest.mark.parametrize("tmux_says", [
    "no server running on /tmp/tmux-1000/default",
    "error connecting to /tmp/tmux-1000/default (No such file or directory)",
])
def test_list_says_no_sessions_instead_of_tmuxs_error(recorder, tmux_says):
    done = recorder.run("--list", "-H", "box",
                        env={"EC2_TEST_SSH_STDOUT": tmux_says, "EC2_TEST_SSH_STATUS": "1"})
    assert (done.returncode, done.stdout) == (0, "no sessions on box\n")


def test_list_without_tmux_on_the_instance(recorder):
    done = recorder.run("--list", "-H", "box",
                        env={"EC2_TEST_SSH_STDOUT": "sh: 1: tmux: not found", "EC2_TEST_SSH_STATUS": "127"})
    assert done.returncode == 1 and "tmux is not installed on box" in done.stderr


def test_list_passes_an_ssh_failure_through(recorder):
    done = recorder.run("--list", "-H", "box", env={"EC2_TEST_SSH_STATUS": "255"})
    assert done.returncode == 255


def copied(recorder, tmp_path, mode=0o755):
    """ec2 copied alone into a directory of MODE, with python3 on PATH this Python:
    returns its path, and the environment to run it in, its bytecode cache under tmp_path."""
    lone = tmp_path / "home-bin"
    lone.mkdir()
    (lone / "python3").symlink_to(sys.executable)
    copy = lone / "ec2"
    copy.write_bytes(EC2.read_bytes())
    copy.chmod(0o755)
    lone.chmod(mode)
    env = {k: v for k, v in recorder.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PATH=f"{lone}:{recorder.bin}:/usr/bin:/bin", XDG_CACHE_HOME=str(tmp_path / "cache"))
    return copy, env


def test_runs_when_copied_alone(recorder, tmp_path):
    copy, env = copied(recorder, tmp_path)
    done = subprocess.run([str(copy), "--version"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.startswith("ec2 ")


def test_the_copied_script_keeps_its_bytecode_in_the_cache_and_only_its_own(recorder, tmp_path):
    copy, env = copied(recorder, tmp_path, mode=0o555)  # a read-only ~/bin
    args = ["--dry-run", "work", "-j", "-H", "box"]
    first = subprocess.run([str(copy), *args], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    cached = [path for path in (tmp_path / "cache" / "ec2" / "bytecode").rglob("*") if path.is_file()]
    assert [path.name for path in cached] == [f"ec2{sys.implementation.cache_tag}.pyc"]
    written = cached[0].stat().st_mtime_ns
    again = subprocess.run([str(copy), *args], capture_output=True, text=True, env=env)
    assert (again.stdout, again.stderr) == (first.stdout, first.stderr)
    assert cached[0].stat().st_mtime_ns == written  # read, not written again
    plain = subprocess.run([sys.executable, str(copy), *args], capture_output=True, text=True, env=env)
    assert (plain.returncode, plain.stdout) == (0, first.stdout)


def test_the_copied_script_runs_with_a_cache_it_cannot_write(recorder, tmp_path):
    copy, env = copied(recorder, tmp_path)
    (tmp_path / "cache").write_text("a file where the cache directory would be")
    done = subprocess.run([str(copy), "-H", "box"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and recorder.argv() == ["ssh", "box"]


def jupyter_listing(*infos):
    """What the instance prints for running servers with these info files."""
    import json

    return "".join(f"\n{ec2.JUPYTER_MARK} running /r/jpserver-{i}.json\n{json.dumps(info)}"
                   for i, info in enumerate(infos))


def test_urls_prints_a_line_for_each_server(recorder):
    port = free_port()
    info = {"base_url": "/", "hostname": "localhost", "port": port, "root_dir": "/srv", "token": "t0k"}
    done = recorder.run("--urls", "-H", "box", env={"EC2_TEST_SSH_STDOUT": jupyter_listing(info)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"http://localhost:{port}/?token=t0k  instance port {port}  /srv"
                           f"  (not forwarded; run: ec2 -H box --jupyter-port {port} -j)\n")
    assert recorder.argv()[:4] == ["ssh", "box", "sh", "-c"]


def test_urls_with_no_server(recorder):
    done = recorder.run("--urls", "-H", "box")
    assert (done.returncode, done.stderr) == (1, "ec2: no Jupyter server running on box\n")


def test_urls_passes_an_ssh_failure_through(recorder):
    done = recorder.run("--urls", "-H", "box", env={"EC2_TEST_SSH_STATUS": "255"})
    assert done.returncode == 255 and done.stdout == ""


@pytest.mark.parametrize("args", [["--urls", "-j"], ["--urls", "work"], ["--open", "--list"],
                                  ["--open", "--dry-run"], ["--urls", "--list"]])
def test_urls_refuses_what_it_cannot_use(recorder, args):
    done = recorder.run(*args, "-H", "box")
    assert done.returncode == 2 and recorder.argv() is None


@pytest.mark.parametrize("buffered", [True, False])
@pytest.mark.parametrize("args", [["--dry-run", "work", "-j", "-H", "box"], ["--help"],
                                  ["--completion", "zsh"]])
def test_a_reader_that_has_gone_is_no_traceback(recorder, args, buffered):
    # ec2 ... | head: the pipe is closed before ec2 writes to it. Buffered,
    # as a pipe is, the error comes when Python flushes; unbuffered, at once.
    env = {k: v for k, v in recorder.env.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run([sys.executable, str(EC2), *args], env=env, stdout=writer,
                              stderr=subprocess.PIPE, text=True, timeout=30, stdin=subprocess.DEVNULL)
    finally:
        os.close(writer)
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr


def test_an_ssh_killed_by_a_signal_is_128_plus_the_signal(recorder, tmp_path):
    killed = recorder.bin / "ssh"
    killed.write_text("#!/bin/sh\nkill -s TERM $$\n")
    assert recorder.run("--list", "-H", "box").returncode == 128 + 15


@pytest.mark.parametrize("answer", ["<html>Sign in to the proxy</html>", "[]", "null"])
def test_an_aws_answer_that_is_not_json_is_one_line(recorder, answer):
    aws = recorder.bin / "aws"
    aws.write_text(f"#!/bin/sh\nprintf '%s\\n' '{answer}'\n")
    aws.chmod(0o755)
    done = recorder.run("-H", "i-0123456789abcdef0", "--status")
    assert done.returncode == 1
    assert done.stderr == (f"ec2: aws ec2 describe-instances answered with something other than JSON:"
                           f" {answer!r}; check that the AWS CLI works: aws ec2 describe-instances\n")
