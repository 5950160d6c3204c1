"""What the README and --help state, in-process, where the other files had left it unguarded.

Each test is named for the claim it holds; the README's table of claims
points here and to the other files. Each was seen to fail against a one-line
break of ec2 made by hand (the break is in the test's comment).
"""

import io
import json
import re
import shlex
import subprocess
import sys
import time

import pytest
from test_jupyter_unit import INFO, listing
from test_way_in_unit import INSTANCE_ID, Aws, instance

from conftest import ROOT, TTY, ec2, running_once_started, write_config


@pytest.fixture
def ports_free(monkeypatch):
    """Every local port is free: the ports in an argv are then exactly the ones asked for."""
    monkeypatch.setattr(ec2, "port_is_free", lambda port, bind=None: True)


# --- ssh options: what follows -- beats the profile's ssh_options, which beat ec2's own ---
# Break: build_ssh_argv puts *options before *ssh_args.


def test_options_after_double_dash_come_before_the_profiles_which_come_before_ec2s(
        ec2_run, clean_env, ports_free):
    write_config(clean_env, "[p]\nhost = box\nssh_options = -o ServerAliveInterval=60"
                            " -o ExitOnForwardFailure=no\n")
    _, argv, _, _ = ec2_run("-H", "p", "-j", "--", "-o", "ServerAliveInterval=5")
    assert argv == ["ssh", "-o", "ServerAliveInterval=5",
                    "-o", "ServerAliveInterval=60", "-o", "ExitOnForwardFailure=no",
                    "-L", "8888:localhost:8888",
                    "-o", "ExitOnForwardFailure=yes", "-o", "ControlPath=none", "box"]


def test_a_users_host_key_alias_comes_before_ec2s_for_an_instance(ec2_run, monkeypatch):
    Aws(monkeypatch, describe_instances={"Reservations": [{"Instances": [instance("ec2-1.example")]}]})
    _, argv, _, _ = ec2_run("-H", INSTANCE_ID, "--", "-o", "HostKeyAlias=mine")
    assert argv == ["ssh", "-o", "HostKeyAlias=mine", "-o", f"HostKeyAlias={INSTANCE_ID}", "ec2-1.example"]


# --- the config file: --config, else $EC2_CONFIG, else $XDG_CONFIG_HOME/ec2/config ---------
# Break: config_path reads $EC2_CONFIG before --config.


def test_config_option_beats_the_ec2_config_variable(ec2_run, clean_env, monkeypatch):
    write_config(clean_env, "[default]\nhost = from-xdg\n")
    (clean_env / "env.ini").write_text("[default]\nhost = from-variable\n")
    (clean_env / "option.ini").write_text("[default]\nhost = from-option\n")
    monkeypatch.setenv("EC2_CONFIG", str(clean_env / "env.ini"))
    assert ec2_run("--config", str(clean_env / "option.ini"))[1] == ["ssh", "from-option"]
    assert ec2_run()[1] == ["ssh", "from-variable"]
    monkeypatch.delenv("EC2_CONFIG")
    assert ec2_run()[1] == ["ssh", "from-xdg"]


def test_config_home_defaults_to_dot_config(ec2_run, clean_env, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(clean_env / "home"))
    write_config(clean_env, "[default]\nhost = from-xdg\n")
    (clean_env / "home" / ".config" / "ec2").mkdir(parents=True)
    (clean_env / "home" / ".config" / "ec2" / "config").write_text("[default]\nhost = from-home\n")
    assert ec2_run()[1] == ["ssh", "from-home"]


# --- --urls: a server no forward reaches gets the port -j would choose ---------------------
# Break: --urls claims no local port of the profile's forwards.


def test_urls_keep_off_the_local_ports_of_the_profiles_forwards(ec2_run, clean_env, ports_free,
                                                               monkeypatch):
    write_config(clean_env, "[p]\nhost = box\nforward = 8888:6006\n")
    answer = listing(("running", "/r/jpserver-1.json", json.dumps(INFO)))
    monkeypatch.setattr(ec2, "run_remote", lambda argv, script: subprocess.CompletedProcess(argv, 0, answer))
    status, _, out, _ = ec2_run("-H", "p", "--urls")
    assert status == 0
    assert out == ("http://localhost:8889/?token=abc123  instance port 8888  /home/ubuntu"
                   "  (not forwarded; run: ec2 -H p -j)\n")


# --- --start: it waits until the instance runs, asking every 2 s, for 600 s at most ----------
# Break: START_TIMEOUT doubled, or POLL_SECONDS for START_TIMEOUT.


def test_start_waits_600_seconds_asking_every_2(monkeypatch, capsys):
    clock, slept, asked = [0.0], [], []
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    def find(profile):
        asked.append(clock[0])
        return {"InstanceId": INSTANCE_ID, "State": {"Name": "pending"}}

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(ec2, "find_instance", find)
    with pytest.raises(ec2.Failure, match=f"^instance {INSTANCE_ID} is still pending after 600 s$"):
        ec2.start_instance(ec2.Profile(None, None), find(None), "ec2 --start")
    assert set(slept) == {2} and clock[0] == 602  # 600 s is not yet too long; 602 s is
    assert len(asked) == 1 + 301


# --- the forward record: removed when ssh cannot be run ------------------------------------
# Break: connect's finally block keeps the files it wrote.


def test_the_forward_record_goes_when_ssh_cannot_be_run(ec2_run, clean_env, ports_free, monkeypatch,
                                                       tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    written = []
    real_record = ec2.record_forwards

    def record(*args):
        written.append(real_record(*args))
        return written[-1]

    def missing(file, args):
        assert (tmp_path / "cache" / "ec2" / "forwards").is_dir()  # it was there for ssh
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(ec2, "record_forwards", record)
    monkeypatch.setattr(ec2.os, "execvp", missing)
    assert ec2.main(["-H", "box", "-j"]) == 127
    assert len(written) == 1
    assert list((tmp_path / "cache" / "ec2" / "forwards").iterdir()) == []


# --- the remote words: every word is quoted, whatever the session name ---------------------
# Break: remote_tmux_command returns the words unquoted.


def test_the_tmux_words_are_quoted_even_where_session_name_would_refuse():
    assert ec2.remote_tmux_command("a b;$(x)") == ["tmux", "-2", "new-session", "-A", "-s", "'a b;$(x)'"]


# --- --lab: the forward follows the server to the port it reports --------------------------
# Break: connect keeps the port it asked for instead of the server's.


def test_lab_forwards_the_port_the_server_reports_not_the_one_it_asked_for(ec2_run, ports_free,
                                                                           monkeypatch):
    info = json.dumps({**INFO, "port": 8890})
    monkeypatch.setattr(ec2, "run_lab_script",
                        lambda argv, where: (f"ec2-lab ready other /r/jpserver-7.json\n{info}\n", False))
    status, argv, _, err = ec2_run("work", "--lab", "--no-browser", "-H", "box")
    assert status == "exec"
    assert argv[1:3] == ["-L", "8890:localhost:8890"]
    assert "Jupyter: http://localhost:8890/?token=abc123 -> instance port 8890\n" in err


# --- instances: -H [user@]i-..., --start, --instances, and what aws says ------------------

def described(*instances):
    return {"Reservations": [{"Instances": list(instances)}]}


def test_h_takes_user_at_an_instance_id_without_a_profile(ec2_run, monkeypatch):
    aws = Aws(monkeypatch, describe_instances=described(instance("ec2-1.example")))
    _, argv, _, _ = ec2_run("-H", f"ubuntu@{INSTANCE_ID}")
    assert argv == ["ssh", "-o", f"HostKeyAlias={INSTANCE_ID}", "ubuntu@ec2-1.example"]
    assert json.loads(aws.calls[0][3]) == [{"Name": "instance-id", "Values": [INSTANCE_ID]}]


def test_start_starts_a_stopped_instance_and_ssh_retries_while_sshd_boots(ec2_run, monkeypatch):
    stopped = {**instance("ec2-1.example"), "State": {"Name": "stopped"}}
    aws = Aws(monkeypatch, describe_instances=described(stopped),
              start_instances={"StartingInstances": [{"CurrentState": {"Name": "pending"}}]})
    monkeypatch.setattr(time, "sleep", lambda seconds: aws.answers.update(
        describe_instances=described(instance("ec2-1.example"))))  # running after the first wait
    waits = []
    monkeypatch.setattr(ec2, "wait_for_sshd", lambda *args: waits.append(args[1:3]))
    status, argv, _, err = ec2_run("-H", INSTANCE_ID, "--start", "work")
    assert waits == [("ec2-1.example", 22)]  # then ssh's retries are a backstop
    assert [call[:2] for call in aws.calls] == [("ec2", "describe-instances"), ("ec2", "start-instances"),
                                                ("ec2", "describe-instances")]
    assert aws.calls[1] == ("ec2", "start-instances", "--instance-ids", INSTANCE_ID)
    assert err.startswith(f"ec2: starting {INSTANCE_ID}\nec2: {INSTANCE_ID}: pending, 0 s\n")
    assert argv[:5] == ["ssh", "-o", "ConnectionAttempts=90", "-o", f"HostKeyAlias={INSTANCE_ID}"]


class Terminal(io.StringIO):
    """A stderr that is a terminal, and keeps what is written to it."""

    def isatty(self):
        return True


def test_start_shows_its_progress_on_a_terminal_as_one_line_rewritten(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    states = iter(["pending", "pending", "running"])
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    monkeypatch.setattr(ec2, "find_instance",
                        lambda profile: {"InstanceId": INSTANCE_ID, "State": {"Name": next(states)}})
    pending = {"InstanceId": INSTANCE_ID, "State": {"Name": "pending"}}
    ec2.start_instance(ec2.Profile(None, None), pending, "ec2 --start")
    assert terminal.getvalue() == (f"\rec2: {INSTANCE_ID}: pending, 0 s " * 3) + "\n"


def test_instances_asks_with_the_region_of_h_else_of_default(ec2_run, clean_env, monkeypatch):
    write_config(clean_env, "[default]\nhost = box\nregion = eu-west-1\n"
                            "[gpu]\ninstance = gpu-box\nregion = us-west-2\naws_profile = work\n")
    regions = []
    aws = Aws(monkeypatch, describe_instances=described())
    monkeypatch.setattr(ec2, "aws", lambda profile, *args: regions.append(
        (profile.region, profile.aws_profile)) or aws(profile, *args))
    assert ec2_run("--instances", "-H", "gpu")[:3] == (0, None, "no instances in region us-west-2\n")
    assert ec2_run("--instances")[2] == "no instances in region eu-west-1\n"
    assert regions == [("us-west-2", "work"), ("eu-west-1", None)]


def test_what_the_aws_cli_says_when_it_fails_is_one_line_after_ec2_aws(tmp_path, monkeypatch):
    fake = tmp_path / "aws"
    fake.write_text("#!/bin/sh\necho 'An error occurred (InvalidParameterValue) when calling the' >&2\n"
                    "echo '  DescribeInstances operation: bad filter.' >&2\nexit 255\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(ec2.Failure) as failed:
        ec2.aws(ec2.Profile(None, None), "ec2", "describe-instances")
    assert (str(failed.value), failed.value.status) == (
        "aws: An error occurred (InvalidParameterValue) when calling the DescribeInstances operation:"
        " bad filter.", 1)


# --- the README's own example: the alias it replaces ---------------------------------------


def test_the_readmes_dry_run_example_is_what_ec2_prints(ec2_run, clean_env, ports_free, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("    $ ec2 default -j --dry-run\n", 1)[1].split("\n\n", 1)[0]
    home = clean_env / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "mykey.pem").write_text("")
    monkeypatch.setenv("HOME", str(home))
    write_config(clean_env, "[default]\nhost = ubuntu@ec2-3-91-10-20.compute-1.amazonaws.com\n"
                            "identity = ~/.ssh/mykey.pem\n")
    status, _, out, err = ec2_run("default", "-j", "--dry-run")
    assert status == 0
    assert (err + out).replace(str(home), "/home/you") == "\n".join(
        line[4:] for line in shown.splitlines()) + "\n"


def test_a_config_path_may_start_with_a_tilde(ec2_run, clean_env, monkeypatch):
    monkeypatch.setenv("HOME", str(clean_env))
    (clean_env / "cfg").write_text("[default]\nhost = from-home\n")
    assert ec2_run("--config", "~/cfg")[1] == ["ssh", "from-home"]
    monkeypatch.setenv("EC2_CONFIG", "~/cfg")
    assert ec2_run()[1] == ["ssh", "from-home"]


# --- the README's table of claims -----------------------------------------------------------


def claims_table():
    """The rows of the README's table of claims: (claim, [(file, test name)])."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Every claim, and the fast test that holds it\n", 1)[1]
    rows = section.split("\n\n| claim |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    found = []
    for row in rows:
        claim, _, tests = row.strip("|").split(" | ")
        found.append((claim, [tuple(test.strip("` ").split("::")) for test in tests.split(", ")]))
    return found


def test_every_claim_of_the_readme_names_fast_tests_that_exist():
    rows = claims_table()
    assert len(rows) >= 70
    readme = (ROOT / "README.md").read_text()
    command = readme.split("it needs no root but for `test_guard.py`, which skips without it:\n", 1)[1]
    fast = set(re.findall(r"tests/(test_\w+\.py)", command.split("\n\n")[0]))
    assert len(fast) == 16
    for claim, tests in rows:
        assert tests, claim
        for file, name in tests:
            assert file in fast, f"{claim}: {file} is not of the fast suite"
            assert f"\ndef {name}(" in (ROOT / "tests" / file).read_text(), f"{claim}: no {file}::{name}"


# --- a connection is planned as data -----------------------------------------------------------


def plan_of(*argv, server=None, environ=None):
    """The Plan of ARGV, as connect makes it, with --lab's SERVER standing in for the round trip."""
    mode, args, ssh_args = ec2.parse_command_line(list(argv))
    target = ec2.resolve(args, ssh_args, {})
    return ec2.plan_connection(args, target, ec2.check_locally(args, target), server,
                               environ if environ is not None else {"BROWSER": "b"})


def test_the_plan_of_a_session_with_jupyter(ec2_run, ports_free, monkeypatch):
    monkeypatch.setattr(sys, "stdin", TTY())
    plan = plan_of("work", "-j", "-H", "box")
    assert plan == ec2.Plan(
        ["Jupyter: http://localhost:8888 -> instance port 8888;"
         " `ec2 --urls` gives the address with its token"],
        ["ssh", "-L", "8888:localhost:8888", "-o", "ExitOnForwardFailure=yes", "-o", "ControlPath=none",
         "-t", "box", "tmux", "-2", "new-session", "-A", "-s", "work"],
        "box", [ec2.forward_spec("8888")], "work", None)


@pytest.mark.parametrize("extra, environ, opened", [
    ([], {"BROWSER": "b"}, True), (["--no-browser"], {"BROWSER": "b"}, False), ([], {"HOME": "/u"}, False)])
def test_the_plan_opens_labs_url_only_where_a_browser_may(ec2_run, ports_free, monkeypatch, extra, environ,
                                                          opened):
    monkeypatch.setattr(sys, "stdin", TTY())
    plan = plan_of("--lab", "-H", "box", *extra, server={**INFO, "port": 8890}, environ=environ)
    url = "http://localhost:8890/?token=abc123"
    assert plan.notes == [f"Jupyter: {url} -> instance port 8890"]
    assert plan.url == (url if opened else None)
    assert plan.forwards == [ec2.forward_spec("8890")] and plan.session == "lab"


def test_the_start_command_suggested_keeps_what_followed_double_dash(ec2_run, monkeypatch):
    stopped = {**instance("ec2-1.example"), "State": {"Name": "stopped"}}
    Aws(monkeypatch, describe_instances=described(stopped))
    status, argv, _, err = ec2_run("-H", INSTANCE_ID, "--", "-A", "-o", "User=x y", tty=False)
    assert (status, argv) == (1, None)
    assert err == (f"ec2: instance {INSTANCE_ID} is stopped, and there is nobody to ask whether to start it"
                   f" (no terminal); `ec2 -H {INSTANCE_ID} --start -- -A -o 'User=x y'` starts it, and a"
                   " profile with instance = and auto_start = yes starts it at every connection\n")


def test_start_looks_again_at_an_instance_that_says_it_runs_at_once(ec2_run, monkeypatch):
    stopped = {**instance(None, private=None), "State": {"Name": "stopped"}}
    aws = Aws(monkeypatch, describe_instances=described(stopped),
              start_instances={"StartingInstances": [{"CurrentState": {"Name": "running"}}]})
    running_once_started(aws, monkeypatch, described(instance("ec2-new.example")))
    monkeypatch.setattr(ec2, "wait_for_sshd", lambda *args: None)
    status, argv, _, err = ec2_run("-H", INSTANCE_ID, "--start")
    assert argv[-1] == "ec2-new.example", err


def test_status_and_stop_through_the_command_line(ec2_run, monkeypatch):
    running = {**instance("ec2-1.example"), "InstanceType": "g5.xlarge"}
    aws = Aws(monkeypatch, describe_instances=described(running), stop_instances={})
    assert ec2_run("-H", INSTANCE_ID, "--status")[:3] == (
        0, None, f"{INSTANCE_ID}  -  running  g5.xlarge  ec2-1.example  up ?, ?/h, ? since start\n")
    assert ec2_run("-H", INSTANCE_ID, "--stop")[:3] == (
        0, None, f"stopping instance {INSTANCE_ID}: up ?, ?/h, ? since start\n")
    described_twice = [("ec2", "describe-instances")] * 2
    assert [call[:2] for call in aws.calls] == described_twice + [("ec2", "stop-instances")]


def test_the_jupyter_line_names_the_port_the_command_line_asked_for(ec2_run, clean_env, ports_free):
    write_config(clean_env, "[p]\nhost = box\njupyter_port = 7000\n")
    _, argv, _, err = ec2_run("-H", "p", "-j", "--jupyter-port", "7100")
    assert argv[1:3] == ["-L", "7100:localhost:7100"]
    assert err.startswith("Jupyter: http://localhost:7100 -> instance port 7100;")


def test_lab_keeps_the_profiles_forwards_first_and_reads_the_port_as_a_number(ec2_run, clean_env, ports_free,
                                                                             monkeypatch):
    write_config(clean_env, "[p]\nhost = box\nforward = 6006\n")
    info = json.dumps({**INFO, "port": "8890"})  # read, not trusted to be a number
    monkeypatch.setattr(ec2, "run_lab_script",
                        lambda argv, where: (f"ec2-lab ready other /r/jpserver-7.json\n{info}\n", False))
    status, argv, _, _ = ec2_run("work", "--lab", "--no-browser", "-H", "p")
    assert argv[1:5] == ["-L", "6006:localhost:6006", "-L", "8890:localhost:8890"]


def test_status_and_stop_of_a_stopped_instance_say_so(ec2_run, monkeypatch):
    Aws(monkeypatch, describe_instances=described({**instance(), "State": {"Name": "stopped"}}))
    assert ec2_run("-H", INSTANCE_ID, "--status")[2] == f"{INSTANCE_ID}  -  stopped  -  -\n"
    assert ec2_run("-H", INSTANCE_ID, "--stop")[2] == f"instance {INSTANCE_ID} is already stopped\n"


def lab_answer(how, port=8890):
    info = {**INFO, "port": port}
    if how == "other-bare":  # a server file without pid or root_dir
        how = "other"
        del info["pid"], info["root_dir"]
    return f"ec2-lab ready {how} /r/jpserver-7.json\n{json.dumps(info)}\n"


@pytest.mark.parametrize("how, started, said", [
    ("window", False, "ec2: Jupyter is already running in window 'jupyter' of tmux session 'work'\n"),
    ("other", False, "ec2: using the Jupyter server already running on box (pid 1, /home/ubuntu)\n"),
    ("window", True, ""),  # run_lab_script has said that it started it
    ("other-bare", False, "ec2: using the Jupyter server already running on box (pid ?, no root_dir)\n"),
])
def test_lab_says_which_server_it_uses(ec2_run, ports_free, monkeypatch, how, started, said):
    monkeypatch.setattr(ec2, "run_lab_script", lambda argv, where: (lab_answer(how), started))
    _, _, _, err = ec2_run("work", "--lab", "--no-browser", "-H", "box")
    assert err == said + "Jupyter: http://localhost:8890/?token=abc123 -> instance port 8890\n"


def test_what_lab_wrote_for_ssh_goes_when_ssh_cannot_be_run(ec2_run, ports_free, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("BROWSER", "true")
    monkeypatch.setattr(ec2, "run_lab_script", lambda argv, where: (lab_answer("window"), False))
    helpers = []
    monkeypatch.setattr(ec2, "open_browser_later", lambda probe, page: helpers.append(page))

    records = tmp_path / "cache" / "ec2" / "forwards"

    def missing(file, args):
        assert sorted(path.suffix for path in records.iterdir()) == ["", ".html"]  # the record, the page
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(ec2.os, "execvp", missing)
    monkeypatch.setattr(sys, "stdin", TTY())
    assert ec2.main(["work", "--lab", "-H", "box"]) == 127
    assert len(helpers) == 1 and list(records.iterdir()) == []


def test_a_cache_that_cannot_be_written_costs_the_record_and_the_browser_not_the_connection(
        ec2_run, ports_free, monkeypatch, tmp_path):
    (tmp_path / "cache").write_text("a file where the cache directory would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("BROWSER", "true")
    monkeypatch.setattr(ec2, "run_lab_script", lambda argv, where: (lab_answer("window"), False))
    status, argv, _, err = ec2_run("work", "--lab", "-H", "box")
    assert status == "exec" and argv[-1] == "work"
    lines = err.splitlines()
    assert lines[2].startswith("ec2: cannot record the forwards, so `ec2 --urls` will not see them: ")
    assert lines[3].startswith("ec2: cannot open the browser (") and lines[3].endswith(
        "); open the URL above by hand")


def test_lab_asks_for_the_port_of_the_command_line_over_the_profiles(ec2_run, clean_env, ports_free):
    write_config(clean_env, "[p]\nhost = box\njupyter_port = 7000\n")
    _, _, out, _ = ec2_run("work", "--lab", "--dry-run", "-H", "p", "--jupyter-port", "7100")
    assert shlex.split(out.splitlines()[1])[-5:-3] == ["work", "7100"]  # LAB_SCRIPT's $1 and $2


def test_lab_says_the_command_that_tries_again_with_what_followed_double_dash(ec2_run, ports_free,
                                                                              monkeypatch):
    monkeypatch.setattr(ec2, "run_lab_script", lambda argv, where: ("ec2-lab timeout\nstarting\n", True))
    status, _, _, err = ec2_run("work", "--lab", "-H", "box", "--", "-v")
    assert status == 1 and "`ec2 -H box work --lab -- -v` uses it once it is up" in err


def test_urls_suggest_j_alone_only_for_the_port_it_forwards_for_the_profile(ec2_run, clean_env, ports_free,
                                                                           monkeypatch):
    write_config(clean_env, "[p]\nhost = box\njupyter_port = 7000\n")
    answer = listing(("running", "/r/jpserver-1.json", json.dumps(INFO)),
                     ("running", "/r/jpserver-2.json", json.dumps({**INFO, "port": 7000})))
    monkeypatch.setattr(ec2, "run_remote", lambda argv, script: subprocess.CompletedProcess(argv, 0, answer))
    lines = ec2_run("-H", "p", "--urls")[2].splitlines()
    assert lines[0].endswith("(not forwarded; run: ec2 -H p -j)") and "instance port 7000" in lines[0]
    assert lines[1].endswith("(not forwarded; run: ec2 -H p --jupyter-port 8888 -j)")


def test_completion_and_an_interrupt_exit_as_they_should(ec2_run, monkeypatch):
    assert ec2_run("--completion", "bash")[0] == 0

    def interrupted(args, environ):
        raise KeyboardInterrupt

    monkeypatch.setattr(ec2, "choose_profile", interrupted)
    assert ec2_run("-H", "box")[0] == 130  # as a shell says SIGINT


def test_start_on_a_running_instance_writes_nothing_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    running = {"InstanceId": INSTANCE_ID, "State": {"Name": "running"}}
    assert ec2.start_instance(ec2.Profile(None, None), running, "ec2 --start") is running
    assert sys.stderr.getvalue() == ""


def test_start_says_so_when_the_instance_stops_instead_of_waiting_600_seconds(monkeypatch):
    states = iter(["pending", "terminated"])
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    monkeypatch.setattr(ec2, "find_instance",
                        lambda profile: {"InstanceId": INSTANCE_ID, "State": {"Name": next(states)}})
    pending = {"InstanceId": INSTANCE_ID, "State": {"Name": "pending"}}
    ended = f"^instance {INSTANCE_ID} is terminated; it cannot be started again$"
    with pytest.raises(ec2.Failure, match=ended):
        ec2.start_instance(ec2.Profile(None, None), pending, "ec2 --start")


def test_main_takes_any_sequence_of_words(capsys):
    assert ec2.main(("--complete", "profiles", "--config", "/nonexistent/config")) == 0
    assert capsys.readouterr() == ("", "")
