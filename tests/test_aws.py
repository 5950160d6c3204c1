"""EC2 instances by id or Name, through the real AWS CLI and moto's emulator.

moto hands out public-looking addresses: no test connects to any of them.
The ssh step is the recording ssh on PATH.
"""

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from price_list import PriceList

from conftest import EC2, Moto, aws_calls, held_port, install_aws_standin, stop_pid, wait_until


@pytest.fixture
def run_ec2(recorder, moto, tmp_path):
    """Run the real ec2 with the recording ssh, the AWS CLI pointed at moto."""
    for key in [k for k in recorder.env if k.startswith("AWS_")]:
        del recorder.env[key]
    recorder.env.update(moto.env)
    config = tmp_path / "ec2.ini"
    recorder.env["EC2_CONFIG"] = str(config)

    def run(*args, profile="", env=None):
        config.write_text(profile)
        return recorder.run(*args, env=env)

    run.recorder = recorder
    return run


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_resolves_a_name_to_its_address_and_keeps_the_host_key_with_the_id(run_ec2, moto):
    name = unique("gpu-box")
    instance_id = moto.launch(name)
    profile = f"[gpu]\ninstance = {name}\nuser = ubuntu\n"
    dry = run_ec2("-H", "gpu", "work", "--dry-run", profile=profile)
    assert dry.returncode == 0, dry.stderr
    address = moto.describe(instance_id)["PublicDnsName"]
    assert address.endswith(".amazonaws.com")
    assert shlex.split(dry.stdout) == ["ssh", "-o", f"HostKeyAlias={instance_id}", "-t", f"ubuntu@{address}",
                                       "tmux", "-2", "new-session", "-A", "-s", "work"]
    assert run_ec2.recorder.argv() is None
    done = run_ec2("-H", "gpu", profile=profile)
    assert done.returncode == 0, done.stderr
    assert run_ec2.recorder.argv() == ["ssh", "-o", f"HostKeyAlias={instance_id}", f"ubuntu@{address}"]


def test_resolves_an_id_given_with_h_and_no_profile(run_ec2, moto):
    instance_id = moto.launch(unique("by-id"))
    address = moto.describe(instance_id)["PublicDnsName"]
    assert run_ec2("-H", instance_id, "--dry-run").stdout == f"ssh -o HostKeyAlias={instance_id} {address}\n"
    done = run_ec2("-H", f"ec2-user@{instance_id}", "--dry-run")
    assert done.stdout == f"ssh -o HostKeyAlias={instance_id} ec2-user@{address}\n"


@pytest.mark.parametrize("kind, field", [("public-ip", "PublicIpAddress"), ("private-ip", "PrivateIpAddress"),
                                         ("public-dns", "PublicDnsName")])
def test_address_kind(run_ec2, moto, kind, field):
    instance_id = moto.launch(unique("addr"))
    done = run_ec2("--dry-run", profile=f"[default]\ninstance = {instance_id}\naddress = {kind}\n")
    assert done.stdout.split()[-1] == moto.describe(instance_id)[field]


def test_stopped_instance_is_refused_with_the_command_that_starts_it(run_ec2, moto):
    name = unique("gpu-box")
    instance_id = moto.launch(name)
    moto.aws("ec2", "stop-instances", "--instance-ids", instance_id)
    done = run_ec2("-H", "gpu", "work", profile=f"[gpu]\ninstance = {name}\nauto_start = no\n")
    assert done.returncode == 1 and run_ec2.recorder.argv() is None
    assert done.stderr == f"ec2: instance {instance_id} ({name}) is stopped; `ec2 -H gpu --start` starts it\n"
    done = run_ec2("-H", "gpu", profile=f"[gpu]\ninstance = {name}\n")  # ask, and nobody to ask
    assert done.returncode == 1 and run_ec2.recorder.argv() is None
    assert done.stderr == (f"ec2: instance {instance_id} ({name}) is stopped, and there is nobody to ask"
                           " whether to start it (no terminal); `ec2 -H gpu --start` starts it, and"
                           f" auto_start = yes in [gpu] of {run_ec2.recorder.env['EC2_CONFIG']} starts it"
                           " at every connection\n")
    assert moto.describe(instance_id)["State"]["Name"] == "stopped"


def test_a_connection_with_auto_start_yes_starts_it_once_and_connects(run_ec2, moto, counted, sshd_answers):
    name = unique("gpu-box")
    instance_id = moto.launch(name)
    moto.aws("ec2", "stop-instances", "--instance-ids", instance_id)
    done = run_ec2("-H", "gpu", profile=f"[gpu]\ninstance = {name}\nuser = ubuntu\nauto_start = yes\n")
    assert done.returncode == 0, done.stderr
    assert [call for call in counted() if call[1] == "start-instances"] == [["ec2", "start-instances"]]
    assert moto.describe(instance_id)["State"]["Name"] == "running"
    assert run_ec2.recorder.argv() == ["ssh", "-o", "ConnectionAttempts=90", "-o",
                                       f"HostKeyAlias={instance_id}",
                                       f"ubuntu@{moto.describe(instance_id)['PublicDnsName']}"]


@pytest.mark.parametrize("state, message", [
    ("pending", "is starting (pending); `ec2 --start` waits for it"),
    ("stopping", "is stopping; once it has stopped, `ec2 --start` starts it again"),
    ("shutting-down", "is shutting-down; it cannot be started again"),
    ("terminated", "is terminated; it cannot be started again"),
])
def test_every_other_state_is_said(run_ec2, moto, state, message):
    name = unique("box")
    instance_id = moto.launch(name)
    moto.set_state(instance_id, state)
    done = run_ec2(profile=f"[default]\ninstance = {name}\nauto_start = no\n")
    assert done.returncode == 1 and run_ec2.recorder.argv() is None
    assert done.stderr == f"ec2: instance {instance_id} ({name}) {message}\n"


def test_instance_not_found(run_ec2):
    done = run_ec2(profile="[default]\ninstance = no-such-box\n")
    assert (done.returncode, done.stderr) == (1, "ec2: no EC2 instance 'no-such-box' found\n")
    done = run_ec2("-H", "i-0123456789abcdef0")
    assert done.stderr == "ec2: no EC2 instance 'i-0123456789abcdef0' found\n"


def test_ambiguous_name_lists_the_instances(run_ec2, moto):
    name = unique("shared")
    first, second = moto.launch(name), moto.launch(name)
    moto.aws("ec2", "stop-instances", "--instance-ids", second)
    done = run_ec2(profile=f"[default]\ninstance = {name}\n")
    assert done.returncode == 1 and run_ec2.recorder.argv() is None
    assert done.stderr == (f"ec2: several instances are named {name!r}: {first} (running),"
                           f" {second} (stopped); name one by its id (instance = i-...)\n")


def test_a_terminated_namesake_does_not_make_a_name_ambiguous(run_ec2, moto):
    name = unique("reborn")
    old, new = moto.launch(name), moto.launch(name)
    moto.aws("ec2", "terminate-instances", "--instance-ids", old)
    done = run_ec2("--dry-run", profile=f"[default]\ninstance = {name}\n")
    assert done.returncode == 0 and f"HostKeyAlias={new}" in done.stdout


def test_status_is_one_line(run_ec2, moto):
    name = unique("gpu-box")
    instance_id = moto.launch(name, "p3.2xlarge")
    done = run_ec2("--status", profile=f"[default]\ninstance = {name}\n")
    address = moto.describe(instance_id)["PublicDnsName"]
    assert (done.returncode, done.stdout) == (0, f"{instance_id}  {name}  running  p3.2xlarge  {address}"
                                                 "  up 0m, ?/h, ? since start\n")  # Windows: no price here
    moto.aws("ec2", "stop-instances", "--instance-ids", instance_id)
    done = run_ec2("--status", profile=f"[default]\ninstance = {name}\n")
    assert done.stdout == f"{instance_id}  {name}  stopped  p3.2xlarge  -\n"
    assert run_ec2.recorder.argv() is None


def test_stop_stops_and_says_what(run_ec2, moto):
    name = unique("gpu-box")
    instance_id = moto.launch(name)
    profile = f"[default]\ninstance = {name}\n"
    done = run_ec2("--stop", profile=profile)
    assert (done.returncode, done.stdout) == (0, f"stopping instance {instance_id} ({name}):"
                                                 " up 0m, ?/h, ? since start\n")  # moto's Windows AMI
    assert moto.describe(instance_id)["State"]["Name"] == "stopped"
    done = run_ec2("--stop", profile=profile)
    assert (done.returncode, done.stdout) == (0, f"instance {instance_id} ({name}) is already stopped\n")
    assert run_ec2.recorder.argv() is None


@pytest.fixture
def sshd_answers(run_ec2):
    """ec2's wait for sshd after a start goes to a port that answers on loopback (ssh -G says so),
    never to the address moto made up."""
    with held_port() as port:
        run_ec2.recorder.env["EC2_TEST_SSH_G"] = f"-o HostName=127.0.0.1 -o Port={port}"
        yield port


def test_start_starts_waits_and_connects_to_the_new_address(run_ec2, moto, sshd_answers):
    name = unique("gpu-box")
    instance_id = moto.launch(name)
    old_address = moto.describe(instance_id)["PublicIpAddress"]
    moto.aws("ec2", "stop-instances", "--instance-ids", instance_id)
    done = run_ec2("--start", profile=f"[default]\ninstance = {name}\nuser = ubuntu\naddress = public-ip\n")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(f"ec2: starting {re.escape(instance_id)} \\({name}\\), a t3.micro at \\?/h\n"
                        f"ec2: {re.escape(instance_id)} \\({name}\\): pending, \\d s\n"
                        f"ec2: {re.escape(instance_id)} \\({name}\\): ssh answers, \\d s\n", done.stderr)
    new_address = moto.describe(instance_id)["PublicIpAddress"]
    assert moto.describe(instance_id)["State"]["Name"] == "running" and new_address != old_address
    assert run_ec2.recorder.argv() == ["ssh", "-o", "ConnectionAttempts=90", "-o",
                                       f"HostKeyAlias={instance_id}", f"ubuntu@{new_address}"]


def test_start_waits_for_a_pending_instance_and_shows_progress(run_ec2, moto, tmp_path, sshd_answers):
    name = unique("slow-box")
    instance_id = moto.launch(name)
    moto.set_state(instance_id, "pending")
    (tmp_path / "ec2.ini").write_text(f"[default]\ninstance = {name}\n")
    recorder = run_ec2.recorder
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent.parent / "ec2"), "--start"],
                            env=recorder.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=err, text=True)
    try:
        wait_until(lambda: "pending" in (tmp_path / "stderr").read_text(), what="the progress line")
        assert proc.poll() is None  # still waiting
        moto.set_state(instance_id, "running")
        assert proc.wait(timeout=30) == 0
    finally:
        stop_pid(proc.pid)
    assert (tmp_path / "stderr").read_text().startswith(f"ec2: {instance_id} ({name}): pending, 0 s\n"
                                                        f"ec2: {instance_id} ({name}): ssh answers, ")
    assert recorder.argv()[1:3] == ["-o", "ConnectionAttempts=90"]


def test_start_on_a_running_instance_just_connects(run_ec2, moto):
    instance_id = moto.launch(unique("up"))
    done = run_ec2("-H", instance_id, "--start")
    assert done.returncode == 0 and done.stderr == ""
    assert run_ec2.recorder.argv()[-1] == moto.describe(instance_id)["PublicDnsName"]


def test_region_and_aws_profile_reach_the_aws_cli(run_ec2, moto, tmp_path):
    name = unique("regional")
    moto.launch(name)  # in us-east-1
    done = run_ec2(profile=f"[default]\ninstance = {name}\nregion = eu-west-1\n")
    assert done.stderr == f"ec2: no EC2 instance {name!r} found in region eu-west-1\n"
    done = run_ec2(profile=f"[default]\ninstance = {name}\naws_profile = nosuch\n")
    assert done.returncode == 1
    assert done.stderr.startswith("ec2: aws: ") and "nosuch" in done.stderr
    aws_config = tmp_path / "aws-config"
    # With --profile the CLI takes that profile's keys, not the environment's.
    aws_config.write_text("[profile work]\nregion = us-east-1\n"
                          "aws_access_key_id = work\naws_secret_access_key = work\n")
    done = run_ec2("--dry-run", profile=f"[default]\ninstance = {name}\naws_profile = work\n",
               env={"AWS_CONFIG_FILE": str(aws_config)})
    assert done.returncode == 0, done.stderr


def test_missing_aws_cli(run_ec2, tmp_path):
    path = f"{run_ec2.recorder.bin}:/usr/bin:/bin"
    assert shutil.which("aws", path=path) is None
    done = run_ec2("-H", "i-0123456789abcdef0", env={"PATH": path})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("ec2: aws not found on PATH; install the AWS CLI")


# --- expired and missing logins: the CLI's own words, then what to run -------------------------

# AWS profiles as IAM Identity Center (SSO) writes them, in both forms, with
# the token each has cached, expired: the CLI refuses before any request.
SSO_CONFIG = """\
[profile legacy]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
sso_account_id = 111111111111
sso_role_name = Data
region = us-east-1

[profile modern]
sso_session = team
sso_account_id = 111111111111
sso_role_name = Data
region = us-east-1

[sso-session team]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1

[profile keys]
region = us-east-1

[profile noregion]
aws_access_key_id = testing
aws_secret_access_key = testing
"""
EXPIRED_TOKEN = {"startUrl": "https://example.awsapps.com/start", "region": "us-east-1",
                 "accessToken": "expired", "expiresAt": "2020-01-01T00:00:00Z"}


def aws_home(tmp_path, cached=True):
    """A HOME with SSO_CONFIG and, if CACHED, the expired tokens of both SSO profiles."""
    import hashlib

    home = tmp_path / "home"
    cache = home / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    (home / ".aws" / "config").write_text(SSO_CONFIG)
    for key in ("https://example.awsapps.com/start", "team") if cached else ():
        (cache / f"{hashlib.sha1(key.encode()).hexdigest()}.json").write_text(json.dumps(EXPIRED_TOKEN))
    return {"HOME": str(home), "AWS_CONFIG_FILE": str(home / ".aws" / "config"),
            "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}


MODES = {"connect": ["-H", "gpu", "--dry-run", "work"], "instances": ["-H", "gpu", "--instances"],
         "start": ["-H", "gpu", "--start"], "stop": ["-H", "gpu", "--stop"]}
LOGINS = [  # aws_profile =, whether the token is cached, the CLI's words, the line ec2 adds
    ("keys", True, "Unable to locate credentials",
     "set up AWS credentials: aws configure --profile keys (or aws configure sso --profile keys)"),
    ("legacy", True, "The SSO session associated with this profile has expired",
     "log in again: aws sso login --profile legacy"),
    ("modern", True, "Error when retrieving token from sso: Token has expired and refresh failed",
     "log in again: aws sso login --profile modern"),
    ("modern", False, "Error loading SSO Token: Token for team does not exist",
     "log in again: aws sso login --profile modern"),
    ("nosuch", True, "The config profile (nosuch) could not be found",
     "make that AWS profile: aws configure --profile nosuch (or aws configure sso)"),
    ("noregion", True, "You must specify a region",
     "set a region: aws configure --profile noregion, or region = in [gpu] of {config}"),
]


# Each login once, the modes taken in turn, so that every login and every mode is tried (not all
# 24 pairs: each pair is two CLI runs, and the words do not depend on the mode).
@pytest.mark.parametrize("mode, aws_profile, cached, words, hint",
                         [(list(MODES)[i % len(MODES)], *login) for i, login in enumerate(LOGINS)],
                         ids=[f"{p}-{c}" for p, c, _, _ in LOGINS])
def test_a_missing_or_expired_login_keeps_the_clis_words_and_adds_what_to_run(
        run_ec2, tmp_path, mode, aws_profile, cached, words, hint):
    env = aws_home(tmp_path, cached)
    del run_ec2.recorder.env["AWS_DEFAULT_REGION"]  # each AWS profile has its region, but one
    done = run_ec2(*MODES[mode], profile=f"[gpu]\ninstance = gpu-box\naws_profile = {aws_profile}\n",
                   env=env)
    assert done.returncode == 1 and run_ec2.recorder.argv() is None
    said, added = done.stderr.splitlines() + [""] * (2 - done.stderr.count("\n"))
    assert said.startswith("ec2: aws: ") and words in said, done.stderr
    assert added == "ec2: " + hint.format(config=tmp_path / "ec2.ini")


class ExpiredTokenAws(http.server.BaseHTTPRequestHandler):
    """AWS's answer to a request signed with an expired session token, as EC2 gives it."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>ExpiredToken</Code>'
                b"<Message>The security token included in the request is expired</Message></Error></Errors>"
                b"<RequestID>0</RequestID></Response>")
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("mode", MODES)
def test_expired_session_credentials_say_to_renew_them(run_ec2, mode):
    import threading

    with http.server.HTTPServer(("127.0.0.1", 0), ExpiredTokenAws) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            done = run_ec2(*MODES[mode], profile="[gpu]\ninstance = gpu-box\n",
                           env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}",
                                "AWS_SESSION_TOKEN": "expired"})
        finally:
            server.shutdown()
    assert done.returncode == 1
    said, added = done.stderr.splitlines()
    assert said.startswith("ec2: aws: An error occurred (ExpiredToken) when calling the")
    assert added == ("ec2: these AWS credentials have expired; renew them, or set up lasting ones:"
                     " aws configure")


def test_through_a_host_block_ssh_shows_the_login_to_run_as_why_it_closed(run_ec2, tmp_path):
    env = aws_home(tmp_path)
    done = run_ec2("--ssh-config", profile="[gpu]\ninstance = gpu-box\naws_profile = legacy\n")
    assert done.returncode == 0, done.stderr
    (tmp_path / "ssh_config").write_text(done.stdout)
    real_ssh = shutil.which("ssh")  # this machine's, not the recording one on ec2's PATH
    ssh = subprocess.run([real_ssh, "-F", str(tmp_path / "ssh_config"), "-o", "BatchMode=yes", "gpu", "true"],
                         env={**run_ec2.recorder.env, **env}, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert ssh.returncode == 255
    lines = ssh.stderr.splitlines()
    assert lines[0].startswith("ec2: aws: The SSO session associated with this profile has expired")
    assert lines[1] == "ec2: log in again: aws sso login --profile legacy"


@pytest.mark.parametrize("option", ["--status", "--stop", "--start"])
def test_instance_commands_need_an_instance(run_ec2, option):
    done = run_ec2("-H", "plain-host", option)
    assert done.returncode == 2 and "need an EC2 instance" in done.stderr


def test_host_and_instance_in_one_profile_is_an_error(run_ec2, tmp_path):
    done = run_ec2(profile="[default]\nhost = a\ninstance = b\n")
    assert done.returncode == 1 and "gives both 'host =' and 'instance ='" in done.stderr


def test_start_on_a_stopping_instance_waits_until_it_has_stopped_then_starts_it(run_ec2, moto, tmp_path,
                                                                                sshd_answers):
    name = unique("winding-down")
    instance_id = moto.launch(name)
    moto.set_state(instance_id, "stopping")
    (tmp_path / "ec2.ini").write_text(f"[gpu]\ninstance = {name}\n")
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent.parent / "ec2"), "-H", "gpu",
                             "--start"], env=run_ec2.recorder.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err, text=True)
    try:
        wait_until(lambda: "stopping" in (tmp_path / "stderr").read_text(), what="the progress line")
        assert proc.poll() is None and moto.describe(instance_id)["State"]["Name"] == "stopping"
        moto.set_state(instance_id, "stopped")
        assert proc.wait(timeout=30) == 0
    finally:
        stop_pid(proc.pid)
    said = (tmp_path / "stderr").read_text().splitlines()
    assert said[:2] == [f"ec2: {instance_id} ({name}): stopping, 0 s",
                        f"ec2: starting {instance_id} ({name}), a t3.micro at ?/h"]
    assert moto.describe(instance_id)["State"]["Name"] == "running"


README_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Resource": "*",
    "Action": ["ec2:DescribeInstances", "ec2:StartInstances", "ec2:StopInstances"]}]}


def test_the_readmes_iam_permissions_are_enough_and_none_is_refused(recorder, tmp_path):
    # moto checks IAM after its first seven calls: describe-images (made by
    # Moto), run-instances, and the five below that make the two users.
    moto = Moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "7"})
    try:
        instance_id = moto.launch(unique("guarded"))
        keys = {}
        for user in ("allowed", "nobody"):
            moto.aws("iam", "create-user", "--user-name", user)
            if user == "allowed":
                moto.aws("iam", "put-user-policy", "--user-name", user, "--policy-name", "ec2",
                         "--policy-document", json.dumps(README_POLICY))
            key = moto.aws("iam", "create-access-key", "--user-name", user)["AccessKey"]
            keys[user] = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                          "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        recorder.env.update(moto.env)
        with held_port() as port:  # where ec2 waits for sshd after the start (ssh -G says so)
            recorder.env["EC2_TEST_SSH_G"] = f"-o HostName=127.0.0.1 -o Port={port}"
            for option in ("--status", "--stop", "--start"):
                done = recorder.run("-H", instance_id, option, env=keys["allowed"])
                assert done.returncode == 0, (option, done.stderr)
        assert recorder.argv()[-1] == moto.describe(instance_id, env=keys["allowed"])["PublicDnsName"]
        done = recorder.run("-H", instance_id, env=keys["nobody"])
        assert done.returncode == 1 and done.stderr.count("\n") == 1
        assert done.stderr.startswith("ec2: aws: An error occurred (AccessDenied")
    finally:
        moto.stop()


# --- ec2 --instances ------------------------------------------------------------


def instance_lines(done, *ids):
    """The --instances lines of these instances, in the order printed, split into columns."""
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines() if any(i in line for i in ids)]


def test_instances_lists_running_first_with_uptime_and_profile(run_ec2, moto):
    stopped, running = unique("a-stopped"), unique("b-running")
    stopped_id, running_id = moto.launch(stopped), moto.launch(running, "g5.xlarge")
    moto.aws("ec2", "stop-instances", "--instance-ids", stopped_id)
    moto.set_state(running_id, f"launched {3 * 3600 + 25 * 60 + 5}")
    profile = f"[train]\ninstance = {running}\n\n[old]\ninstance = {stopped_id}\n"
    done = run_ec2("--instances", profile=profile)
    (first, second) = instance_lines(done, stopped_id, running_id)
    address = moto.describe(running_id)["PublicDnsName"]
    assert first == [running, running_id, "running", "g5.xlarge", address, "3h", "25m", "?", "?", "-",
                     "train"]  # moto's Windows AMI, which the suite's Price List stand-in refuses
    assert second[:3] == [stopped, stopped_id, "stopped"] and second[-1] == "old"
    assert "-" in second  # no uptime for a stopped instance
    assert run_ec2.recorder.argv() is None  # nothing was connected to


def test_instances_uses_the_region_of_the_profile(run_ec2, moto, tmp_path):
    log = tmp_path / "aws-argv"
    wrapper = tmp_path / "bin" / "aws"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {shutil.which("aws")} "$@"\n')
    wrapper.chmod(0o755)
    done = run_ec2("--instances", "-H", "far", profile="[far]\nhost = x\nregion = eu-west-3\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no instances in region eu-west-3\n"
    assert log.read_text().splitlines() == ["ec2 describe-instances --output json --region eu-west-3"]


def test_instances_takes_the_default_profiles_region(run_ec2, moto, tmp_path):
    done = run_ec2("--instances", profile="[default]\nhost = x\nregion = ap-southeast-2\n")
    assert done.stdout == "no instances in region ap-southeast-2\n", done.stderr


def test_instances_needs_a_profile_for_h(run_ec2, moto):
    done = run_ec2("--instances", "-H", "i-0123456789abcdef0")
    assert done.returncode == 2 and "--instances takes a profile of" in done.stderr


def test_instances_passes_on_what_aws_says(run_ec2, moto):
    done = run_ec2("--instances", env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert done.returncode == 1 and done.stderr.startswith("ec2: aws: ")


# --- what it costs: the Price List stand-in, moto's Spot prices ----------------

@pytest.fixture
def price_list(run_ec2, tmp_path):
    """The Price List stand-in, the CLI pointed at it, and a cache of the test's own, so no
    price is remembered from another test."""
    with PriceList() as server:
        run_ec2.recorder.env.update(server.env, XDG_CACHE_HOME=str(tmp_path / "cache"))
        yield server


def priced_world(moto):
    """A g5.xlarge on Linux up 3h 25m, a Spot one, a stopped one and one of moto's Windows
    AMI; their ids, in that order."""
    on_demand = moto.launch(unique("a-g5"), "g5.xlarge", image=moto.linux_image)
    moto.set_state(on_demand, f"launched {3 * 3600 + 25 * 60 + 5}")
    spot = moto.launch(unique("b-spot"), "g5.xlarge", image=moto.linux_image, spot=True)
    stopped = moto.launch(unique("c-stopped"), "t3.large", image=moto.linux_image)
    moto.aws("ec2", "stop-instances", "--instance-ids", stopped)
    windows = moto.launch(unique("d-windows"), "g5.xlarge")
    return on_demand, spot, stopped, windows


G5_FILTERS = {"instanceType": "g5.xlarge", "regionCode": "us-east-1", "operatingSystem": "Linux",
              "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
              "licenseModel": "No License required"}


def test_instances_prices_on_demand_and_spot_and_not_what_is_stopped_with_the_real_cli(run_ec2, moto,
                                                                                        price_list):
    ids = priced_world(moto)
    done = run_ec2("--instances")
    assert done.stderr == ""
    on_demand, spot, stopped, windows = (line for i in ids for line in instance_lines(done, i))
    assert on_demand[5:9] == ["3h", "25m", "$1.006/h", "$3.44"]
    assert spot[6:9] == ["$0.00001/h", "spot", "$0.00"]  # moto's one stub price, through the real call
    assert stopped[2:3] + stopped[5:8] == ["stopped", "-", "-", "-"]
    assert windows[6:8] == ["?", "?"]  # priced as Windows, which the stand-in has no product for
    asked = [r["filters"] for r in price_list.requests]
    assert G5_FILTERS in asked and {**G5_FILTERS, "operatingSystem": "Windows"} in asked
    assert {r["target"] for r in price_list.requests} == {"AWSPriceListService.GetProducts"}
    again = run_ec2("--instances")
    prices = [line[7:] for line in instance_lines(done, *ids)]
    assert [line[7:] for line in instance_lines(again, *ids)] == prices
    assert len(price_list.requests) == len(asked)  # remembered: no price request the second time


@pytest.mark.parametrize("mode", ["denied", "garbage", "several"],
                         ids=["no pricing permission", "a garbage answer", "several products"])
def test_a_price_that_cannot_be_had_is_a_question_mark_the_rest_of_the_line_stands(run_ec2, moto, tmp_path,
                                                                                   mode):
    on_demand, *_ = priced_world(moto)
    with PriceList(mode) as server:
        run_ec2.recorder.env.update(server.env, XDG_CACHE_HOME=str(tmp_path / "cache"))
        done = run_ec2("--instances")
        assert server.requests  # asked, and refused or answered so
    assert done.returncode == 0 and done.stderr == ""
    (line,) = instance_lines(done, on_demand)
    address = moto.describe(on_demand)["PublicDnsName"]
    assert line[2:9] == ["running", "g5.xlarge", address, "3h", "25m", "?", "?"]


def test_status_stop_and_start_say_the_price(run_ec2, moto, price_list, sshd_answers):
    name = unique("gpu-box")
    instance_id = moto.launch(name, "g5.xlarge", image=moto.linux_image)
    moto.set_state(instance_id, f"launched {3 * 3600 + 25 * 60 + 5}")
    profile = f"[default]\ninstance = {name}\n"
    status = run_ec2("--status", profile=profile)
    assert status.stdout.endswith("  up 3h 25m, $1.006/h on demand, $3.44 since start\n"), status.stderr
    stop = run_ec2("--stop", profile=profile)
    assert stop.stdout == (f"stopping instance {instance_id} ({name}): up 3h 25m, $1.006/h on demand,"
                           " $3.44 since start\n")
    assert len(price_list.requests) == 1  # remembered since --status
    start = run_ec2("--start", "--type", "g5.2xlarge", profile=profile)
    assert start.returncode == 0, start.stderr
    assert f"ec2: starting {instance_id} ({name}), a g5.2xlarge at ?/h\n" in start.stderr  # none in the table
    assert price_list.requests[-1]["filters"] == {**G5_FILTERS, "instanceType": "g5.2xlarge"}


def test_a_connection_asks_no_price(run_ec2, moto, price_list, sshd_answers):
    name = unique("gpu-box")
    instance_id = moto.launch(name, "g5.xlarge", image=moto.linux_image)
    moto.aws("ec2", "stop-instances", "--instance-ids", instance_id)
    done = run_ec2("-H", "gpu", profile=f"[gpu]\ninstance = {name}\nauto_start = yes\n")
    assert done.returncode == 0, done.stderr
    assert f"ec2: starting {instance_id} ({name})\n" in done.stderr and price_list.requests == []


# --- instances with no public address: the way in ------------------------------
#
# moto answers describe-instances and send-ssh-public-key; the stand-in aws
# (tests/aws_standin.py) answers what moto does not do, and logs every call.


@pytest.fixture
def private(run_ec2, moto, tmp_path):
    """A moto instance in a subnet of its own, with no public address; the stand-in aws on PATH."""
    log = install_aws_standin(tmp_path / "aws-bin", plugin=False)
    run_ec2.recorder.env.update(PATH=f"{tmp_path / 'aws-bin'}{os.pathsep}{run_ec2.recorder.env['PATH']}",
                                EC2_TEST_AWS_LOG=str(log))
    subnet = moto.private_subnet("10.77.0.0/16")
    instance_id = moto.launch(unique("private"), subnet=subnet)
    found = moto.describe(instance_id)
    assert "PublicIpAddress" not in found and "PublicDnsName" not in found or not found["PublicDnsName"]
    return found, log


def plugin_on_path(run_ec2, tmp_path):
    (tmp_path / "aws-bin" / "session-manager-plugin").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "aws-bin" / "session-manager-plugin").chmod(0o755)


def commands(log):
    return [[word for word in call if not word.startswith("-")][:2] for call in aws_calls(log)]


def test_direct_costs_one_aws_call(run_ec2, moto, tmp_path):
    log = install_aws_standin(tmp_path / "aws-bin")
    instance_id = moto.launch(unique("public"))
    path = f"{tmp_path / 'aws-bin'}{os.pathsep}{run_ec2.recorder.env['PATH']}"  # the recording ssh stays
    done = run_ec2("-H", instance_id, env={"PATH": path, "EC2_TEST_AWS_LOG": str(log)})
    assert done.returncode == 0 and done.stderr == ""
    assert run_ec2.recorder.argv()[-1] == moto.describe(instance_id)["PublicDnsName"]
    assert commands(log) == [["ec2", "describe-instances"]]


def test_auto_with_nothing_but_the_private_address_says_what_was_missing(run_ec2, private):
    found, log = private
    done = run_ec2("-H", found["InstanceId"])  # no plugin, and the real CLI is version 1
    assert done.returncode == 0
    address = found["PrivateIpAddress"]
    assert run_ec2.recorder.argv()[-1] == address
    who = f"{found['InstanceId']} ({found['Tags'][0]['Value']})"
    assert done.stderr.startswith(f"ec2: {who} has no public-dns address; trying its private"
                                  f" address {address} (not SSM, as the Session Manager plugin")
    assert "; not EICE, as the AWS CLI here (aws-cli/1." in done.stderr
    # Then `aws --version` and the endpoint question at once: the version decides.
    assert commands(log)[0] == ["ec2", "describe-instances"]
    assert sorted(commands(log)[1:]) == [[], ["ec2", "describe-instance-connect-endpoints"]]


def test_the_real_cli_version_1_cannot_open_a_tunnel(run_ec2, private):
    found, _ = private
    done = run_ec2("-H", found["InstanceId"], "--via", "eice")
    assert (done.returncode, run_ec2.recorder.argv()) == (1, None)
    assert done.stderr.startswith("ec2: cannot connect through EICE: the AWS CLI here (aws-cli/1.")
    assert done.stderr.endswith(") has no `aws ec2-instance-connect open-tunnel`; install AWS CLI v2,"
                                " 2.12 or later\n")


@pytest.mark.parametrize("via, env, message", [
    ("ssm", {}, "cannot connect through SSM: the Session Manager plugin (session-manager-plugin) is not"
     " installed; install it: https://docs.aws.amazon.com/"),
    ("ssm", {"plugin": True, "EC2_TEST_SSM_ANSWER": '{"InstanceInformationList": []}'},
     "cannot connect through SSM: {id} is not online in SSM: its SSM agent must run, its instance profile"
     " must allow SSM (AmazonSSMManagedInstanceCore), and it must reach SSM on port 443"),
    ("eice", {"EC2_TEST_AWS_VERSION": "aws-cli/2.15.0 Python/3.11.6", "EC2_TEST_EICE_ANSWER":
              '{"InstanceConnectEndpoints": []}'},
     "cannot connect through EICE: there is no EC2 Instance Connect Endpoint in {vpc}; create one: aws ec2"
     " create-instance-connect-endpoint --subnet-id {subnet}"),
])
def test_each_missing_piece_is_one_line_and_no_ssh(run_ec2, private, tmp_path, via, env, message):
    found, _ = private
    if env.pop("plugin", False):
        plugin_on_path(run_ec2, tmp_path)
    done = run_ec2("-H", found["InstanceId"], "--via", via, env=env)
    assert (done.returncode, run_ec2.recorder.argv()) == (1, None)
    expected = message.format(id=found["InstanceId"], vpc=found["VpcId"], subnet=found["SubnetId"])
    assert done.stderr.startswith(f"ec2: {expected}") and done.stderr.count("\n") == 1


def test_auto_takes_ssm_and_then_eice(run_ec2, private, tmp_path):
    found, log = private
    instance_id = found["InstanceId"]
    endpoint = {"InstanceConnectEndpointId": "eice-0abc", "State": "create-complete"}
    eice = {"EC2_TEST_AWS_VERSION": "aws-cli/2.15.0",
            "EC2_TEST_EICE_ANSWER": json.dumps({"InstanceConnectEndpoints": [endpoint]})}
    done = run_ec2("--dry-run", "-H", instance_id, env=eice)
    assert "ProxyCommand=aws ec2-instance-connect open-tunnel --instance-id" in done.stdout
    assert "--instance-connect-endpoint-id eice-0abc" in done.stdout
    plugin_on_path(run_ec2, tmp_path)
    online = json.dumps({"InstanceInformationList": [{"InstanceId": instance_id, "PingStatus": "Online"}]})
    done = run_ec2("--dry-run", "-H", instance_id, env={**eice, "EC2_TEST_SSM_ANSWER": online})
    assert "ProxyCommand=aws ssm start-session --target" in done.stdout
    assert done.stderr == (f"ec2: {instance_id} ({found['Tags'][0]['Value']}) has no public-dns address;"
                           " connecting through SSM Session Manager\n")
    # The SSM filter reached the CLI as JSON, and the CLI took it; the instance was remembered.
    assert ["ssm", "describe-instance-information"] in commands(log)
    # Remembered, but through a tunnel whether it runs is asked again: once for each connection.
    assert commands(log).count(["ec2", "describe-instances"]) == 2


@pytest.mark.parametrize("via, env", [
    ("ssm", {"EC2_TEST_SSM_ANSWER": '{"InstanceInformationList": [{"PingStatus": "Online"}]}'}),
    ("eice", {"EC2_TEST_AWS_VERSION": "aws-cli/2.15.0", "EC2_TEST_EICE_ANSWER": '{"InstanceConnectEndpoints":'
              ' [{"InstanceConnectEndpointId": "eice-0abc", "State": "create-complete"}]}'}),
])
def test_a_tunnel_s_exec_is_exactly_what_dry_run_prints(run_ec2, private, tmp_path, via, env):
    found, _ = private
    plugin_on_path(run_ec2, tmp_path)
    args = ["-H", f"ubuntu@{found['InstanceId']}", "--via", via, "-L", "6006", "--", "-o", "LogLevel=ERROR"]
    dry = run_ec2("--dry-run", *args, env=env)
    done = run_ec2(*args, env=env)
    assert dry.returncode == done.returncode == 0, dry.stderr
    assert shlex.split(dry.stdout) == run_ec2.recorder.argv()
    assert dry.stderr == done.stderr
    assert " portNumber=%p'" in dry.stdout or " --remote-port %p " in dry.stdout  # %p unquoted
    assert "-o ServerAliveInterval=30 -o ExitOnForwardFailure=yes" in dry.stdout


def test_push_key_reaches_ec2_instance_connect_with_the_user_and_key(run_ec2, moto, tmp_path):
    instance_id = moto.launch(unique("pushed"))
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    done = run_ec2("-H", "gpu", profile=f"[gpu]\ninstance = {instance_id}\nuser = ubuntu\nidentity = {key}\n"
                   "push_key = yes\n")
    assert done.returncode == 0, done.stderr
    assert (instance_id, "ubuntu", key.with_suffix(".pub").read_text().strip()) in moto.sent_keys()
    assert run_ec2.recorder.argv()[1:3] == ["-i", str(key)]


# --- an instance found through moto, reached for real -------------------------


def login_through_moto(moto, host, tmp_path, known_hosts_text=None, checking="accept-new"):
    """ec2 -H train --list, where [train] names a moto instance and the user's ssh
    config maps its public name to the sandbox: nothing connects to moto's address."""
    name = unique("train")
    instance_id = moto.launch(name)
    dns = moto.describe(instance_id)["PublicDnsName"]
    known_hosts = tmp_path / "known_hosts"
    if known_hosts_text is not None:
        known_hosts.write_text(known_hosts_text.format(id=instance_id))
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host {dns}\n  HostName {host.address}\n  UserKnownHostsFile {known_hosts}\n"
                          f"  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking {checking}\n"
                          "  BatchMode yes\n  IdentitiesOnly yes\n  LogLevel ERROR\n")
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    config = tmp_path / "ec2.ini"
    config.write_text(f"[train]\ninstance = {name}\nuser = {user}\nidentity = {host.base / 'user_key'}\n"
                      f"ssh_options = -F {ssh_config}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
    done = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "ec2"), "--config", str(config),
                           "-H", "train", "--list"], env={**env, **moto.env}, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    return done, instance_id, dns, known_hosts


def test_an_instance_profile_logs_in_and_keeps_the_key_under_the_id(moto, host, tmp_path):
    done, instance_id, dns, known_hosts = login_through_moto(moto, host, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(f"@{dns}\n") and done.stdout.startswith("no sessions on ")
    host_key = (host.base / "host_key.pub").read_text().split()
    assert known_hosts.read_text().split() == [instance_id, host_key[0], host_key[1]]


def test_another_key_behind_the_same_instance_id_is_refused(moto, host, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key = other.with_suffix(".pub").read_text().split()
    done, *_ = login_through_moto(moto, host, tmp_path, f"{{id}} {key[0]} {key[1]}\n", checking="yes")
    assert done.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in done.stderr


# --- answers remembered: a connection by name within 10 minutes asks AWS nothing -----------


@pytest.fixture
def counted(run_ec2, tmp_path):
    """The way-in tests' stand-in aws first on ec2's PATH, handing every call to the real CLI;
    returns calls(): the (service, command) of each call so far but the price requests, which
    --stop and --start make at the same time as their own."""
    log = install_aws_standin(tmp_path / "aws-bin", plugin=False)
    env = run_ec2.recorder.env
    env.update(PATH=f"{tmp_path / 'aws-bin'}{os.pathsep}{env['PATH']}", EC2_TEST_AWS_LOG=str(log))
    return lambda: [call[:2] for call in aws_calls(log) if call[0] != "pricing"]


def test_a_connection_by_name_within_the_time_asks_aws_nothing(run_ec2, moto, counted):
    name = unique("gpu-box")
    moto.launch(name)
    profile = f"[gpu]\ninstance = {name}\nuser = ubuntu\n"
    first = run_ec2("-H", "gpu", "--dry-run", "work", profile=profile)
    assert first.returncode == 0, first.stderr
    assert counted() == [["ec2", "describe-instances"]]  # a first connection: exactly one call
    again = run_ec2("-H", "gpu", "--dry-run", "work", profile=profile)
    assert (again.returncode, again.stdout) == (0, first.stdout)
    assert counted() == [["ec2", "describe-instances"]]


def test_after_stop_and_after_start_the_next_connection_asks_again(run_ec2, moto, counted, sshd_answers):
    name = unique("gpu-box")
    moto.launch(name)
    profile = f"[gpu]\ninstance = {name}\nuser = ubuntu\n"
    assert run_ec2("-H", "gpu", "--dry-run", "work", profile=profile).returncode == 0
    assert run_ec2("-H", "gpu", "--stop", profile=profile).returncode == 0
    assert counted()[1:] == [["ec2", "describe-instances"], ["ec2", "stop-instances"]]
    stopped = run_ec2("-H", "gpu", "--dry-run", "work", profile=profile)
    assert stopped.returncode == 1 and "is stopped" in stopped.stderr
    assert counted()[3:] == [["ec2", "describe-instances"]]
    started = run_ec2("-H", "gpu", "--start", profile=profile)
    assert started.returncode == 0, started.stderr
    asked = len(counted())
    assert counted()[4:6] == [["ec2", "describe-instances"], ["ec2", "start-instances"]]
    after = run_ec2("-H", "gpu", "--dry-run", "work", profile=profile)
    assert after.returncode == 0 and counted()[asked:] == [["ec2", "describe-instances"]]
    assert run_ec2("-H", "gpu", "--dry-run", "work", profile=profile).stdout == after.stdout
    assert len(counted()) == asked + 1  # remembered again


def test_start_type_changes_the_type_of_the_stopped_instance_and_status_shows_it(run_ec2, moto, sshd_answers):
    name = unique("resized")
    instance_id = moto.launch(name, instance_type="t3.micro")
    moto.aws("ec2", "stop-instances", "--instance-ids", instance_id)
    profile = f"[gpu]\ninstance = {name}\n"
    done = run_ec2("-H", "gpu", "--start", "--type", "t3.large", profile=profile)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"ec2: {instance_id} ({name}): type t3.micro -> t3.large\n")
    assert moto.describe(instance_id)["InstanceType"] == "t3.large"
    assert run_ec2("-H", "gpu", "--status", profile=profile).stdout.split()[3] == "t3.large"
    done = run_ec2("-H", "gpu", "--start", "--type", "t3.xlarge", profile=profile)  # it runs now
    assert done.returncode == 1
    assert "its type changes only while it is stopped: `ec2 -H gpu --stop`" in done.stderr


# --- back in one step, with the real CLI: the question at a terminal, and the cool-down ------------


LIST = [sys.executable, str(EC2), "-H", "gpu", "--list"]


def on_a_terminal(argv, env, typed):
    """Run ARGV with a pty for stdin, stdout and stderr; once it asks [Y/n], type TYPED.
    Returns (exit status, all it wrote)."""
    import select

    master, slave = os.openpty()
    proc = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    said, deadline = b"", time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the pty's other end has closed: it ended
                    break
                if not chunk:
                    break
                said += chunk
                if said.endswith(b"[Y/n] ") and typed is not None:
                    os.write(master, typed)
                    typed = None
            elif proc.poll() is not None:
                break
        return proc.wait(10), said.decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)
        stop_pid(proc.pid)


@pytest.mark.parametrize("typed, starts", [(b"\n", True), (b"n\n", False)])  # y: test_way_in_unit.py
def test_ask_at_a_terminal_starts_on_y_or_enter_and_not_on_n(run_ec2, moto, sshd_answers, typed, starts):
    name = unique("asked")
    instance_id = moto.launch(name)
    moto.aws("ec2", "stop-instances", "--instance-ids", instance_id)
    (Path(run_ec2.recorder.env["EC2_CONFIG"])).write_text(f"[gpu]\ninstance = {name}\nuser = ubuntu\n")
    status, said = on_a_terminal(LIST, run_ec2.recorder.env, typed)
    assert f"ec2: instance {instance_id} ({name}) is stopped; start it? [Y/n] " in said
    assert moto.describe(instance_id)["State"]["Name"] == ("running" if starts else "stopped")
    assert (status == 0) == starts, said
    if not starts:
        assert said.endswith(f"ec2: instance {instance_id} ({name}) was not started; `ec2 -H gpu --start`"
                             " starts it\n")


def test_the_cool_down_holds_proxy_back_and_lets_a_person_start_it(run_ec2, moto, sshd_answers):
    name = unique("idled")
    instance_id = moto.launch(name)
    moto.set_state(instance_id, "self-stopped 10")  # as idle stop leaves it, 10 minutes ago
    found = moto.describe(instance_id)
    assert found["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"  # as the CLI hands it over
    profile = f"[gpu]\ninstance = {name}\nuser = ubuntu\nauto_start = yes\nidle_stop = 1h\n"
    done = run_ec2("--proxy", "gpu", profile=profile)
    assert done.returncode == 1 and run_ec2.recorder.argv() is None
    assert done.stderr == (f"ec2: instance {instance_id} ({name}) stopped itself 10m ago (idle stop, or a"
                           " shutdown on it); a connection without a terminal does not start it within 1h of"
                           " that, so that an editor left open does not undo the stop; `ec2 -H gpu --start`"
                           " starts it\n")
    assert moto.describe(instance_id)["State"]["Name"] == "stopped"
    status, said = on_a_terminal(LIST, run_ec2.recorder.env, None)
    assert status == 0 and f"ec2: starting {instance_id} ({name})" in said, said  # a person: yes
    assert moto.describe(instance_id)["State"]["Name"] == "running"


@pytest.mark.parametrize("when, starts", [("130", True), ("-", False)])
def test_proxy_starts_one_that_stopped_itself_two_windows_ago_but_not_one_ec2_cannot_date(
        run_ec2, moto, sshd_answers, when, starts):
    name = unique("idled")
    instance_id = moto.launch(name)
    moto.set_state(instance_id, "public-ip 127.0.0.1")  # --proxy connects there itself, and moto keeps it
    moto.set_state(instance_id, f"self-stopped {when}")
    done = run_ec2("--proxy", f"gpu:{sshd_answers}", profile=f"[gpu]\ninstance = {name}\nauto_start = yes\n"
                   "idle_stop = 1h\naddress = public-ip\n")
    assert moto.describe(instance_id)["State"]["Name"] == ("running" if starts else "stopped"), done.stderr
    if not starts:
        assert "stopped itself at a time EC2 does not give" in done.stderr
