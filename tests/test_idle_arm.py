"""Arming idle stop: ec2 with the real AWS CLI against moto, and the real ssh.

An instance that moto holds is reached, for real, at the guarded host
(tests/conftest.py's GuardedHost): the user's ssh config maps moto's made-up
address to the sandbox, so nothing connects to it. What arming writes lands
in that host's overlays. The refusals need no ssh: the recording ssh shows
that none was run.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import uuid

import pytest

from conftest import EC2, Moto, ec2, wait_until

USER = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
ARMED = "ec2-idle armed 60 cron"


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def who(moto, instance_id):
    """The instance as ec2 names it: 'i-... (its Name)'."""
    return ec2.described(moto.describe(instance_id))


def tags(moto, instance_id):
    return {t["Key"]: t["Value"] for t in moto.describe(instance_id).get("Tags", [])}


# --- refused before anything is sent ----------------------------------------------


@pytest.fixture
def run_ec2(recorder, moto, tmp_path):
    """The real ec2 with the recording ssh, the AWS CLI pointed at moto."""
    for key in [k for k in recorder.env if k.startswith("AWS_")]:
        del recorder.env[key]
    recorder.env.update(moto.env)

    def run(*args, profile="", env=None):
        (tmp_path / "ec2.ini").write_text(profile)
        return recorder.run("--config", str(tmp_path / "ec2.ini"), *args, env=env)

    run.recorder = recorder
    return run


def launch(moto, **options):
    """A running instance, with run-instances OPTIONS (as --key value); returns its id."""
    extra = [word for key, value in options.items() for word in (f"--{key.replace('_', '-')}", value)]
    made = moto.aws("ec2", "run-instances", "--image-id", moto.image, "--instance-type", "t3.micro",
                    "--tag-specifications", json.dumps([{"ResourceType": "instance", "Tags": [
                        {"Key": "Name", "Value": unique("gpu")}]}]), *extra)
    return made["Instances"][0]["InstanceId"]


def test_a_shutdown_that_would_terminate_is_refused_saying_how_to_make_it_stop(run_ec2, moto):
    instance_id = launch(moto, instance_initiated_shutdown_behavior="terminate")
    done = run_ec2("-H", instance_id, "--idle-stop", "1h")
    assert done.returncode == 1 and run_ec2.recorder.calls() == []
    assert done.stderr == (
        f"ec2: idle stop would destroy {who(moto, instance_id)}, not stop it: a shutdown from inside"
        " terminates it (InstanceInitiatedShutdownBehavior); to make it stop instead:"
        f" aws ec2 modify-instance-attribute --instance-id {instance_id}"
        " --instance-initiated-shutdown-behavior stop\n")
    assert tags(moto, instance_id).get(ec2.IDLE_STOP_TAG) is None


def test_a_one_time_spot_instance_is_refused(run_ec2, moto):
    instance_id = launch(moto, instance_market_options=json.dumps(
        {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}}))
    done = run_ec2("-H", instance_id, "--idle-stop", "1h")
    assert done.returncode == 1 and run_ec2.recorder.calls() == []
    assert "it is a one-time Spot instance, which a shutdown terminates" in done.stderr


def test_an_instance_store_root_is_refused(run_ec2, moto):
    instance_id = launch(moto)
    moto.set_state(instance_id, "root instance-store")
    done = run_ec2("-H", instance_id, "--idle-stop", "1h")
    assert done.returncode == 1 and run_ec2.recorder.calls() == []
    assert "its root device is an instance store, which no stop keeps" in done.stderr


@pytest.mark.parametrize("option", [["--idle-stop", "1h"], ["--idle-stop"], ["--keep", "3h"]])
def test_a_plain_host_is_refused(run_ec2, option):
    done = run_ec2("-H", "gpu", *option, profile="[gpu]\nhost = gpu.example.com\n")
    assert done.returncode == 2 and run_ec2.recorder.calls() == []
    assert "a plain host may be a server nobody can start again" in done.stderr


# --- IAM, as moto enforces it ----------------------------------------------------------

ALLOWED = ["ec2:DescribeInstances", "ec2:DescribeInstanceAttribute", "ec2:CreateTags", "ec2:DeleteTags"]


def iam_user(moto, name, actions):
    moto.aws("iam", "create-user", "--user-name", name)
    moto.aws("iam", "put-user-policy", "--user-name", name, "--policy-name", "ec2", "--policy-document",
             json.dumps({"Version": "2012-10-17", "Statement": [
                 {"Effect": "Allow", "Resource": "*", "Action": actions}]}))
    key = moto.aws("iam", "create-access-key", "--user-name", name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_iam_that_will_not_say_what_a_shutdown_does_is_a_refusal_naming_the_permission(recorder, tmp_path):
    # moto checks IAM after its first six calls: describe-images (made by
    # Moto), run-instances, describe-instances, and the three that make the user.
    moto = Moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "6"})
    try:
        instance_id = launch(moto)
        named = who(moto, instance_id)
        lacking = iam_user(moto, "lacking", [a for a in ALLOWED if a != "ec2:DescribeInstanceAttribute"])
        recorder.env.update(moto.env)
        done = recorder.run("-H", instance_id, "--idle-stop", "1h", env=lacking)
        assert done.returncode == 1 and recorder.calls() == []
        assert done.stderr == (
            f"ec2: IAM did not let ec2 ask what a shutdown from inside does to {named}"
            " (ec2:DescribeInstanceAttribute); ec2 arms idle stop only where it knows the shutdown"
            " stops the instance\n")
    finally:
        moto.stop()


def test_iam_that_refuses_the_tag_leaves_the_guard_armed_and_instances_says_so_with_a_question_mark(
        recorder, tmp_path):
    # moto checks IAM after its first six calls: describe-images (made by
    # Moto), run-instances, describe-instances, and the three that make the user.
    moto = Moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "6"})
    try:
        instance_id = launch(moto)
        named = who(moto, instance_id)
        untagging = iam_user(moto, "untagging", [a for a in ALLOWED if a not in ("ec2:CreateTags",)])
        recorder.env.update(moto.env)
        done = recorder.run("-H", instance_id, "--idle-stop", "1h",
                            env={**untagging, "EC2_TEST_SSH_STDOUT": ARMED})
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert lines[0].startswith(f"ec2: the guard is armed, but the tag {ec2.IDLE_STOP_TAG} that"
                                   " --instances reads is not set (aws: An error occurred")
        assert lines[1] == (f"ec2: idle stop armed on {named}: stops after 1h unused"
                            " (checks every minute)")
        listed = recorder.run("--instances", env=untagging)
        row = [line for line in listed.stdout.splitlines() if instance_id in line][0]
        assert row.split()[-2] == "idle-stop=?"  # the last column: the profiles that name it
    finally:
        moto.stop()


# --- a connection, with idle_stop = in its profile ----------------------------------------


def test_a_connection_arms_a_missing_guard_first_and_costs_no_round_trip_once_armed(run_ec2, moto):
    instance_id = launch(moto)
    profile = f"[gpu]\ninstance = {instance_id}\nuser = ubuntu\nidle_stop = 1h\n"
    done = run_ec2("-H", "gpu", profile=profile, env={"EC2_TEST_SSH_STDOUT": ARMED})
    calls = run_ec2.recorder.calls()
    assert done.returncode == 0, done.stderr
    dns = moto.describe(instance_id)["PublicDnsName"]
    assert len(calls) == 2 and calls[0][-7:] == [f"ubuntu@{dns}", "sh", "-c", shlex.quote(ec2.GUARD_SEND),
                                                 "sh", "install", "60"]
    assert calls[1][-1] == f"ubuntu@{dns}"  # then the connection asked for
    assert f"ec2: idle stop armed on {who(moto, instance_id)}: stops after 1h unused" in done.stderr
    assert tags(moto, instance_id)[ec2.IDLE_STOP_TAG] == "1h"
    # Armed so: the tag says it, in the answer ec2 asks for anyway.
    done = run_ec2("-H", "gpu", profile=profile)
    assert done.returncode == 0 and len(run_ec2.recorder.calls()) == 1
    # Another window: armed again.
    done = run_ec2("-H", "gpu", profile=profile.replace("1h", "2h"),
                   env={"EC2_TEST_SSH_STDOUT": "ec2-idle armed 120 cron"})
    assert len(run_ec2.recorder.calls()) == 2 and tags(moto, instance_id)[ec2.IDLE_STOP_TAG] == "2h"


def test_a_connection_whose_guard_cannot_be_armed_says_why_and_connects(run_ec2, moto):
    instance_id = launch(moto, instance_initiated_shutdown_behavior="terminate")
    done = run_ec2("-H", "gpu", profile=f"[gpu]\ninstance = {instance_id}\nidle_stop = 1h\n")
    assert done.returncode == 0 and len(run_ec2.recorder.calls()) == 1
    assert done.stderr.startswith("ec2: idle stop is not armed: idle stop would destroy ")


def test_dry_run_says_it_would_arm_and_sends_nothing(run_ec2, moto):
    instance_id = launch(moto)
    done = run_ec2("-H", "gpu", "--dry-run", profile=f"[gpu]\ninstance = {instance_id}\nidle_stop = 90m\n")
    assert done.returncode == 0 and run_ec2.recorder.calls() == []
    assert done.stdout.startswith(f"# ec2 first arms idle stop (1h30m) on {who(moto, instance_id)}, as"
                                  " ec2 --idle-stop does; then runs:\nssh ")
    assert ec2.IDLE_STOP_TAG not in tags(moto, instance_id)


# --- for real, on the guarded host -------------------------------------------------------


@pytest.fixture
def armed_world(moto, guarded_host, tmp_path):
    """ec2's config naming a moto instance that the user's ssh config maps to the guarded host."""
    instance_id = launch(moto)
    dns = moto.describe(instance_id)["PublicDnsName"]
    known_hosts = tmp_path / "known_hosts"
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host {dns}\n  HostName {guarded_host.address}\n"
                          f"  UserKnownHostsFile {known_hosts}\n"
                          "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking accept-new\n"
                          "  BatchMode yes\n  IdentitiesOnly yes\n  LogLevel ERROR\n")
    config = tmp_path / "ec2.ini"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
    env.update(moto.env, EC2_CONFIG=str(config))

    def run(*args, user=USER):
        config.write_text(f"[gpu]\ninstance = {instance_id}\nuser = {user}\n"
                          f"identity = {guarded_host.base / 'user_key'}\nssh_options = -F {ssh_config}\n")
        return subprocess.run([sys.executable, str(EC2), "-H", "gpu", *args], env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    run.instance_id = instance_id
    yield run
    guarded_host.ssh(f"[ ! -x {ec2.GUARD_BIN} ] || {ec2.GUARD_BIN} remove; rm -rf /run/systemd")


def installed(host):
    """What of the guard is on the instance: {what: text or None}."""
    return {"bin": host.read(ec2.GUARD_BIN), "conf": host.read("/etc/ec2-idle-stop.conf"),
            "crontab": host.ssh("crontab -l", check=False).stdout,
            "unit": host.read("/etc/systemd/system/ec2-idle-stop.service"),
            "lib": host.ssh("ls -A /var/lib/ec2-idle-stop", check=False).stdout or None,
            "log": host.read("/var/log/ec2-idle-stop.log")}


def loop_pid(host):
    pid = (host.read("/var/lib/ec2-idle-stop/pid") or "").strip()
    return pid if pid and host.ssh(f"kill -0 {pid}", check=False).returncode == 0 else None


def test_armed_with_cron_from_boot_then_asked_kept_and_removed_with_all_it_made(armed_world, guarded_host,
                                                                                moto):
    host, instance_id = guarded_host, armed_world.instance_id
    named = who(moto, instance_id)
    done = armed_world("--idle-stop", "1h")
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"ec2: idle stop armed on {named}: stops after 1h unused (checks every minute)\n"
    found = installed(host)
    assert found["bin"] == EC2.read_text() and found["conf"] == "window=60\n"  # the guard is ec2 itself
    assert re.search(rf"^@reboot EC2_PYTHON=/\S+/python3(\.\d+)? {ec2.GUARD_BIN} run # ec2-idle-stop$",
                     found["crontab"], re.M)
    assert host.ssh(f"stat -c %a {ec2.GUARD_BIN}").stdout.strip() == "755"
    assert wait_until(lambda: loop_pid(host), what="the guard's loop")  # started now, not only at boot
    assert tags(moto, instance_id)[ec2.IDLE_STOP_TAG] == "1h"
    listed = armed_world("--instances")
    row = [line for line in listed.stdout.splitlines() if instance_id in line][0]
    assert row.split()[-2] == "idle-stop=1h"

    done = armed_world("--idle-stop")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"{re.escape(named)}: (idle 0 of 60 min \(last: armed at \d\d:\d\d\)"
                        r"|armed, not checked yet); idle stop after 1h unused\n", done.stdout)
    done = armed_world("--keep", "3h")
    assert done.returncode == 0
    assert re.fullmatch(rf"{re.escape(named)}: in use until \w+ \d\d:\d\d\n", done.stdout)

    # Armed again with another window: one loop, one crontab line.
    pid = loop_pid(host)
    assert armed_world("--idle-stop", "2h").returncode == 0
    assert installed(host)["crontab"].count("# ec2-idle-stop") == 1
    assert wait_until(lambda: loop_pid(host) not in (None, pid), what="the new loop")

    pid = loop_pid(host)
    done = armed_world("--idle-stop", "off")
    assert done.returncode == 0 and done.stderr == f"ec2: idle stop removed from {named}\n"
    assert installed(host) == dict.fromkeys(["bin", "conf", "unit", "lib", "log"], None) | {"crontab": ""}
    assert host.ssh(f"kill -0 {pid}", check=False).returncode != 0
    assert ec2.IDLE_STOP_TAG not in tags(moto, instance_id)
    done = armed_world("--idle-stop")
    assert done.stdout == f"{named}: idle stop is not armed; ec2 --idle-stop 1h arms it\n"
    done = armed_world("--keep", "3h")
    assert done.returncode == 1 and "idle stop is not armed on" in done.stderr


def test_armed_with_systemd_where_it_runs_and_the_unit_passes_systemd_analyze(armed_world, guarded_host):
    host = guarded_host
    host.ssh("mkdir -p /run/systemd/system")  # as systemd, as PID 1, makes it
    done = armed_world("--idle-stop", "45m")
    assert done.returncode == 0, done.stderr
    unit = installed(host)["unit"]
    assert re.search(r"\nEnvironment=EC2_PYTHON=/\S+/python3(\.\d+)?\n", unit)
    assert f"\nExecStart={ec2.GUARD_BIN} run\n" in unit
    assert "WantedBy=multi-user.target" in unit
    assert host.calls("systemctl")[-3:] == [["daemon-reload"], ["enable", "ec2-idle-stop.service"],
                                            ["restart", "ec2-idle-stop.service"]]
    verified = host.ssh("/usr/bin/systemd-analyze verify /etc/systemd/system/ec2-idle-stop.service",
                        check=False)
    assert verified.returncode == 0 and verified.stdout + verified.stderr == "", verified.stderr
    assert armed_world("--idle-stop", "off").returncode == 0
    assert host.calls("systemctl")[-2][:2] == ["disable", "--now"]
    assert installed(host)["unit"] is None


def test_armed_through_passwordless_sudo_as_the_default_user_is(armed_world, guarded_host):
    guarded_host.add_user("ubuntu", sudo=True)
    done = armed_world("--idle-stop", "1h", user="ubuntu")
    assert done.returncode == 0, done.stderr
    assert guarded_host.ssh(f"stat -c %U {ec2.GUARD_BIN}").stdout.strip() == "root"


def test_no_sudo_is_a_refusal_and_nothing_is_installed(armed_world, guarded_host, moto):
    guarded_host.add_user("alice", sudo=False)
    done = armed_world("--idle-stop", "1h", user="alice")
    assert done.returncode == 1
    assert done.stderr == (f"ec2: idle stop needs root on {who(moto, armed_world.instance_id)} to power it"
                           " off, and"
                           f" alice@{moto.describe(armed_world.instance_id)['PublicDnsName']} has no"
                           " passwordless sudo (sudo -n); nothing was installed\n")
    assert set(installed(guarded_host).values()) <= {None, ""}
    assert ec2.IDLE_STOP_TAG not in tags(moto, armed_world.instance_id)


def test_neither_systemd_nor_cron_is_a_refusal_and_nothing_is_installed(armed_world, guarded_host):
    guarded_host.ssh("mount --bind /dev/null /usr/bin/crontab")
    try:
        done = armed_world("--idle-stop", "1h")
    finally:
        guarded_host.ssh("umount /usr/bin/crontab")
    assert done.returncode == 1 and "it has neither; nothing was installed" in done.stderr
    assert set(installed(guarded_host).values()) <= {None, ""}

