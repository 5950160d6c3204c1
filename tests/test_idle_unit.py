"""Idle stop on the laptop's side, fast: the spans, the profile key, what AWS must
say before arming, the tag, and what ec2 makes of the guard's answers.

ec2.aws and ec2.run_remote are replaced here; test_idle_arm.py runs the same
through the real AWS CLI against moto and the real ssh.
"""

import os
import re
import subprocess

import pytest

from conftest import EC2, FakeAws, ec2, write_config


@pytest.mark.parametrize("text, minutes", [("90m", 90), ("1h30m", 90), ("2h", 120), ("1d", 1440),
                                           ("1d2h3m", 1563), ("10m", 10)])
def test_a_span_is_minutes_hours_or_days(text, minutes):
    assert ec2.minutes(text) == minutes
    assert ec2.minutes(ec2.span(minutes)) == minutes


@pytest.mark.parametrize("text", ["", "60", "1x", "h", "1h 30m", "m1", "-5m", "1.5h"])
def test_anything_else_is_not_a_span(text):
    with pytest.raises(ValueError, match="is not a span of time: use minutes, hours or days, as 90m, 2h"):
        ec2.minutes(text)


def test_the_window_is_10_minutes_to_a_week_or_off_and_a_keep_1_minute_to_a_week():
    assert ec2.idle_window("10m") == 10 and ec2.idle_window("7d") == 7 * 1440
    assert ec2.idle_window("off") == "off"
    for text in ("9m", "7d1m"):
        with pytest.raises(ValueError, match="the idle stop window is 10m to 7d, or off"):
            ec2.idle_window(text)
    assert ec2.keep_span("1m") == 1 and ec2.keep_span("7d") == 7 * 1440 and ec2.keep_span("off") == "off"
    with pytest.raises(ValueError, match="--keep takes 1m to 7d, or off"):
        ec2.keep_span("8d")


def test_idle_stop_alone_shows_with_a_window_arms_and_off_removes():
    assert ec2.parse_command_line(["--idle-stop"])[1].idle_stop is True
    assert ec2.parse_command_line(["--idle-stop", "1h"])[1].idle_stop == 60
    assert ec2.parse_command_line(["--idle-stop", "off"])[1].idle_stop == "off"
    assert ec2.parse_command_line(["--keep", "3h"])[:2][0] == "keep"


def test_the_profile_key_idle_stop_goes_with_an_instance_only(ec2_run, clean_env):
    write_config(clean_env, "[gpu]\nhost = box\nidle_stop = 1h\n")
    status, argv, _, err = ec2_run("-H", "gpu")
    assert (status, argv) == (1, None) and err.endswith("[gpu] idle_stop: goes with 'instance =' only\n")
    write_config(clean_env, "[gpu]\ninstance = gpu-box\nidle_stop = 5m\n")
    status, _, _, err = ec2_run("-H", "gpu")
    assert status == 1 and "[gpu] idle_stop: '5m': the idle stop window is 10m to 7d, or off" in err


@pytest.mark.parametrize("option", [["--idle-stop", "1h"], ["--idle-stop"], ["--keep", "2h"]])
def test_a_plain_host_is_refused_before_anything_runs(ec2_run, option):
    status, argv, _, err = ec2_run("-H", "box.example.com", *option)
    assert (status, argv) == (2, None)
    assert err == ("ec2: --idle-stop and --keep need an EC2 instance, which a stop keeps and --start starts"
                   " again; a plain host may be a server nobody can start again: give a profile 'instance =',"
                   " or use -H i-...\n")


# --- what AWS must say first -----------------------------------------------------------


def box(**fields):
    return {"InstanceId": "i-0123456789abcdef0", "State": {"Name": "running"},
            "Tags": [{"Key": "Name", "Value": "gpu-box"}], "RootDeviceType": "ebs", **fields}


def behaviour(value):
    return {"InstanceInitiatedShutdownBehavior": {"Value": value}}


DENIED = ec2.Failure("aws: An error occurred (UnauthorizedOperation) when calling the"
                     " DescribeInstanceAttribute operation: You are not authorized to perform this"
                     " operation.")


def test_a_stop_is_known_undoable_only_when_aws_says_a_shutdown_stops_it(monkeypatch):
    fake = FakeAws(monkeypatch, behaviour("stop"))
    ec2.stop_is_undoable(ec2.Profile("gpu", "/cfg"), box())
    assert fake.calls == [("ec2", "describe-instance-attribute", "--instance-id", "i-0123456789abcdef0",
                           "--attribute", "instanceInitiatedShutdownBehavior")]


@pytest.mark.parametrize("instance, answers, message", [
    (box(), [behaviour("terminate")], "idle stop would destroy i-0123456789abcdef0 (gpu-box), not stop it:"
     " a shutdown from inside terminates it (InstanceInitiatedShutdownBehavior); to make it stop instead:"
     " aws ec2 modify-instance-attribute --instance-id i-0123456789abcdef0"
     " --instance-initiated-shutdown-behavior stop"),
    (box(), [{}], "AWS did not say what a shutdown from inside does to i-0123456789abcdef0 (gpu-box) (None);"
     " ec2 arms idle stop only where it knows the shutdown stops the instance"),
    (box(), [DENIED], "IAM did not let ec2 ask what a shutdown from inside does to i-0123456789abcdef0"
     " (gpu-box) (ec2:DescribeInstanceAttribute); ec2 arms idle stop only where it knows the shutdown"
     " stops the instance"),
    (box(RootDeviceType="instance-store"), [], "its root device is an instance store, which no stop keeps"),
    (box(InstanceLifecycle="spot"), [], "it is a one-time Spot instance, which a shutdown terminates"),
    (box(InstanceLifecycle="spot", SpotInstanceRequestId="sir-1"),
     [{"SpotInstanceRequests": [{"Type": "one-time"}]}], "it is a one-time Spot instance"),
    (box(InstanceLifecycle="spot", SpotInstanceRequestId="sir-1"), [DENIED],
     "IAM did not let ec2 ask whether i-0123456789abcdef0 (gpu-box) is a one-time Spot instance, which a"
     " shutdown terminates (ec2:DescribeSpotInstanceRequests)"),
])
def test_where_a_shutdown_would_destroy_the_instance_or_nobody_says_it_is_refused(monkeypatch, instance,
                                                                                   answers, message):
    FakeAws(monkeypatch, *answers)
    with pytest.raises(ec2.Failure, match=None) as refused:
        ec2.stop_is_undoable(ec2.Profile("gpu", "/cfg"), instance)
    assert message in str(refused.value)


def test_a_persistent_spot_instance_that_a_shutdown_stops_may_be_armed(monkeypatch):
    fake = FakeAws(monkeypatch, {"SpotInstanceRequests": [{"Type": "persistent"}]}, behaviour("stop"))
    ec2.stop_is_undoable(ec2.Profile("gpu", "/cfg"),
                         box(InstanceLifecycle="spot", SpotInstanceRequestId="sir-1"))
    assert fake.calls[0] == ("ec2", "describe-spot-instance-requests", "--spot-instance-request-ids", "sir-1")


# --- arming: one round trip, then the tag --------------------------------------------------


def target(profile=None, instance=None):
    profile = profile or ec2.Profile("gpu", "/cfg")
    return ec2.Target(profile, instance or box(), ec2.Route("direct", "gpu.example", None, None), [], [],
                      "ubuntu@gpu.example", None, False, None, None, None)


@pytest.fixture
def remote(monkeypatch):
    """ec2.run_remote replaced: records (script, args, input); answers each call with the next text."""
    calls, answers = [], []

    def run_remote(argv, script, *args, input=None):
        assert argv == ["ssh", "ubuntu@gpu.example"]  # the target's own ssh
        calls.append((script, args, input))
        status, text = answers.pop(0)
        return subprocess.CompletedProcess(argv, status, text)

    monkeypatch.setattr(ec2, "run_remote", run_remote)
    run_remote.calls, run_remote.answers = calls, answers
    return run_remote


def test_arming_sends_the_guard_on_stdin_with_the_window_then_tags_the_instance(monkeypatch, remote, capsys):
    fake = FakeAws(monkeypatch, behaviour("stop"), {})
    remote.answers.append((0, "ec2-idle armed 60 cron\n"))
    ec2.arm_guard(target(), 60)
    # The guard is ec2 itself: this very file, sent whole.
    assert remote.calls == [(ec2.GUARD_SEND, ("install", 60), EC2.read_text())]
    assert fake.calls[1] == ("ec2", "create-tags", "--resources", "i-0123456789abcdef0", "--tags",
                             f"Key={ec2.IDLE_STOP_TAG},Value=1h")
    assert capsys.readouterr().err == ("ec2: idle stop armed on i-0123456789abcdef0 (gpu-box): stops after 1h"
                                       " unused (checks every minute)\n")
    assert ec2.noted_guards(ec2.os.environ) == {"i-0123456789abcdef0": "1h"}


@pytest.mark.parametrize("window", [60, "off"])
def test_arming_forgets_the_remembered_answers_which_have_the_old_tag(monkeypatch, remote, tmp_path, window):
    FakeAws(monkeypatch, behaviour("stop"), {})
    remote.answers.append((0, "ec2-idle armed 60 cron\n" if window == 60 else "ec2-idle removed\n"))
    answers = ec2.Answers(str(tmp_path / "answers"), fresh=True)
    answers.put('["ec2", "describe-instances"]', {"Reservations": []})
    profile = ec2.Profile("gpu", "/cfg")
    profile.answers = answers
    ec2.arm_guard(target(profile), window)
    assert ec2.Answers(str(tmp_path / "answers"), fresh=False).known == {}


def test_off_removes_the_guard_and_the_tag_and_asks_aws_nothing_first(monkeypatch, remote, capsys):
    fake = FakeAws(monkeypatch, {})
    remote.answers.append((0, "ec2-idle removed\n"))
    ec2.arm_guard(target(), "off")
    assert remote.calls == [(ec2.GUARD_SEND, ("remove",), EC2.read_text())]
    assert fake.calls == [("ec2", "delete-tags", "--resources", "i-0123456789abcdef0", "--tags",
                           f"Key={ec2.IDLE_STOP_TAG}")]
    assert capsys.readouterr().err == "ec2: idle stop removed from i-0123456789abcdef0 (gpu-box)\n"


@pytest.mark.parametrize("answer, message", [
    ((0, "ec2-idle no-sudo\n"), "idle stop needs root on i-0123456789abcdef0 (gpu-box) to power it off, and"
     " ubuntu@gpu.example has no passwordless sudo (sudo -n); nothing was installed"),
    ((0, "ec2-idle no-boot\n"), "idle stop needs systemd or cron on i-0123456789abcdef0 (gpu-box) to start"
     " from boot, and it has neither; nothing was installed"),
    ((0, "ec2-idle no-python\n"), "idle stop needs Python 3.8 or later on i-0123456789abcdef0 (gpu-box)"
     " (python3, as root), which the guard runs on; install it (apt-get install python3, or dnf install"
     " python3); nothing was installed"),
    ((255, ""), "ssh to ubuntu@gpu.example failed (exit status 255), so idle stop was not armed"),
    ((0, "something else\n"), "ssh to ubuntu@gpu.example failed (exit status 0), so idle stop was not armed"),
])
def test_what_stops_arming_is_said_and_nothing_is_tagged(monkeypatch, remote, answer, message):
    fake = FakeAws(monkeypatch, behaviour("stop"))
    remote.answers.append(answer)
    with pytest.raises(ec2.Failure) as failed:
        ec2.arm_guard(target(), 60)
    assert str(failed.value) == message and len(fake.calls) == 1


def test_a_tag_iam_refuses_leaves_the_guard_armed_and_noted_as_unknown(monkeypatch, remote, capsys):
    FakeAws(monkeypatch, behaviour("stop"), ec2.Failure("aws: An error occurred (UnauthorizedOperation)"))
    remote.answers.append((0, "ec2-idle armed 60 systemd\n"))
    ec2.arm_guard(target(), 60)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"ec2: the guard is armed, but the tag {ec2.IDLE_STOP_TAG} that --instances reads is"
                      " not set (aws: An error occurred (UnauthorizedOperation))")
    assert ec2.guard_window(box(), ec2.os.environ) == "?"


def test_a_connection_arms_only_where_the_tag_says_otherwise_and_a_failure_does_not_stop_it(monkeypatch,
                                                                                           capsys):
    armed = []
    monkeypatch.setattr(ec2, "arm_guard", lambda target, window: armed.append(window))
    args = ec2.parse_command_line(["-H", "gpu"])[1]
    profile = ec2.Profile("gpu", "/cfg")
    profile.idle_stop = 60
    tagged = box(Tags=[{"Key": ec2.IDLE_STOP_TAG, "Value": "1h"}])
    ec2.guard_round_trip(args, target(profile, tagged))
    assert armed == []  # the tag came with describe-instances: no round trip
    ec2.guard_round_trip(args, target(profile, box(Tags=[{"Key": ec2.IDLE_STOP_TAG, "Value": "2h"}])))
    assert armed == [60]

    def refuse(target, window):
        raise ec2.Failure("idle stop would destroy it")

    monkeypatch.setattr(ec2, "arm_guard", refuse)
    ec2.guard_round_trip(args, target(profile, box()))
    assert capsys.readouterr().err == "ec2: idle stop is not armed: idle stop would destroy it\n"
    profile.idle_stop = "off"  # off in a profile removes nothing at a connection
    ec2.guard_round_trip(args, target(profile, tagged))


def test_the_guards_answer_is_shown_printable_only_and_none_installed_is_none(remote):
    remote.answers += [(0, "in use: GPU 0 at 97%\x1b[2J\x07; idle stop after 1h unused\n"),
                       (0, "ec2-idle off\n"), (255, "")]
    assert ec2.ask_guard(target(), "status") == "in use: GPU 0 at 97%[2J; idle stop after 1h unused"
    assert ec2.ask_guard(target(), "status") is None
    with pytest.raises(ec2.Failure, match=r"ssh to ubuntu@gpu.example failed \(exit status 255\)"):
        ec2.ask_guard(target(), "status")
    assert remote.calls[0] == (ec2.GUARD_ASK, ("status",), None)


def test_keep_where_no_guard_is_armed_is_an_error(monkeypatch, remote):
    monkeypatch.setattr(ec2, "resolve", lambda *a, **k: target())
    remote.answers.append((0, "ec2-idle off\n"))
    args = ec2.parse_command_line(["-H", "gpu", "--keep", "3h"])[1]
    with pytest.raises(ec2.Failure, match=r"idle stop is not armed on i-0123456789abcdef0 \(gpu-box\), so"
                                          " nothing stops it: there is nothing to keep"):
        ec2.keep(args, [])
    assert remote.calls == [(ec2.GUARD_ASK, ("keep", "180m"), None)]


def test_the_scripts_for_the_instance_read_alike_in_every_login_shell():
    for script in (ec2.GUARD_SEND, ec2.GUARD_ASK):
        assert "'" not in script and "!" not in script and "\n" not in script
    assert subprocess.run(["sh", "-n", "-c", ec2.GUARD_SEND]).returncode == 0
    assert "{" not in ec2.GUARD_SEND  # a constant: nothing is formatted into it


def sent(tmp_path, python3):
    """What GUARD_SEND does as root with PYTHON3 (a sh script) for python3: its stdout, and the
    argv and stdin python3 was given, each run."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "id").write_text("#!/bin/sh\necho 0\n")  # root, here
    (bin_ / "python3").write_text("#!/bin/sh\n" + python3)
    for name in ("id", "python3"):
        (bin_ / name).chmod(0o755)
    done = subprocess.run(["sh", "-c", ec2.GUARD_SEND, "sh", "install", "60"], input="THE GUARD\n", text=True,
                          capture_output=True, env={"PATH": f"{bin_}:/usr/bin:/bin",
                                                    "RECORD": str(tmp_path / "ran")})
    return done.stdout, (tmp_path / "ran").read_text() if (tmp_path / "ran").exists() else ""


def test_arming_runs_the_guard_with_python3_of_3_8_or_later_from_a_file_named_as_the_guard(tmp_path):
    out, ran = sent(tmp_path, 'echo "$@" >> "$RECORD"; [ "$1" = -c ] && exit 0; cat "$1" >> "$RECORD"\n')
    check, run, text = ran.splitlines()
    assert check == "-c import sys; sys.exit(sys.version_info < (3, 8))"
    assert re.fullmatch(r"/tmp/ec2-idle-stop\.\w{6} install 60", run) and text == "THE GUARD"
    assert not os.path.exists(run.split()[0])  # gone after


def test_arming_where_python3_is_older_than_3_8_or_missing_says_no_python_and_runs_nothing(tmp_path):
    out, ran = sent(tmp_path, 'echo "$@" >> "$RECORD"; exit 1\n')
    assert out == "ec2-idle no-python\n" and len(ran.splitlines()) == 1


def test_a_connection_arms_first_and_dry_run_only_says_it_would(ec2_run, monkeypatch):
    profile = ec2.Profile("gpu", "/cfg")
    profile.idle_stop = 60
    monkeypatch.setattr(ec2, "resolve", lambda *a, **k: target(profile, box()))
    armed = []
    monkeypatch.setattr(ec2, "arm_guard", lambda target, window: armed.append(window))
    status, argv, out, _ = ec2_run("-H", "gpu", "--dry-run")
    assert (status, argv, armed) == (0, None, [])
    assert out == ("# ec2 first arms idle stop (1h) on i-0123456789abcdef0 (gpu-box), as ec2 --idle-stop"
                   " does; then runs:\nssh ubuntu@gpu.example\n")
    status, argv, _, _ = ec2_run("-H", "gpu")
    assert (status, argv, armed) == ("exec", ["ssh", "ubuntu@gpu.example"], [60])


def test_an_aws_failure_other_than_iam_is_said_as_it_is(monkeypatch):
    offline = ec2.Failure("aws: Could not connect to the endpoint URL")
    for instance in (box(), box(InstanceLifecycle="spot", SpotInstanceRequestId="sir-1")):
        FakeAws(monkeypatch, offline)
        with pytest.raises(ec2.Failure) as failed:
            ec2.stop_is_undoable(ec2.Profile("gpu", "/cfg"), instance)
        assert failed.value is offline


def test_what_the_instance_prints_beside_the_guards_answer_is_passed_over(monkeypatch, remote):
    FakeAws(monkeypatch, behaviour("stop"), {})
    remote.answers.append((0, "ec2-idle armed 60 cron\nWelcome to Ubuntu\n"))
    ec2.arm_guard(target(), 60)  # armed: the last line of the guard's, not the last line


def test_a_tag_iam_will_not_delete_leaves_the_guard_removed_and_says_so(monkeypatch, remote, capsys):
    FakeAws(monkeypatch, ec2.Failure("aws: An error occurred (UnauthorizedOperation)"))
    remote.answers.append((0, "ec2-idle removed\n"))
    ec2.arm_guard(target(), "off")
    assert capsys.readouterr().err.splitlines() == [
        f"ec2: the guard is removed, but the tag {ec2.IDLE_STOP_TAG} that --instances reads is not removed"
        " (aws: An error occurred (UnauthorizedOperation))",
        "ec2: idle stop removed from i-0123456789abcdef0 (gpu-box)"]
    assert ec2.guard_window(box(), ec2.os.environ) is None


def test_an_ssh_that_fails_after_printing_is_a_failure_not_an_answer(remote):
    remote.answers.append((255, "Connection to gpu.example closed by remote host.\n"))
    with pytest.raises(ec2.Failure, match=r"ssh to ubuntu@gpu.example failed \(exit status 255\)"):
        ec2.ask_guard(target(), "status")


def test_keep_and_idle_stop_say_the_guards_answer_for_the_instance_and_exit_0(ec2_run, monkeypatch, remote):
    monkeypatch.setattr(ec2, "resolve", lambda *a, **k: target())
    remote.answers += [(0, "in use until Tue 17:05\n"),
                       (0, "in use: GPU 0 at 97%; idle stop after 1h unused\n"), (0, "ec2-idle off\n")]
    assert ec2_run("-H", "gpu", "--keep", "3h")[::2] == (
        0, "i-0123456789abcdef0 (gpu-box): in use until Tue 17:05\n")
    assert ec2_run("-H", "gpu", "--idle-stop")[::2] == (
        0, "i-0123456789abcdef0 (gpu-box): in use: GPU 0 at 97%; idle stop after 1h unused\n")
    assert ec2_run("-H", "gpu", "--idle-stop")[::2] == (
        0, "i-0123456789abcdef0 (gpu-box): idle stop is not armed; ec2 --idle-stop 1h arms it\n")
    armed = []
    monkeypatch.setattr(ec2, "arm_guard", lambda target, window: armed.append(window))
    assert ec2_run("-H", "gpu", "--idle-stop", "off")[0] == 0 and armed == ["off"]
