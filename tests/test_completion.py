"""Tab completion, asked of the real bash, zsh and fish with the script ec2 prints.

Each shell finds `ec2` on PATH as a wrapper that logs every start of ec2, so a
test can count what one TAB costs.
"""

import os
import re
import shutil
import stat
import subprocess

import pytest

from conftest import EC2, IN_CI, Terminal, ec2, skip_or_fail, wait_until

PROFILES = "[gpu]\nhost = gpu-box\n\n[cpu-box]\nhost = cpu\n"


class Completion:
    """A config, a session list and a logging `ec2` for the shells."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        (tmp_path / "xdg" / "ec2").mkdir(parents=True)
        (tmp_path / "xdg" / "ec2" / "config").write_text(PROFILES)
        (tmp_path / "cache" / "ec2").mkdir(parents=True)
        (tmp_path / "cache" / "ec2" / "sessions").write_text("work\nnotebooks\n")
        (tmp_path / "broken").write_text("[gpu\nhost = x\n")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        self.log = tmp_path / "starts"
        (bin_dir / "ec2").write_text(f'#!/bin/sh\necho "$*" >> {self.log}\nexec {EC2} "$@"\n')
        (bin_dir / "ec2").chmod(0o755)
        self.env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
                    "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                    "TERM": "screen", "LANG": "C.UTF-8"}

    def starts(self):
        """How many times ec2 has started since the last call."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.write_text("")
        return len(lines)

    def bash(self, *words):
        """The completions bash's registered function gives for WORDS (the last being completed)."""
        script = ('eval "$(ec2 --completion bash)"; : > "$LOG";'
                  ' COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1));'
                  ' func=$(complete -p ec2 | sed "s/.*-F //;s/ .*//");'
                  ' "$func" ec2 "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}";'
                  ' printf "%s\\n" "${COMPREPLY[@]}"')
        done = subprocess.run(["bash", "--norc", "-c", script, "bash", "ec2", *words],
                              env={**self.env, "LOG": str(self.log)}, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return sorted(filter(None, done.stdout.splitlines()))

    def fish(self, line, described=False):
        """What fish offers for LINE (with its descriptions, if DESCRIBED), run in a directory of files."""
        script = f'ec2 --completion fish | source; : > $LOG; complete -C "{line}"'
        done = subprocess.run(["fish", "--no-config", "-c", script], env={**self.env, "LOG": str(self.log)},
                              capture_output=True, text=True, timeout=30, cwd=self.tmp)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return sorted(line if described else line.split("\t")[0] for line in done.stdout.splitlines())


@pytest.fixture
def completion(tmp_path):
    return Completion(tmp_path)


def need(shell):
    if not shutil.which(shell):
        skip_or_fail(f"the completion tests need {shell} (apt-get install bash zsh fish)")


# --- bash ---------------------------------------------------------------------


def test_bash_completes_options(completion):
    need("bash")
    assert completion.bash("--no") == ["--no-browser"]
    assert completion.bash("--i") == ["--identity", "--idle-stop", "--instances"]
    assert completion.starts() == 0  # the options are in the script


def test_bash_completes_profiles_after_h_with_one_start(completion):
    need("bash")
    assert completion.bash("-H", "") == ["cpu-box", "gpu"]
    assert completion.starts() == 1
    assert completion.bash("work", "--host", "g") == ["gpu"]


def test_bash_reads_the_config_the_command_line_names(completion):
    need("bash")
    other = completion.tmp / "other"
    other.write_text("[elsewhere]\nhost = e\n")
    assert completion.bash("--config", str(other), "-H", "") == ["elsewhere"]


def test_bash_completes_sessions_without_starting_ec2(completion):
    need("bash")
    assert completion.bash("no") == ["notebooks"]
    assert completion.bash("-j", "--lab", "no") == ["notebooks"]  # after options that take no value
    assert completion.starts() == 0


def test_bash_completes_choices_and_nothing_after_a_port(completion):
    need("bash")
    assert completion.bash("--completion", "") == ["bash", "fish", "zsh"]
    assert completion.bash("--jupyter-port", "") == []
    assert completion.bash("--", "") == []  # ssh's own arguments


def test_bash_completes_files_after_i(completion):
    need("bash")
    (completion.tmp / "key.pem").write_text("")
    assert completion.bash("-i", str(completion.tmp / "key")) == [str(completion.tmp / "key.pem")]


def test_bash_with_a_broken_config_completes_nothing_and_says_nothing(completion):
    need("bash")
    assert completion.bash("--config", str(completion.tmp / "broken"), "-H", "") == []


# --- fish ---------------------------------------------------------------------


def test_fish_completes_options_profiles_sessions_and_choices(completion):
    need("fish")
    assert completion.fish("ec2 --no-b") == ["--no-browser"]
    assert completion.fish("ec2 -H ") == ["cpu-box", "gpu"]
    assert completion.starts() == 1
    assert completion.fish("ec2 note") == ["notebooks"]
    assert completion.fish("ec2 --completion ") == ["bash", "fish", "zsh"]


def test_fish_describes_options_and_offers_no_file_where_a_value_goes(completion):
    need("fish")
    assert completion.fish("ec2 --li", described=True) == ["--list\tlist the tmux sessions on the instance"
                                                           " and exit"]
    assert completion.fish("ec2 --jupyter-port ") == []  # a port: no files (the directory has some)
    assert completion.fish("ec2 --dry-run note") == ["notebooks"]  # a flag takes no value


def test_fish_with_a_broken_config_completes_nothing_and_says_nothing(completion):
    need("fish")
    assert completion.fish(f"ec2 --config {completion.tmp / 'broken'} -H ") == []


# --- zsh, typed into a terminal ------------------------------------------------


@pytest.fixture
def zsh(completion, tmp_path):
    need("zsh")
    if not shutil.which("tmux"):
        skip_or_fail("the zsh completion tests need tmux")
    terminal = Terminal(tmp_path, completion.env)
    terminal.type("exec zsh -f")
    terminal.type("PS1='%% '; autoload -Uz compinit && compinit -u -D; eval \"$(ec2 --completion zsh)\"")
    terminal.type("echo zsh-$((6 * 7))")
    terminal.wait_for("zsh-42")
    yield terminal
    terminal.close()


def tab(terminal, line, expect=None):
    """Type LINE and press TAB; return the screen once EXPECT (a regex) is on it.

    Without EXPECT, a key typed after TAB marks the end: zsh reads it only once
    the completion has done whatever it does, which the screen then shows.
    """
    terminal.keys("C-l")  # zsh clears the screen; tmux forgets what scrolled off

    def cleared():
        # tmux keeps a cleared screen in its history, once zsh has cleared it:
        # forget it on each look, as C-l may come after the first.
        terminal.tmux("clear-history", "-t", "term")
        return terminal.screen().strip() == "%"

    wait_until(cleared, what=f"a clear screen:\n{terminal.screen()}")
    terminal.type(line, enter=False)
    terminal.keys("Tab")
    if expect:
        screen = wait_until(lambda: re.search(expect, terminal.screen(), re.M) and terminal.screen(),
                            what=f"{expect!r} on screen:\n{terminal.screen()}")
    else:
        terminal.type("@", enter=False)
        screen = wait_until(lambda: "@" in terminal.screen() and terminal.screen(),
                            what=f"the key after TAB:\n{terminal.screen()}").replace("@", "")
    terminal.keys("C-u")
    return screen


def test_zsh_completes_an_option(zsh):
    tab(zsh, "ec2 --no-b", r"% ec2 --no-browser ?$")


def test_zsh_lists_the_profiles_after_h(zsh):
    screen = tab(zsh, "ec2 -H ", r"cpu-box")
    assert re.search(r"\bgpu\b", screen)


def test_zsh_completes_a_profile(zsh):
    tab(zsh, "ec2 -H g", r"% ec2 -H gpu ?$")


def test_zsh_completes_a_session(zsh):
    tab(zsh, "ec2 note", r"% ec2 notebooks ?$")


def test_zsh_with_a_broken_config_completes_nothing_and_says_nothing(zsh, completion):
    line = f"ec2 --config {completion.tmp / 'broken'} -H "
    screen = tab(zsh, line)
    assert screen.strip().splitlines()[-1] == "% " + line.strip()
    assert "gpu" not in screen and "rror" not in screen


def test_ci_has_every_shell():
    if IN_CI:
        assert all(shutil.which(shell) for shell in ("bash", "zsh", "fish"))


# --- the local list of session names -------------------------------------------


def test_a_connection_to_a_session_puts_it_first_in_the_list(recorder, tmp_path):
    from test_process import with_terminal

    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    for session in ("older", "work", "older"):
        assert with_terminal(recorder, session, "-H", "box", env=cache).returncode == 0
    assert (tmp_path / "cache" / "ec2" / "sessions").read_text() == "older\nwork\n"
    assert recorder.run("--dry-run", "new", "-H", "box", env=cache).returncode == 0
    assert "new" not in (tmp_path / "cache" / "ec2" / "sessions").read_text()  # nothing ran


def test_list_remembers_the_instances_sessions(recorder, tmp_path):
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    listing = "analysis: 1 windows (created Fri Nov 27 10:00:00 2026)\nwork: 2 windows (attached)"
    done = recorder.run("--list", "-H", "box", env={**cache, "EC2_TEST_SSH_STDOUT": listing})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cache" / "ec2" / "sessions").read_text() == "analysis\nwork\n"


def test_the_list_keeps_the_most_recent_names(tmp_path):
    environ = {"XDG_CACHE_HOME": str(tmp_path)}
    for n in range(ec2.SESSIONS_KEPT + 5):
        ec2.remember_sessions([f"s{n}"], environ)
    names = (tmp_path / "ec2" / "sessions").read_text().split()
    assert len(names) == ec2.SESSIONS_KEPT and names[0] == f"s{ec2.SESSIONS_KEPT + 4}"


def test_the_list_is_private_and_written_only_when_it_changes(tmp_path):
    environ = {"XDG_CACHE_HOME": str(tmp_path)}
    ec2.remember_sessions(["work"], environ)
    path = tmp_path / "ec2" / "sessions"
    assert stat.S_IMODE((tmp_path / "ec2").stat().st_mode) == 0o700
    written = path.stat().st_ino
    ec2.remember_sessions(["work"], environ)  # nothing new: ec2 leaves the file alone
    assert path.stat().st_ino == written
    ec2.remember_sessions(["other"], environ)
    assert path.stat().st_ino != written and path.read_text() == "other\nwork\n"


def test_an_unwritable_list_is_no_error(tmp_path):
    (tmp_path / "ec2").write_text("a file where the directory would be")
    ec2.remember_sessions(["work"], {"XDG_CACHE_HOME": str(tmp_path)})  # no exception


def test_complete_answers_only_what_it_knows(capsys, tmp_path):
    assert ec2.main(["--complete", "sessions"]) == 2
    config = tmp_path / "c"
    config.write_text(PROFILES)
    assert ec2.main(["--complete", "profiles", "--config", str(config)]) == 0
    assert capsys.readouterr() == ("gpu\ncpu-box\n", "")


def test_complete_with_a_config_option_but_no_file_yet_reads_the_usual_one(monkeypatch, capsys, tmp_path):
    # The line being typed: `ec2 --config -H <TAB>` gives the script no file name.
    (tmp_path / "ec2").mkdir()
    (tmp_path / "ec2" / "config").write_text("[usual]\nhost = u\n")
    monkeypatch.delenv("EC2_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert ec2.main(["--complete", "profiles", "--config"]) == 0
    assert capsys.readouterr() == ("usual\n", "")


def test_only_options_are_sorted_for_completion():
    kinds = ec2.completion_options(ec2.build_parser())
    assert all(action.option_strings for actions in kinds.values() for action in actions)


def test_complete_is_quiet_about_a_broken_config(capsys, completion):
    # The scripts throw its stderr away too; a TAB must not depend on that alone.
    assert ec2.main(["--complete", "profiles", "--config", str(completion.tmp / "broken")]) == 0
    assert capsys.readouterr() == ("", "")
