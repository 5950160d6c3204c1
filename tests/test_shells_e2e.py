"""ec2 --lab with each login shell: bash, zsh, fish, csh and tcsh, typed into a terminal.

The instance is the guarded one of conftest (its /etc is an overlay of its
own), so the login shell of its user can change for a test without reaching
this machine. Each shell's start-up file puts Jupyter on the PATH only
inside its interactive guard, as a data scientist's does: an ssh command
does not find jupyter, and an interactive shell does.
"""

import re
import shlex
import shutil
import urllib.request

import pytest
from test_idle_e2e import stop_instance_tmux, stop_jupyter
from test_lab_script import STARTUP  # each shell's file, with Jupyter's PATH behind its guard

from conftest import ROOT, Terminal, free_port, skip_or_fail, wait_until


@pytest.fixture
def login_shell(guarded_host, tmp_path):
    """login_shell(NAME): the instance user's login shell is NAME, with STARTUP[NAME]; undone after."""
    host = guarded_host
    written = []

    def use(name):
        shell = shutil.which(name)
        if not shell:
            skip_or_fail(f"the shell tests need {name} (apt-get install {name})")
        for path, text in STARTUP[name].items():
            host.put(f"/root/{path}", text)
            written.append(f"/root/{path}")
        host.ssh(f"usermod -s {shell} root")
        return shell

    yield use
    host.ssh("usermod -s /bin/bash root")  # a command every shell reads alike
    stop_jupyter(host)
    stop_instance_tmux(host)
    if written:
        host.ssh(shlex.join(["rm", "-f", *written]))


def lab_line(host, tmp_path, port, **settings):
    config = tmp_path / "ec2.ini"
    config.write_text("[gpu]\nhost = instance\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    return shlex.join(["ec2", "-H", "gpu", "--config", str(config), "work", "--lab", "--no-browser",
                       "--jupyter-port", str(port), "--", "-F", str(host.ssh_config)])


def answer(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except OSError:
        return None  # not forwarded yet: ssh is still logging in


def everything(term):
    """The pane's screen and history, and the one tmux, once attached, is painted over."""
    try:
        return term.hidden_screen() + term.screen()
    except Exception:  # no alternate screen yet: capture-pane -a fails
        return term.screen()


def terminal_for(tmp_path):
    return Terminal(tmp_path, {"PATH": f"{ROOT}:/usr/local/bin:/usr/bin:/bin", "HOME": "/root",
                               "TERM": "screen-256color", "LANG": "C.UTF-8",
                               "XDG_CACHE_HOME": str(tmp_path / "cache")})


@pytest.mark.parametrize("name", list(STARTUP))
def test_lab_finds_what_the_interactive_login_shell_finds(guarded_host, login_shell, tmp_path, name):
    host = guarded_host
    shell = login_shell(name)
    assert host.ssh("echo $SHELL").stdout.strip() == shell
    assert host.ssh("command -v jupyter", check=False).returncode != 0  # not for an ssh command
    port = free_port()
    term = terminal_for(tmp_path)
    try:
        term.type(lab_line(host, tmp_path, port))
        said = wait_until(lambda: re.search(r"Jupyter: (http://localhost:\d+/\?token=\w+) -> instance port",
                                            everything(term)), timeout=60,
                          what=f"Jupyter's URL on screen:\n{everything(term)}")
        api = said.group(1).replace("/?", "/api?")
        assert b'"version"' in wait_until(lambda: answer(api), what=f"Jupyter through the forward, {api}")
        wait_until(lambda: "[work]" in term.screen(), what="tmux session work attached")
    finally:
        term.close()


@pytest.mark.parametrize("name", ["csh", "tcsh"])
def test_csh_command_not_found_is_said_as_not_found(guarded_host, login_shell, tmp_path, name):
    host = guarded_host
    shell = login_shell(name)
    term = terminal_for(tmp_path)
    try:
        line = lab_line(host, tmp_path, free_port(), lab_command="jupyter-nowhere lab")
        term.type(line + "; echo status=$?")
        term.wait_for("status=1", timeout=60)
        screen = " ".join(term.screen().split())
    finally:
        term.close()
    assert (f"ec2: `jupyter-nowhere lab` was not found on instance by `{shell} -fc` (your login shell,"
            f" which reads ~/.{name}rc as an interactive shell does)") in screen
    assert "jupyter-nowhere: Command not found." in screen and "Jupyter exited" not in screen
