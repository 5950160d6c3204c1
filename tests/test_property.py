"""Whatever a user types as SESSION, it never becomes shell code on the instance."""

import shlex
import sys

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from conftest import ec2


class TTY:
    def isatty(self):
        return True


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=0, max_size=80))
@example("work")
@example("données")
@example("a;rm -rf ~")
@example("$(touch x)")
@example("#(touch x)")
@example("x' ; touch y '")
def test_session_is_refused_or_reaches_the_remote_shell_as_one_word(name):
    # A leading '-' makes argparse read the word as an option, not SESSION.
    assume(not name.startswith("-"))
    execs = []

    def execvp(file, args):
        execs.append(args)
        raise SystemExit("exec")

    saved = ec2.os.execvp, sys.stdin
    ec2.os.execvp, sys.stdin = execvp, TTY()
    try:
        ec2.main([name, "-H", "box", "--config", "/dev/null"])
        status = "returned"
    except SystemExit as e:
        status = e.code
    finally:
        ec2.os.execvp, sys.stdin = saved
    if status == 2:
        assert not execs
        return
    assert status == "exec", status
    argv = execs[0]
    remote = argv[argv.index("box") + 1:]
    # ssh joins the remote words with spaces; the remote shell splits them.
    words = shlex.split(" ".join(remote))
    assert words[:-1] == ["tmux", "-2", "new-session", "-A", "-s"]
    assert words[-1] == name
