"""The way in to an instance (direct, SSM, EICE), push_key, --ssh-config and the way back in
(a stopped instance started when you connect), in-process.

The AWS CLI is replaced by a fake that answers by command and records each
call, so these tests show which calls each decision costs.
"""

import functools
import io
import json
import os
import shlex
import shutil
import socket
import stat
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import ROOT, ec2, held_port, running_once_started, write_config

INSTANCE_ID = "i-0123456789abcdef0"
PLUGIN_PAGE = ec2.SSM_PLUGIN_PAGE
DENIED = "aws: An error occurred (AccessDeniedException) when calling the X operation: no"
UNAUTHORIZED = "aws: An error occurred (UnauthorizedOperation) when calling the X operation: no"


class Aws:
    """ec2.aws and ec2.aws_cli_version replaced: answers by (service, command), records calls."""

    def __init__(self, monkeypatch, version=(2, 15), **answers):
        self.calls, self.answers = [], answers
        self.version = version
        monkeypatch.setattr(ec2, "aws", self)
        monkeypatch.setattr(ec2, "aws_cli_version", lambda: (self.version, f"aws-cli/{self.version}"))

    def __call__(self, profile, *args, **how):  # how: aws()'s region and timeout
        self.calls.append(args)
        answer = self.answers[args[1].replace("-", "_")]
        if isinstance(answer, str):
            raise ec2.Failure(answer)
        return answer


def online(status="Online"):
    return {"InstanceInformationList": [{"InstanceId": INSTANCE_ID, "PingStatus": status}]}


def endpoints(*states):
    return {"InstanceConnectEndpoints": [{"InstanceConnectEndpointId": f"eice-0{n}", "State": state}
                                         for n, state in enumerate(states)]}


def instance(public=None, private="10.1.2.3"):
    found = {"InstanceId": INSTANCE_ID, "State": {"Name": "running"}, "VpcId": "vpc-0abc",
             "SubnetId": "subnet-0def"}
    if public:
        found.update(PublicDnsName=public, PublicIpAddress="1.2.3.4")
    if private:
        found["PrivateIpAddress"] = private
    return found


def profile(**keys):
    p = ec2.Profile("gpu", "/cfg")
    p.instance = INSTANCE_ID
    for key, value in keys.items():
        setattr(p, key, value)
    return p


def plugin(present):
    return lambda name: f"/usr/bin/{name}" if present and name == ec2.SSM_PLUGIN else None


SSM = ["aws", "ssm", "start-session", "--target", INSTANCE_ID, "--document-name", "AWS-StartSSHSession",
       "--parameters", f"portNumber={ec2.PORT_TOKEN}"]
EICE = ["aws", "ec2-instance-connect", "open-tunnel", "--instance-id", INSTANCE_ID, "--remote-port",
        ec2.PORT_TOKEN]

# The decision table: mode, public address, plugin, answers -> path, host, aws calls made
# (auto asks SSM and EICE at once, so it asks EICE also where SSM will do).
ROUTES = [
    # auto with the address asked for: direct, and no call beyond describe-instances.
    ("auto", "ec2-1.example", True, {}, "direct", "ec2-1.example", []),
    ("direct", "ec2-1.example", True, {}, "direct", "ec2-1.example", []),
    ("auto", None, True, {"describe_instance_information": online(),
                          "describe_instance_connect_endpoints": endpoints("create-complete")}, "ssm",
     INSTANCE_ID, ["describe-instance-information", "describe-instance-connect-endpoints"]),
    ("auto", None, False, {"describe_instance_connect_endpoints": endpoints("create-complete")}, "eice",
     INSTANCE_ID, ["describe-instance-connect-endpoints"]),
    ("auto", None, True, {"describe_instance_information": online("ConnectionLost"),
                          "describe_instance_connect_endpoints": endpoints("create-complete")},
     "eice", INSTANCE_ID, ["describe-instance-information", "describe-instance-connect-endpoints"]),
    # An AccessDenied is "unknown": auto moves on.
    ("auto", None, True, {"describe_instance_information": DENIED,
                          "describe_instance_connect_endpoints": endpoints("create-complete")},
     "eice", INSTANCE_ID, ["describe-instance-information", "describe-instance-connect-endpoints"]),
    ("auto", None, False, {"describe_instance_connect_endpoints": endpoints("create-in-progress")},
     "direct", "10.1.2.3", ["describe-instance-connect-endpoints"]),
    ("auto", None, False, {"describe_instance_connect_endpoints": UNAUTHORIZED},
     "direct", "10.1.2.3", ["describe-instance-connect-endpoints"]),
    # An explicit mode goes ahead on "unknown".
    ("ssm", "ec2-1.example", True, {"describe_instance_information": DENIED}, "ssm", INSTANCE_ID,
     ["describe-instance-information"]),
    ("eice", None, True, {"describe_instance_connect_endpoints": DENIED}, "eice", INSTANCE_ID,
     ["describe-instance-connect-endpoints"]),
]


@pytest.mark.parametrize("mode, public, has_plugin, answers, path, host, calls", ROUTES)
def test_the_way_in(monkeypatch, mode, public, has_plugin, answers, path, host, calls):
    fake = Aws(monkeypatch, **answers)
    route = ec2.choose_route(profile(), instance(public), mode, plugin(has_plugin))
    assert (route.mode, route.host) == (path, host)
    assert sorted(args[1] for args in fake.calls) == sorted(calls)
    assert (route.note is None) == (path == "direct" and host != "10.1.2.3")


def decision(monkeypatch, mode, public, has_plugin, answers):
    """choose_route's Route, or the message of its Failure."""
    Aws(monkeypatch, **answers)
    try:
        return ec2.choose_route(profile(), instance(public), mode, plugin(has_plugin))
    except ec2.Failure as e:
        return str(e)


# Rows where a way in is missing or an answer is not IAM's: a Failure, said as before.
FAILING = [
    ("auto", None, False, {"describe_instance_connect_endpoints": endpoints()}, None),
    ("auto", None, True, {"describe_instance_information": "aws: throttled",
                          "describe_instance_connect_endpoints": endpoints("create-complete")}, None),
    ("auto", None, True, {"describe_instance_information": online("ConnectionLost"),
                          "describe_instance_connect_endpoints": "aws: throttled"}, None),
    ("ssm", None, False, {}, None),
    ("eice", None, True, {"describe_instance_connect_endpoints": endpoints()}, None),
]


@pytest.mark.parametrize("mode, public, has_plugin, answers", [row[:4] for row in ROUTES + FAILING])
def test_the_checks_at_once_decide_as_the_checks_one_after_the_other(monkeypatch, mode, public,
                                                                      has_plugin, answers):
    at_once = decision(monkeypatch, mode, public, has_plugin, answers)
    monkeypatch.setattr(ec2, "at_once", lambda *calls: [ec2.at_once_call(call) for call in calls])
    assert at_once == decision(monkeypatch, mode, public, has_plugin, answers)


def test_auto_asks_ssm_and_eice_at_once(monkeypatch):
    import threading

    both = threading.Barrier(2, timeout=10)  # broken unless the two questions are out together

    def ask(profile, *args):
        both.wait()
        return online() if args[0] == "ssm" else endpoints("create-complete")

    monkeypatch.setattr(ec2, "aws", ask)
    monkeypatch.setattr(ec2, "aws_cli_version", lambda: ((2, 15), "aws-cli/2.15"))
    assert ec2.choose_route(profile(), instance(), "auto", plugin(True)).mode == "ssm"


def test_eice_asks_for_the_cli_version_and_the_endpoint_at_once(monkeypatch):
    import threading

    both = threading.Barrier(2, timeout=10)

    def version():
        both.wait()
        return (2, 15), "aws-cli/2.15"

    def ask(profile, *args):
        both.wait()
        return endpoints("create-complete")

    monkeypatch.setattr(ec2, "aws", ask)
    monkeypatch.setattr(ec2, "aws_cli_version", version)
    assert ec2.choose_route(profile(), instance(), "eice", plugin(False)).host == INSTANCE_ID


def test_ssm_asks_for_this_instance_and_tunnels_to_ssh_s_port(monkeypatch):
    fake = Aws(monkeypatch, describe_instance_information=online(),
               describe_instance_connect_endpoints=endpoints())
    route = ec2.choose_route(profile(region="eu-west-1", aws_profile="work"), instance(), "auto",
                             plugin(True))
    (args,) = [args for args in fake.calls if args[0] == "ssm"]
    assert args[:3] == ("ssm", "describe-instance-information", "--filters")
    assert json.loads(args[3]) == [{"Key": "InstanceIds", "Values": [INSTANCE_ID]}]
    assert route.tunnel == [*SSM, "--region", "eu-west-1", "--profile", "work"]
    assert route.note == f"{INSTANCE_ID} has no public-dns address; connecting through SSM Session Manager"


def test_eice_looks_in_the_instance_s_vpc_and_names_the_endpoint(monkeypatch):
    fake = Aws(monkeypatch,
               describe_instance_connect_endpoints=endpoints("delete-complete", "create-complete"))
    route = ec2.choose_route(profile(), instance(), "eice", plugin(False))
    (args,) = fake.calls
    assert args[:3] == ("ec2", "describe-instance-connect-endpoints", "--filters")
    assert json.loads(args[3]) == [{"Name": "vpc-id", "Values": ["vpc-0abc"]}]
    assert route.tunnel == [*EICE, "--instance-connect-endpoint-id", "eice-01"]
    assert route.note == (f"{INSTANCE_ID}: connecting through EC2 Instance Connect Endpoint eice-01, which"
                          " ends every connection after at most 60 minutes (tmux keeps your session)")


def test_eice_id_of_the_profile_saves_the_lookup(monkeypatch):
    fake = Aws(monkeypatch)
    route = ec2.choose_route(profile(eice_id="eice-0given"), instance(), "eice", plugin(False))
    assert fake.calls == [] and route.tunnel[-2:] == ["--instance-connect-endpoint-id", "eice-0given"]


def test_unknown_endpoint_leaves_the_choice_to_the_cli(monkeypatch):
    Aws(monkeypatch, describe_instance_connect_endpoints=DENIED)
    route = ec2.choose_route(profile(), instance(), "eice", plugin(False))
    assert route.tunnel == EICE and "its VPC's EC2 Instance Connect Endpoint" in route.note


def test_auto_says_what_was_missing_when_it_tries_the_private_address(monkeypatch):
    Aws(monkeypatch, (1, 46), describe_instance_information=online("ConnectionLost"))
    route = ec2.choose_route(profile(), instance(), "auto", plugin(True))
    assert route == ec2.Route("direct", "10.1.2.3", None, (
        f"{INSTANCE_ID} has no public-dns address; trying its private address 10.1.2.3 (not SSM, as"
        f" {INSTANCE_ID} is not online in SSM (its agent is ConnectionLost): its SSM agent must run, its"
        " instance profile must allow SSM (AmazonSSMManagedInstanceCore), and it must reach SSM on port"
        " 443; not EICE, as the AWS CLI here (aws-cli/(1, 46)) has no `aws ec2-instance-connect"
        " open-tunnel`; install AWS CLI v2, 2.12 or later)"))


@pytest.mark.parametrize("mode, has_plugin, version, answers, message", [
    ("direct", True, (2, 15), {}, f"instance {INSTANCE_ID} has no public-dns address; choose another"
     " with 'address =' (public-dns, public-ip, private-ip), or connect through SSM or EICE"),
    ("ssm", False, (2, 15), {}, f"cannot connect through SSM: the Session Manager plugin"
     f" (session-manager-plugin) is not installed; install it: {PLUGIN_PAGE}"),
    ("ssm", True, (2, 15), {"describe_instance_information": {"InstanceInformationList": []}},
     f"cannot connect through SSM: {INSTANCE_ID} is not online in SSM: its SSM agent must run"),
    ("eice", True, (1, 46), {}, "cannot connect through EICE: the AWS CLI here (aws-cli/(1, 46)) has no"),
    ("eice", True, (2, 11), {}, "cannot connect through EICE: the AWS CLI here (aws-cli/(2, 11)) has no"),
    ("eice", True, (2, 12), {"describe_instance_connect_endpoints": endpoints()}, "cannot connect through"
     " EICE: there is no EC2 Instance Connect Endpoint in vpc-0abc; create one: aws ec2"
     " create-instance-connect-endpoint --subnet-id subnet-0def"),
    ("auto", False, (1, 46), {}, f"{INSTANCE_ID} has no public-dns address; and no private one: not SSM,"),
    ("ssm", True, (2, 15), {"describe_instance_information": "aws: Could not connect to the endpoint URL"},
     "aws: Could not connect to the endpoint URL"),
])
def test_a_missing_piece_is_one_message(monkeypatch, mode, has_plugin, version, answers, message):
    Aws(monkeypatch, version, **answers)
    with pytest.raises(ec2.Failure) as e:
        ec2.choose_route(profile(), instance(private=None if mode == "auto" else "10.1.2.3"), mode,
                         plugin(has_plugin))
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("listing", [5, "x", [1, "y"], [{"PingStatus": 3}], None])
def test_an_ssm_answer_of_another_shape_is_not_online(monkeypatch, listing):
    Aws(monkeypatch, describe_instance_information={"InstanceInformationList": listing})
    with pytest.raises(ec2.Failure, match=f"^cannot connect through SSM: {INSTANCE_ID} is not online"):
        ec2.choose_route(profile(), instance(), "ssm", plugin(True))


@pytest.mark.parametrize("found, answer, message", [
    ({"VpcId": None}, {}, f"{INSTANCE_ID} is in no VPC"),
    ({}, {"InstanceConnectEndpoints": [{"State": "create-complete"}]},
     "there is no EC2 Instance Connect Endpoint in vpc-0abc"),
    ({}, {"InstanceConnectEndpoints": "x"}, "there is no EC2 Instance Connect Endpoint in vpc-0abc"),
])
def test_eice_without_a_vpc_or_a_named_endpoint_is_refused(monkeypatch, found, answer, message):
    Aws(monkeypatch, describe_instance_connect_endpoints=answer)
    with pytest.raises(ec2.Failure, match=f"^cannot connect through EICE: {message}"):
        ec2.choose_route(profile(), {**instance(), **found}, "eice", plugin(False))


@pytest.mark.parametrize("said, version", [
    ("aws-cli/2.15.30 Python/3.11.8 Linux/6.5 exe/x86_64.ubuntu.22", (2, 15)),
    ("aws-cli/1.46.3 Python/3.11.7 Linux/6.18 botocore/1.43.62", (1, 46)),
    ("command not found", None),
])
def test_the_cli_version_is_read_from_what_it_prints(monkeypatch, said, version):
    class Done:
        stdout, stderr = "", said + "\n"  # version 1 wrote it on stderr

    monkeypatch.setattr("subprocess.run", lambda *a, **k: Done)
    assert ec2.aws_cli_version() == (version, said.split(" ")[0])


def unproxied(line, port=22):
    """The words the shell runs for a ProxyCommand LINE, once ssh has expanded %% and %p."""
    import re

    expanded = re.sub("%(.)", lambda m: {"%": "%", "p": str(port)}[m.group(1)], line)
    return shlex.split(expanded)


def test_proxy_command_quotes_each_word_and_escapes_percent():
    words = ["aws", "ssm", "start-session", "--parameters", f"portNumber={ec2.PORT_TOKEN}",
             "--profile", "it's 100% %p; rm -rf ~"]
    line = ec2.proxy_command(words)
    assert line.count("%p") == 2  # the port, and the user's literal %p, escaped as %%p
    assert unproxied(line, 2222) == [*words[:4], "portNumber=2222", "--profile", "it's 100% %p; rm -rf ~"]


# --- the whole command line -------------------------------------------------------


@pytest.fixture
def via(ec2_run, monkeypatch, clean_env):
    """Run ec2.main with describe-instances answering INSTANCE (no public address)."""
    monkeypatch.setattr("shutil.which", plugin(True))

    def run(*args, answers=None, config="", found=None):
        fake = Aws(monkeypatch, describe_instances={"Reservations": [{"Instances": [found or instance()]}]},
                   **(answers or {}))
        write_config(clean_env, config)
        return (*ec2_run(*args), fake.calls)

    return run


def test_ssm_argv_keeps_the_user_s_options_first_and_the_rest_of_ec2(via):
    status, argv, out, err, _ = via("-H", f"ubuntu@{INSTANCE_ID}", "work", "-j", "--", "-o",
                                    "ServerAliveInterval=5",
                                    answers={"describe_instance_information": online()})
    assert status == "exec", err
    proxy = ec2.proxy_command(SSM)
    forward = argv.index("-L")
    assert argv[:3] == ["ssh", "-o", "ServerAliveInterval=5"] and forward == 3  # ssh keeps the first -o
    assert argv[forward + 2:] == ["-o", f"HostKeyAlias={INSTANCE_ID}", "-o", f"ProxyCommand={proxy}",
                                  "-o", "ServerAliveInterval=30", "-o", "ExitOnForwardFailure=yes", "-o",
                                  "ControlPath=none", "-t", f"ubuntu@{INSTANCE_ID}",
                                  "tmux", "-2", "new-session", "-A", "-s", "work"]
    assert err.startswith(f"ec2: {INSTANCE_ID} has no public-dns address; connecting"
                                           " through SSM Session Manager\n")


def test_dry_run_prints_what_runs(via):
    status, _, out, _, _ = via("--dry-run", "--via", "eice", "-H", INSTANCE_ID,
                               answers={"describe_instance_connect_endpoints": endpoints("create-complete")})
    assert status == 0
    tunnel = ec2.proxy_command([*EICE, "--instance-connect-endpoint-id", "eice-00"])
    assert shlex.split(out) == ["ssh", "-o", f"HostKeyAlias={INSTANCE_ID}", "-o", f"ProxyCommand={tunnel}",
                                "-o", "ServerAliveInterval=30", INSTANCE_ID]


def test_profile_connect_and_via(via):
    found = instance("ec2-1.example")
    _, argv, _, _, calls = via("-H", "gpu", config=f"[gpu]\ninstance = {INSTANCE_ID}\nconnect = ssm\n",
                               answers={"describe_instance_information": online()}, found=found)
    assert argv[-1] == INSTANCE_ID and [c[1] for c in calls] == ["describe-instances",
                                                                 "describe-instance-information"]
    _, argv, _, _, calls = via("-H", "gpu", "--via", "direct", found=found,
                               config=f"[gpu]\ninstance = {INSTANCE_ID}\nconnect = ssm\n")
    assert argv[-1] == "ec2-1.example" and len(calls) == 1


@pytest.mark.parametrize("args", [["--via", "ssm"], ["--push-key"]])
def test_via_and_push_key_need_an_instance(ec2_run, args):
    status, argv, _, err = ec2_run("-H", "box", *args)
    assert (status, argv) == (2, None) and "need an EC2 instance" in err


@pytest.mark.parametrize("text, message", [
    ("[p]\ninstance = b\nconnect = tunnel\n", "[p] connect: 'tunnel' is not one of auto, direct, ssm, eice"),
    ("[p]\nhost = b\nconnect = ssm\n", "[p] connect: goes with 'instance =' only"),
    ("[p]\nhost = b\npush_key = yes\n", "[p] push_key: goes with 'instance =' only"),
    ("[p]\nhost = b\neice_id = eice-1\n", "[p] eice_id: goes with 'instance =' only"),
    ("[p]\ninstance = b\npush_key = maybe\n", "[p] push_key: 'maybe' is neither yes nor no"),
    ("[p]\ninstance = b\neice_id = -x\n", "[p] eice_id: invalid value '-x'"),
])
def test_config_errors_of_the_way_in(ec2_run, clean_env, text, message):
    path = write_config(clean_env, text)
    status, argv, _, err = ec2_run("-H", "p")
    assert (status, argv) == (1, None) and err.startswith(f"ec2: {path}") and message in err


# --- push_key ---------------------------------------------------------------------


def test_push_key_sends_the_identity_s_public_half_for_the_user(via, tmp_path):
    key = tmp_path / "gpu.pem"
    key.write_text("private")
    (tmp_path / "gpu.pem.pub").write_text("ssh-ed25519 AAAAC3Nz me@laptop\n")
    status, argv, _, _, calls = via("-H", "gpu", found=instance("ec2-1.example"),
                                    answers={"send_ssh_public_key": {"Success": True}},
                                    config=f"[gpu]\ninstance = {INSTANCE_ID}\nuser = ubuntu\n"
                                    f"identity = {key}\npush_key = yes\n")
    assert status == "exec" and argv[1:3] == ["-i", str(key)]
    assert calls[1] == ("ec2-instance-connect", "send-ssh-public-key", "--instance-id", INSTANCE_ID,
                        "--instance-os-user", "ubuntu", "--ssh-public-key", "ssh-ed25519 AAAAC3Nz me@laptop")


def test_push_key_without_identity_makes_a_private_key_once(via, clean_env):
    answers = {"send_ssh_public_key": {"Success": True}}
    status, argv, _, _, calls = via("--push-key", "-H", f"ubuntu@{INSTANCE_ID}", answers=answers,
                                    found=instance("ec2-1.example"))
    key = os.path.join(os.environ["XDG_CACHE_HOME"], "ec2", "push_key")
    assert status == "exec" and argv[1:3] == ["-i", key]
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    with open(key + ".pub") as f:
        public = f.read().strip()
    assert public.startswith("ssh-ed25519 ") and calls[1][-1] == public
    via("--push-key", "-H", f"ubuntu@{INSTANCE_ID}", answers=answers, found=instance("ec2-1.example"))
    with open(key + ".pub") as f:
        assert f.read().strip() == public  # kept, not made again


def test_push_key_makes_its_key_in_a_private_directory_or_an_existing_one(tmp_path):
    environ = {"XDG_CACHE_HOME": str(tmp_path / "new")}
    ec2.public_key(None, environ, make=True)
    assert stat.S_IMODE((tmp_path / "new" / "ec2").stat().st_mode) == 0o700
    (tmp_path / "old" / "ec2").mkdir(parents=True)
    key, identity = ec2.public_key(None, {"XDG_CACHE_HOME": str(tmp_path / "old")}, make=True)
    assert identity == str(tmp_path / "old" / "ec2" / "push_key") and key.startswith("ssh-ed25519 ")


@pytest.mark.parametrize("keygen, message", [
    ("#!/bin/sh\necho 'Saving key failed: disk full' >&2\nexit 1\n",
     "ssh-keygen could not make {key}: Saving key failed: disk full"),
    (None, "ssh-keygen not found on PATH, to make a key for push_key"),
    ("cache is a file", "cannot make a key for push_key in {cache}: File exists"),
])
def test_a_key_that_cannot_be_made_is_one_message(tmp_path, monkeypatch, keygen, message):
    cache = tmp_path / "cache" / "ec2"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if keygen == "cache is a file":
        cache.parent.mkdir()
        cache.write_text("")
    elif keygen:
        (bin_dir / "ssh-keygen").write_text(keygen)
        (bin_dir / "ssh-keygen").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ec2.Failure) as e:
        ec2.public_key(None, {"XDG_CACHE_HOME": str(tmp_path / "cache")}, make=True)
    assert str(e.value).startswith(message.format(key=cache / "push_key", cache=cache))


def test_push_key_dry_run_sends_and_makes_nothing(via):
    status, _, out, _, calls = via("--push-key", "--dry-run", "-H", f"ubuntu@{INSTANCE_ID}",
                                   found=instance("ec2-1.example"))
    key = os.path.join(os.environ["XDG_CACHE_HOME"], "ec2", "push_key")
    assert status == 0 and len(calls) == 1 and not os.path.exists(key)
    assert out.startswith(f"# ec2 first sends {key}.pub for ubuntu with EC2 Instance Connect")


@pytest.mark.parametrize("args, message", [
    (["-H", INSTANCE_ID], "push_key needs the user to log in as on the instance"),
    (["-H", f"ubuntu@{INSTANCE_ID}", "-i", "KEY"], "push_key needs KEY.pub, the public half of KEY"),
])
def test_push_key_refuses_what_it_cannot_send(via, tmp_path, args, message):
    key = tmp_path / "id"
    key.write_text("private")
    args = [str(key) if a == "KEY" else a for a in args]
    status, argv, _, err, calls = via("--push-key", *args, found=instance("ec2-1.example"))
    assert (status, argv, len(calls)) == (1, None, 1)
    assert err.startswith("ec2: " + message.replace("KEY", str(key)))


def test_a_refused_key_is_one_message(via):
    status, argv, _, err, _ = via("--push-key", "-H", f"ubuntu@{INSTANCE_ID}", found=instance("x.example"),
                                  answers={"send_ssh_public_key": {"Success": False}})
    assert (status, argv) == (1, None) and "EC2 Instance Connect did not take the key" in err


@pytest.mark.parametrize("fresh, sends", [(ec2.KEY_FRESH, 1), (-1, 2)])
def test_lab_sends_the_key_again_when_the_first_may_have_expired(via, monkeypatch, fresh, sends):
    info = {"port": 8888, "token": "t", "base_url": "/", "hostname": "localhost", "pid": 4242}
    answer = f"ec2-lab ready window /r/jpserver-4242.json\n{json.dumps(info)}"
    monkeypatch.setattr(ec2, "run_lab_script", lambda argv, where: (answer, True))
    monkeypatch.setattr(ec2, "KEY_FRESH", fresh)  # -1: as if the round trip took longer than that
    status, argv, _, err, calls = via("work", "--lab", "--no-browser", "--push-key",
                                      "-H", f"ubuntu@{INSTANCE_ID}", found=instance("ec2-1.example"),
                                      answers={"send_ssh_public_key": {"Success": True}})
    assert status == "exec", err
    assert [c[1] for c in calls].count("send-ssh-public-key") == sends


def test_ssh_config_values_double_a_percent_and_quote_a_space():
    # IdentityFile and HostName take ssh's %-tokens: a literal % is written %%.
    p = ec2.Profile("gpu", "/cfg")
    p.host, p.identity = "me@10.0.0.7", "/keys/100% sure.pem"
    assert ec2.ssh_config_block(p, ["ec2", "--proxy"], {}) == [
        "Host gpu", "    HostName 10.0.0.7", "    User me", '    IdentityFile "/keys/100%% sure.pem"']


def test_ssh_config_block_of_an_instance_keeps_the_profile_s_o_options_only(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    p = ec2.Profile("gpu", "/cfg")
    p.instance, p.user, p.identity, p.connect = INSTANCE_ID, "ubuntu", "~/.ssh/gpu.pem", "direct"
    p.ssh_options = ["-A", "-oCompression=yes", "-o", "ServerAliveInterval=60", "-o", "SetEnv=A=1",
                     "-p", "2222", "-o", "LogLevel=ERROR"]
    assert ec2.ssh_config_block(p, ["/bin/ec2", "--proxy"], {}) == [
        "Host gpu", f"    HostKeyAlias {INSTANCE_ID}", "    ProxyCommand /bin/ec2 --proxy gpu:%p",
        "    ProxyUseFdpass yes", "    User ubuntu", "    IdentityFile /home/me/.ssh/gpu.pem",
        "    Compression yes", "    ServerAliveInterval 60", "    SetEnv A=1", "    LogLevel ERROR"]


def test_ssh_config_block_names_no_key_unless_the_profile_has_one_or_pushes_one():
    p = ec2.Profile("train", "/cfg")
    p.instance = "train-box"
    assert ec2.ssh_config_block(p, ["ec2", "--proxy"], {"XDG_CACHE_HOME": "/c"}) == [
        "Host train", "    ProxyCommand ec2 --proxy train:%p"]
    p.push_key = True
    assert ec2.ssh_config_block(p, ["ec2", "--proxy"], {"XDG_CACHE_HOME": "/c"})[-1] == (
        "    IdentityFile /c/ec2/push_key")


def test_no_key_is_sent_for_a_connection_that_will_not_happen(via):
    with held_port() as port:
        status, argv, _, err, calls = via("--push-key", "-H", f"ubuntu@{INSTANCE_ID}", "-L", str(port),
                                          found=instance("ec2-1.example"))
    assert (status, argv) == (1, None) and "is already in use" in err
    assert [c[1] for c in calls] == ["describe-instances"]


@pytest.mark.parametrize("option", ["--list", "--urls"])
def test_list_and_urls_send_the_key_before_their_round_trip(via, monkeypatch, option):
    monkeypatch.setattr(ec2, "run_remote", lambda argv, script: pytest.fail("no ssh here"))
    monkeypatch.setattr(ec2, "list_sessions", lambda argv, host: 0)
    monkeypatch.setattr(ec2, "show_jupyter_urls", lambda *args: 0)
    status, _, _, err, calls = via(option, "--push-key", "-H", f"ubuntu@{INSTANCE_ID}",
                                   found=instance("ec2-1.example"),
                                   answers={"send_ssh_public_key": {"Success": True}})
    assert status == 0, err
    assert [c[1] for c in calls] == ["describe-instances", "send-ssh-public-key"]


def test_i_beats_the_profiles_identity_for_proxy_too(ec2_run, clean_env, monkeypatch):
    for name in ("profile.pem", "given.pem"):
        (clean_env / name).write_text("")
    write_config(clean_env, f"[gpu]\ninstance = {INSTANCE_ID}\nidentity = {clean_env / 'profile.pem'}\n")
    Aws(monkeypatch, describe_instances={"Reservations": [{"Instances": [instance("ec2-1.example")]}]})
    for argv, until in ((["-H", "gpu"], "login"), (["--proxy", "gpu"], "route")):
        _, args, ssh_args = ec2.parse_command_line([*argv, "-i", str(clean_env / "given.pem")])
        args.host = args.host or args.proxy
        assert ec2.resolve(args, ssh_args, os.environ, until).identity == str(clean_env / "given.pem")


def test_a_tunnel_that_cannot_be_run_is_one_message(clean_env, monkeypatch, capsys):
    Aws(monkeypatch, describe_instances={"Reservations": [{"Instances": [instance()]}]},
        describe_instance_information=online())
    monkeypatch.setattr("shutil.which", plugin(True))

    def missing(file, args):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(ec2.os, "execvp", missing)
    assert ec2.main(["--proxy", INSTANCE_ID]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("ec2: cannot run aws: No such file or directory\n")


def test_proxy_leaves_the_identity_file_to_ssh(ec2_run, clean_env, monkeypatch):
    gone = str(clean_env / "gone.pem")
    write_config(clean_env, f"[gpu]\ninstance = {INSTANCE_ID}\nuser = a\nidentity = {gone}\n")
    Aws(monkeypatch, describe_instances={"Reservations": [{"Instances": [instance("ec2-1.example")]}]})
    _, args, ssh_args = ec2.parse_command_line(["--proxy", "gpu"])
    args.host = "gpu"
    target = ec2.resolve(args, ssh_args, os.environ, "route")
    assert (target.route.host, target.dest, target.identity) == ("ec2-1.example", None, gone)


@pytest.mark.parametrize("took, sends", [(39.0, 1), (41.0, 2)])
def test_lab_sends_the_same_key_again_once_40_seconds_have_gone(via, monkeypatch, took, sends):
    import time

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def round_trip(argv, where):
        clock[0] += took
        info = {"port": 8888, "token": "t", "base_url": "/", "hostname": "localhost", "pid": 4242}
        return f"ec2-lab ready window /r/jpserver-4242.json\n{json.dumps(info)}", True

    monkeypatch.setattr(ec2, "run_lab_script", round_trip)
    status, _, _, err, calls = via("work", "--lab", "--no-browser", "--push-key",
                                   "-H", f"ubuntu@{INSTANCE_ID}", found=instance("ec2-1.example"),
                                   answers={"send_ssh_public_key": {"Success": True}})
    assert status == "exec", err
    sent = [c for c in calls if c[1] == "send-ssh-public-key"]
    assert len(sent) == sends and sent[-1] == sent[0]
    assert sent[0][:5] == ("ec2-instance-connect", "send-ssh-public-key", "--instance-id", INSTANCE_ID,
                           "--instance-os-user")


# --- back in one step: a stopped instance starts when you connect (auto_start) --------------
# Breaks: the ask default, the cool-down's comparison or its window, --proxy as a person,
# the question's default, the state waits, the poll of port 22 and the overall limit.


class Keyboard(io.StringIO):
    """stdin at a terminal, where a person types ANSWERS."""

    def isatty(self):
        return True


def stopped(code=None, reason="", state="stopped"):
    found = {**instance("ec2-1.example"), "State": {"Name": state}}
    if code:
        found.update(StateReason={"Code": code, "Message": f"{code}: ..."}, StateTransitionReason=reason)
    return found


NOW = datetime(2026, 12, 4, 9, 0, 0, tzinfo=timezone.utc)


def gmt(minutes_ago):
    return f"User initiated ({(NOW - timedelta(minutes=minutes_ago)).strftime('%Y-%m-%d %H:%M:%S')} GMT)"


@pytest.mark.parametrize("text, message", [
    ("[gpu]\ninstance = i-0123456789abcdef0\nauto_start = maybe\n", "[gpu] auto_start: 'maybe' is not one of"
                                                                   " ask, yes, no"),
    ("[gpu]\nhost = box\nauto_start = yes\n", "[gpu] auto_start: goes with 'instance =' only")])
def test_auto_start_is_ask_yes_or_no_and_only_for_an_instance(ec2_run, clean_env, text, message):
    path = write_config(clean_env, text)
    status, _, _, err = ec2_run("-H", "gpu")
    assert (status, err) == (1, f"ec2: {path}: {message}\n")


def test_auto_start_is_ask_unless_the_profile_says_otherwise():
    assert ec2.Profile("gpu", "/cfg").auto_start == "ask"
    assert ec2.AUTO_START == ("ask", "yes", "no")


@pytest.mark.parametrize("typed, starts", [("\n", True), ("y\n", True), ("Yes\n", True), ("n\n", False),
                                           ("no\n", False), ("", False), ("later\ny\n", True)])
def test_ask_at_a_terminal_is_one_question_that_defaults_to_yes(monkeypatch, capsys, typed, starts):
    monkeypatch.setattr(sys, "stdin", Keyboard(typed))
    decide = functools.partial(ec2.auto_start, profile(), stopped(), "ec2 -H gpu --start", True, NOW)
    if starts:
        assert decide() is True
    else:
        with pytest.raises(ec2.Failure, match=f"^instance {INSTANCE_ID} was not started; `ec2 -H gpu --start`"
                                              " starts it$"):
            decide()
    asked = f"ec2: instance {INSTANCE_ID} is stopped; start it? [Y/n] "
    err = capsys.readouterr().err
    assert err.startswith(asked * (2 if typed.startswith("later") else 1))
    # The end of input, where no Enter ended the question's line: ec2 ends it, before its refusal.
    assert err == asked * (2 if typed.startswith("later") else 1) + ("\n" if typed == "" else "")


def test_ask_without_a_terminal_refuses_naming_the_key_that_would_start_it():
    with pytest.raises(ec2.Failure) as refused:
        ec2.auto_start(profile(), stopped(), "ec2 -H gpu --start", False, NOW)
    assert str(refused.value) == (f"instance {INSTANCE_ID} is stopped, and there is nobody to ask whether to"
                                  " start it (no terminal); `ec2 -H gpu --start` starts it, and auto_start ="
                                  " yes in [gpu] of /cfg starts it at every connection")


@pytest.mark.parametrize("person", [True, False])
def test_yes_starts_without_asking_and_no_refuses_as_before(monkeypatch, person):
    monkeypatch.setattr(sys, "stdin", Keyboard(""))  # a question would read the end of input: a no
    assert ec2.auto_start(profile(auto_start="yes"), stopped(), "ec2 --start", person, NOW) is True
    assert ec2.auto_start(profile(auto_start="no"), stopped(), "ec2 --start", person, NOW) is False


@pytest.mark.parametrize("state, choice, starts", [
    ("pending", "ask", True), ("pending", "no", False), ("terminated", "yes", False),
    ("shutting-down", "yes", False), ("running", "yes", False)])
def test_a_pending_instance_is_waited_for_and_a_gone_one_is_not_started(state, choice, starts):
    assert ec2.auto_start(profile(auto_start=choice), stopped(state=state), "s", False, NOW) is starts


def test_a_stopping_instance_is_asked_about_as_such(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", Keyboard("\n"))
    assert ec2.auto_start(profile(), stopped(state="stopping"), "s", True, NOW) is True
    assert capsys.readouterr().err == (f"ec2: instance {INSTANCE_ID} is stopping; start it once it has"
                                       " stopped? [Y/n] ")


@pytest.mark.parametrize("code, reason, itself, ago", [
    (ec2.SELF_STOP, gmt(10), True, 600), (ec2.SELF_STOP, "User initiated", True, None),
    (ec2.SELF_STOP, "User initiated (soon)", True, None),
    (ec2.SELF_STOP, "User initiated (2026-12-04 08:50:00)", True, None),
    (ec2.SELF_STOP, gmt(10).replace("GMT", "UTC"), True, 600),
    (ec2.SELF_STOP, gmt(10).replace("GMT", "PST"), True, None),
    ("Client.UserInitiatedShutdown", gmt(10), False, None),
    (None, "", False, None), (ec2.SELF_STOP, gmt(-5), True, 0)])
def test_a_self_stop_is_read_from_the_state_reason_and_its_time_from_the_transition(code, reason, itself,
                                                                                    ago):
    assert ec2.stopped_itself(stopped(code, reason), NOW) == (itself, ago)


@pytest.mark.parametrize("window, minutes_ago, starts", [
    (None, 10, False), (None, 59, False), (None, 61, True), (None, 120, True),
    (90, 80, False), (90, 91, True), (600, 300, False), (600, 601, True)])
def test_proxy_does_not_start_an_instance_that_stopped_itself_within_its_window(window, minutes_ago, starts):
    found = stopped(ec2.SELF_STOP, gmt(minutes_ago))
    decide = functools.partial(ec2.auto_start, profile(auto_start="yes", idle_stop=window), found,
                               "ec2 -H gpu --start", False, NOW)
    if starts:
        assert decide() is True
    else:
        with pytest.raises(ec2.Failure, match="a connection without a terminal does not start it within"):
            decide()


def test_the_cool_down_says_why_and_what_starts_it_and_holds_where_ec2_gives_no_time():
    with pytest.raises(ec2.Failure) as refused:
        ec2.auto_start(profile(auto_start="yes"), stopped(ec2.SELF_STOP, gmt(12)), "ec2 -H gpu --start",
                       False, NOW)
    assert str(refused.value) == (
        f"instance {INSTANCE_ID} stopped itself 12m ago (idle stop, or a shutdown on it); a connection"
        " without a terminal does not start it within 1h of that, so that an editor left open does not"
        " undo the stop; `ec2 -H gpu --start` starts it")
    with pytest.raises(ec2.Failure, match="stopped itself at a time EC2 does not give"):
        ec2.auto_start(profile(auto_start="yes"), stopped(ec2.SELF_STOP, "User initiated"), "s", False, NOW)


def test_a_person_starts_an_instance_that_stopped_itself_a_minute_ago(monkeypatch):
    monkeypatch.setattr(sys, "stdin", Keyboard("\n"))
    found = stopped(ec2.SELF_STOP, gmt(1))
    assert ec2.auto_start(profile(auto_start="yes"), found, "s", True, NOW) is True
    assert ec2.auto_start(profile(), found, "s", True, NOW) is True


def test_one_stopped_by_a_person_is_started_by_proxy_at_once():
    found = stopped("Client.UserInitiatedShutdown", gmt(1))
    assert ec2.auto_start(profile(auto_start="yes"), found, "s", False, NOW) is True


class Clock:
    """time.monotonic and time.sleep replaced: sleeping moves the clock."""

    def __init__(self, monkeypatch):
        self.now, self.slept = 0.0, []
        monkeypatch.setattr(time, "monotonic", lambda: self.now)
        monkeypatch.setattr(time, "sleep", self.sleep)

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_a_stopping_instance_is_waited_for_then_started_once(monkeypatch, capsys):
    clock = Clock(monkeypatch)
    states = iter(["stopping", "stopped", "pending", "running"])
    monkeypatch.setattr(ec2, "find_instance", lambda p: stopped(state=next(states)))
    aws = Aws(monkeypatch, start_instances={"StartingInstances": [{"CurrentState": {"Name": "pending"}}]})
    ended = ec2.start_instance(profile(), stopped(state="stopping"), "ec2 -H gpu --start")
    assert ec2.instance_state(ended) == "running"
    assert aws.calls == [("ec2", "start-instances", "--instance-ids", INSTANCE_ID)]
    assert capsys.readouterr().err == (f"ec2: {INSTANCE_ID}: stopping, 0 s\nec2: starting {INSTANCE_ID}\n"
                                       f"ec2: {INSTANCE_ID}: pending, 4 s\n")
    assert clock.slept == [2, 2, 2, 2]


def test_an_instance_that_stops_again_after_the_start_is_said_not_started_again(monkeypatch):
    Clock(monkeypatch)
    states = iter(["pending", "stopping"])
    monkeypatch.setattr(ec2, "find_instance", lambda p: stopped(state=next(states)))
    aws = Aws(monkeypatch, start_instances={"StartingInstances": [{"CurrentState": {"Name": "pending"}}]})
    with pytest.raises(ec2.Failure, match="is stopping; once it has stopped, `s` starts it again"):
        ec2.start_instance(profile(), stopped(), "s")
    assert len(aws.calls) == 1


def test_c_c_during_the_wait_says_the_start_goes_on_and_how_to_see_it(monkeypatch):
    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupted)
    Aws(monkeypatch, start_instances={"StartingInstances": [{"CurrentState": {"Name": "pending"}}]})
    with pytest.raises(ec2.Failure) as failed:
        ec2.start_instance(profile(), stopped(), "ec2 -H gpu --start", None, "ec2 -H gpu --status")
    assert (str(failed.value), failed.value.status) == (
        "interrupted; the start goes on: `ec2 -H gpu --status` shows it", 130)


def test_after_a_start_port_22_is_tried_every_half_second_until_it_answers(monkeypatch, capsys):
    clock, tries = Clock(monkeypatch), []

    def connect(address, timeout):
        tries.append((clock.now, address, timeout))
        if clock.now < 40:
            raise ConnectionRefusedError
        return socket.socket()

    monkeypatch.setattr(socket, "create_connection", connect)
    clock.now = 30.0  # the instance ran 30 s after the start
    ec2.wait_for_sshd("i-1 (gpu)", "ec2-1.example", 22, 0.0, "ec2 --status")
    assert [t[0] for t in tries] == [30 + n / 2 for n in range(21)]
    assert {t[1:] for t in tries} == {(("ec2-1.example", 22), 1)}
    assert capsys.readouterr().err == ("ec2: i-1 (gpu): running, waiting for ssh, 30 s\n"
                                       "ec2: i-1 (gpu): ssh answers, 40 s\n")
    assert ec2.ANSWER_POLL == 0.5


def test_the_wait_for_ssh_ends_600_s_after_the_start_saying_what_it_waited_for(monkeypatch):
    clock = Clock(monkeypatch)
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: (_ for _ in ()).throw(
        TimeoutError()))
    clock.now = 100.0
    with pytest.raises(ec2.Failure) as failed:
        ec2.wait_for_sshd("i-1 (gpu)", "ec2-1.example", 22, 0.0, "ec2 -H gpu --status")
    assert str(failed.value) == ("instance i-1 (gpu) runs, but nothing answered on port 22 of ec2-1.example"
                                 " within 600 s of the start; `ec2 -H gpu --status` shows it")
    assert 600 < clock.now <= 600.5 and ec2.START_TIMEOUT == 600


def described(*instances):
    return {"Reservations": [{"Instances": list(instances)}]}


@pytest.fixture
def stopped_gpu(ec2_run, clean_env, monkeypatch):
    """ec2_run for profile gpu (auto_start = CHOICE) of an instance that is stopped until it is
    started, with the wait for sshd recorded; returns (run, aws, waits)."""
    waits = []
    monkeypatch.setattr(ec2, "wait_for_sshd", lambda *args: waits.append(args))
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    aws = Aws(monkeypatch, describe_instances=described(stopped()),
              start_instances={"StartingInstances": [{"CurrentState": {"Name": "pending"}}]})
    running_once_started(aws, monkeypatch, described(instance("ec2-2.example")))

    def run(choice, *argv, tty=True):
        write_config(clean_env, f"[gpu]\ninstance = {INSTANCE_ID}\nuser = u\nauto_start = {choice}\n")
        return ec2_run(*([] if argv[0] == "--proxy" else ["-H", "gpu"]), *argv, tty=tty)

    return run, aws, waits


def test_a_connection_with_yes_starts_the_instance_waits_for_sshd_and_connects(stopped_gpu):
    run, aws, waits = stopped_gpu
    status, argv, _, err = run("yes", "work")
    assert status == "exec", err
    assert [call[1] for call in aws.calls] == ["describe-instances", "start-instances", "describe-instances"]
    assert argv[:5] == ["ssh", "-o", "ConnectionAttempts=90", "-o", f"HostKeyAlias={INSTANCE_ID}"]
    assert "u@ec2-2.example" in argv
    assert [w[1:3] for w in waits] == [("ec2-2.example", 22)]
    assert waits[0][4] == "ec2 -H gpu --status"


def test_a_connection_with_no_refuses_as_before_and_starts_nothing(stopped_gpu):
    run, aws, waits = stopped_gpu
    status, argv, _, err = run("no", "work")
    assert (status, argv) == (1, None)
    assert err == f"ec2: instance {INSTANCE_ID} is stopped; `ec2 -H gpu --start` starts it\n"
    assert [call[1] for call in aws.calls] == ["describe-instances"] and waits == []


def test_dry_run_says_the_connection_would_start_it_and_starts_nothing(stopped_gpu):
    run, aws, waits = stopped_gpu
    status, argv, _, err = run("yes", "--dry-run")
    assert (status, argv) == (1, None)
    assert err == (f"ec2: instance {INSTANCE_ID} is stopped; a connection would start it first (auto_start),"
                   " and --dry-run starts nothing\n")
    assert [call[1] for call in aws.calls] == ["describe-instances"]


def test_a_remembered_stopped_instance_is_asked_about_again_before_anything_is_started(stopped_gpu,
                                                                                       monkeypatch):
    run, aws, waits = stopped_gpu
    found = []

    def find(profile):  # the first answer is a remembered one: stopped, ten minutes ago
        found.append(bool(profile.answers.known))
        if len(found) == 1:
            profile.answers.used = {ec2.INSTANCE_QUESTION}
            return stopped()
        return instance("ec2-3.example")  # started meanwhile, from elsewhere

    monkeypatch.setattr(ec2, "find_instance", find)
    status, argv, _, err = run("yes", "work")
    assert status == "exec" and "u@ec2-3.example" in argv, err
    assert len(found) == 2 and aws.calls == [] and waits == []  # asked again, started nothing


def test_proxy_never_asks_even_from_a_terminal_and_says_which_key_would_start_it(stopped_gpu):
    run, aws, waits = stopped_gpu
    status, _, _, err = run("ask", "--proxy", "gpu", tty=True)
    assert status == 1 and "there is nobody to ask whether to start it (no terminal)" in err
    assert f"auto_start = yes in [gpu] of {ec2.config_path(None, os.environ)[0]}" in err


def test_proxy_with_yes_starts_it_and_waits_for_the_port_ssh_asked_for(stopped_gpu, monkeypatch):
    run, aws, waits = stopped_gpu

    def unreachable(address, timeout=None):
        raise ConnectionRefusedError(111, "Connection refused")  # nothing leaves this machine

    monkeypatch.setattr(socket, "create_connection", unreachable)
    status, _, _, err = run("yes", "--proxy", "gpu:2222")
    assert [call[1] for call in aws.calls] == ["describe-instances", "start-instances", "describe-instances"]
    assert [w[1:3] for w in waits] == [("ec2-2.example", 2222)]
    assert (status, err.splitlines()[-1]) == (1, "ec2: cannot connect to ec2-2.example port 2222:"
                                                 " Connection refused")


def test_a_remembered_address_is_tried_for_3_s_at_the_host_and_port_ssh_g_reads(monkeypatch):
    tried = []

    def connect(address, timeout):
        tried.append((address, timeout))
        raise TimeoutError

    monkeypatch.setattr(ec2, "ssh_endpoint", lambda argv: ("gpu.example", 2222))
    monkeypatch.setattr(socket, "create_connection", connect)
    assert ec2.answers_reach(["ssh", "gpu"]) is False
    assert tried == [(("gpu.example", 2222), 3)] and ec2.PROBE_SECONDS == 3
    monkeypatch.setattr(ec2, "ssh_endpoint", lambda argv: None)  # through a proxy: ssh's business
    assert ec2.answers_reach(["ssh", "gpu"]) is True and len(tried) == 1


# --- starts that AWS refuses, and --start --type --------------------------------------------


CAPACITY = ("aws: An error occurred (InsufficientInstanceCapacity) when calling the StartInstances operation"
            " (reached max retries: 2): We currently do not have sufficient g5.xlarge capacity in the"
            " Availability Zone you requested (us-east-1a).")


@pytest.mark.parametrize("said, line", [
    (CAPACITY, "EC2 has no g5.xlarge to spare in this instance's zone now; try again later, or start it as"
               " another type: ec2 -H gpu --start --type TYPE"),
    ("aws: An error occurred (IncorrectInstanceState) when calling the StartInstances operation: The instance"
     f" '{INSTANCE_ID}' is not in a state from which it can be started.",
     f"{INSTANCE_ID} changed state meanwhile; `ec2 -H gpu --start` looks again"),
    ("aws: An error occurred (UnauthorizedOperation) when calling the StartInstances operation: You are not"
     " authorized to perform this operation.",
     f"IAM does not let you start {INSTANCE_ID} (ec2:StartInstances)"),
])
def test_a_start_that_aws_refuses_is_explained_after_the_cli_s_words(monkeypatch, said, line):
    Aws(monkeypatch, start_instances=said)
    found = {**stopped(), "InstanceType": "g5.xlarge"}
    with pytest.raises(ec2.Failure) as refused:
        ec2.start_instance(profile(), found, "ec2 -H gpu --start")
    assert str(refused.value) == f"{said}\nec2: {line}"


def test_an_interrupted_spot_instance_is_left_to_ec2_and_not_tried(monkeypatch):
    aws = Aws(monkeypatch)
    found = {**stopped("Server.SpotInstanceShutdown"), "InstanceLifecycle": "spot"}
    with pytest.raises(ec2.Failure, match=r"is a Spot instance that EC2 interrupted"
                                          r" \(Server.SpotInstanceShutdown\); only EC2 starts it again"):
        ec2.start_instance(profile(), found, "s")
    assert aws.calls == []


@pytest.fixture
def typed(stopped_gpu, monkeypatch):
    """stopped_gpu, where the instance is a g5.xlarge, and modify-instance-attribute answers."""
    run, aws, waits = stopped_gpu
    aws.answers["describe_instances"]["Reservations"][0]["Instances"][0]["InstanceType"] = "g5.xlarge"
    aws.answers["modify_instance_attribute"] = {}
    return run, aws


def test_start_type_changes_the_stopped_instance_s_type_then_starts_it(typed):
    run, aws = typed
    status, argv, _, err = run("no", "--start", "--type", "g5.2xlarge")
    assert status == "exec", err
    assert aws.calls[1] == ("ec2", "modify-instance-attribute", "--instance-id", INSTANCE_ID,
                            "--instance-type", '{"Value": "g5.2xlarge"}')
    assert [call[1] for call in aws.calls][2:] == ["start-instances", "describe-instances"]
    assert err.startswith(f"ec2: {INSTANCE_ID}: type g5.xlarge -> g5.2xlarge\n"
                          f"ec2: starting {INSTANCE_ID}, a g5.2xlarge at ?/h\n")  # no zone: no price


def test_start_type_of_its_own_type_changes_nothing(typed):
    run, aws = typed
    assert run("no", "--start", "--type", "g5.xlarge")[0] == "exec"
    assert "modify-instance-attribute" not in [call[1] for call in aws.calls]


def test_a_type_aws_rejects_is_said_and_the_instance_is_not_started(typed):
    run, aws = typed
    said = ("aws: An error occurred (InvalidParameterValue) when calling the ModifyInstanceAttribute"
            " operation: Invalid value 'g9.huge' for instanceType.")
    aws.answers["modify_instance_attribute"] = said
    status, argv, _, err = run("no", "--start", "--type", "g9.huge")
    assert (status, argv) == (1, None)
    assert err == (f"ec2: {said}\nec2: {INSTANCE_ID} stays a g5.xlarge, and was not started: g9.huge is not a"
                   " type EC2 has in its region, or not one its AMI can run (its architecture, its"
                   " virtualization, its network driver)\n")
    assert "start-instances" not in [call[1] for call in aws.calls]


@pytest.mark.parametrize("found, message", [
    ({"State": {"Name": "running"}}, f"--type: {INSTANCE_ID} is running, and its type changes only while it"
                                     " is stopped: `ec2 -H gpu --stop` first"),
    ({"InstanceLifecycle": "spot"}, f"--type: {INSTANCE_ID} is a Spot instance, whose type cannot change;"
                                    " launch another")])
def test_start_type_refuses_a_running_or_a_spot_instance_and_changes_nothing(typed, found, message):
    run, aws = typed
    aws.answers["describe_instances"]["Reservations"][0]["Instances"][0].update(found)
    status, argv, _, err = run("no", "--start", "--type", "g5.2xlarge")
    assert (status, argv, err) == (1, None, f"ec2: {message}\n")
    assert [call[1] for call in aws.calls] == ["describe-instances"]


@pytest.mark.parametrize("argv, message", [
    (["--type", "g5.2xlarge"], "--type goes with --start only"),
    (["--start", "--type", "g5"], "argument --type: 'g5' is not an instance type, such as g5.2xlarge"),
    (["--start", "--type", "g5.x;rm"], "argument --type: 'g5.x;rm' is not an instance type, such as"
                                       " g5.2xlarge")])
def test_type_without_start_or_not_a_type_is_a_usage_error(ec2_run, argv, message):
    status, _, _, err = ec2_run("-H", INSTANCE_ID, *argv)
    assert status == 2 and err.splitlines()[-1] == f"ec2: error: {message}"


def test_type_on_a_plain_host_is_a_usage_error(ec2_run):
    status, _, _, err = ec2_run("-H", "box.example", "--start", "--type", "g5.2xlarge")
    assert status == 2 and "need an EC2 instance" in err


# --- after a start, through SSM or EICE: the tunnel is tried until sshd's words come through ---


NOT_CONNECTED = ("An error occurred (TargetNotConnected) when calling the StartSession operation:"
                 f" {INSTANCE_ID} is not connected.")


def tunnel(tmp_path, refusals):
    """A stand-in for `aws ssm start-session`: says TargetNotConnected as the CLI does for its
    first REFUSALS runs (and something else on stdout, which is not sshd), then relays sshd's
    first words. Returns (argv, the runs file)."""
    runs = tmp_path / "runs"
    script = tmp_path / "tunnel"
    script.write_text(f"""#!/bin/sh
echo x >> {runs}
if [ "$(wc -l < {runs})" -le {refusals} ]; then
    echo "{NOT_CONNECTED}" >&2
    echo "Starting session with SessionId: botocore-session-1"
    exit 254
fi
printf 'SSH-2.0-OpenSSH_9.2p1\\r\\n'
sleep 30
""")
    script.chmod(0o755)
    return [str(script), "--parameters", f"portNumber={ec2.PORT_TOKEN}"], runs


def test_after_a_start_ssm_is_tried_until_a_session_takes_and_sshd_s_words_come_through(tmp_path, monkeypatch,
                                                                                       capsys):
    clock = Clock(monkeypatch)
    argv, runs = tunnel(tmp_path, 2)
    ec2.wait_for_tunnel("i-1 (gpu)", [w.replace(ec2.PORT_TOKEN, "22") for w in argv], "SSM", 0.0, "s")
    assert runs.read_text().count("x") == 3 and clock.slept and set(clock.slept) <= {2}
    assert capsys.readouterr().err == ("ec2: i-1 (gpu): running, waiting for SSM, 0 s\n"
                                       "ec2: i-1 (gpu): ssh answers, 4 s\n")


def test_the_wait_for_a_session_ends_600_s_after_the_start_with_the_cli_s_last_words(tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    argv, _ = tunnel(tmp_path, 10 ** 6)
    argv = [word.replace(ec2.PORT_TOKEN, "22") for word in argv]
    clock.now = 598.0
    with pytest.raises(ec2.Failure) as failed:
        ec2.wait_for_tunnel("i-1 (gpu)", argv, "SSM", 0.0, "ec2 -H gpu --status")
    assert str(failed.value) == ("instance i-1 (gpu) runs, but no ssh session came through SSM within 600 s"
                                 f" of the start ({NOT_CONNECTED}); `ec2 -H gpu --status` shows it")
    assert 600 < clock.now <= 602 and ec2.POLL_SECONDS == 2 and ec2.TUNNEL_TRY_SECONDS == 15


def test_just_started_an_instance_ssm_knows_but_has_not_seen_again_goes_through_ssm(monkeypatch):
    Aws(monkeypatch, describe_instance_information=online("ConnectionLost"),
        describe_instance_connect_endpoints={})
    found = instance()
    problem = ec2.ssm_problem(profile(), INSTANCE_ID, plugin(True))
    assert problem and "is not online in SSM (its agent is ConnectionLost)" in problem[0]
    assert ec2.ssm_problem(profile(), INSTANCE_ID, plugin(True), started=True) is None
    assert ec2.choose_route(profile(), found, "auto", plugin(True), started=True).mode == "ssm"
    Aws(monkeypatch, describe_instance_information={"InstanceInformationList": []})
    assert ec2.ssm_problem(profile(), INSTANCE_ID, plugin(True), started=True)  # one SSM does not know


def test_a_connection_that_started_the_instance_waits_for_its_tunnel_at_ssh_s_port(ec2_run, clean_env,
                                                                                   monkeypatch):
    waits = []
    monkeypatch.setattr(ec2, "wait_for_tunnel", lambda *args: waits.append(args))
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    monkeypatch.setattr(shutil, "which", plugin(True))
    aws = Aws(monkeypatch, describe_instances=described({**instance(), "State": {"Name": "stopped"}}),
              start_instances={"StartingInstances": [{"CurrentState": {"Name": "pending"}}]},
              describe_instance_information=online("ConnectionLost"))
    running_once_started(aws, monkeypatch, described(instance()))
    write_config(clean_env, f"[gpu]\ninstance = {INSTANCE_ID}\nuser = u\nauto_start = yes\nconnect = ssm\n")
    status, argv, _, err = ec2_run("-H", "gpu", "--", "-p", "2222")
    assert status == "exec", err
    assert [(w[1][-1], w[2]) for w in waits] == [("portNumber=2222", "SSM")]


@pytest.mark.parametrize("answer", [{}, {"StartingInstances": "x"}, {"StartingInstances": [None, 3]},
                                    {"StartingInstances": [{"CurrentState": ["running"]}]}])
@pytest.mark.parametrize("found", [{"InstanceId": INSTANCE_ID}, {"InstanceId": INSTANCE_ID, "State": "x"},
                                   {"InstanceId": INSTANCE_ID, "State": {"Name": 7}}])
def test_garbage_from_the_cli_during_a_start_is_one_line_never_a_traceback(monkeypatch, answer, found):
    Clock(monkeypatch)
    Aws(monkeypatch, start_instances=answer)
    monkeypatch.setattr(ec2, "find_instance", lambda p: found)
    with pytest.raises(ec2.Failure, match=f"^instance {INSTANCE_ID} is unknown; it cannot be started again$"):
        ec2.start_instance(profile(), stopped(), "s")


@pytest.mark.parametrize("argv", [["--idle-stop"], ["--idle-stop", "1h"], ["--keep", "3h"]])
def test_idle_stop_and_keep_never_start_a_stopped_instance(stopped_gpu, argv):
    run, aws, waits = stopped_gpu
    status, _, _, err = run("yes", *argv)
    assert status == 1 and err == f"ec2: instance {INSTANCE_ID} is stopped; `ec2 -H gpu --start` starts it\n"
    assert [call[1] for call in aws.calls] == ["describe-instances"]


def test_an_answer_the_terminal_s_encoding_cannot_read_is_asked_again(monkeypatch, capsys):
    class Garbled(Keyboard):
        def readline(self):
            if not hasattr(self, "garbled"):
                self.garbled = True
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
            return super().readline()

    monkeypatch.setattr(sys, "stdin", Garbled("y\n"))
    assert ec2.auto_start(profile(), stopped(), "s", True, NOW) is True
    assert capsys.readouterr().err.count("start it? [Y/n] ") == 2


# --- what a start and a stop say it costs ----------------------------------------

G5 = {"InstanceType": "g5.xlarge", "Placement": {"AvailabilityZone": "us-east-1a"},
      "PlatformDetails": "Linux/UNIX"}


def remember_price(dollars, key="us-east-1 g5.xlarge Linux"):
    """A price in ec2's price file, as a listing a minute ago left it."""
    path = os.path.join(ec2.cache_dir(os.environ), "prices")
    ec2.write_private(path, json.dumps({key: [time.time() - 60, dollars]}))


def test_start_says_the_price_of_the_type_it_starts_as_asked_while_it_starts(monkeypatch, capsys):
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    price_list = json.loads((ROOT / "tests" / "price_g5.xlarge.json").read_text())
    aws = Aws(monkeypatch, get_products=price_list, describe_instances=described(instance("ec2-2.example")),
              start_instances={"StartingInstances": [{"CurrentState": {"Name": "pending"}}]})
    ec2.start_instance(profile(), {**stopped(), **G5}, "ec2 --start", ask_price=True)
    said = capsys.readouterr().err
    assert said.startswith(f"ec2: starting {INSTANCE_ID}, a g5.xlarge at $1.006/h on demand\n")
    assert ("pricing", "get-products") in [call[:2] for call in aws.calls]


@pytest.mark.parametrize("remembered", [False, True])
def test_a_connection_s_start_asks_no_price_and_says_a_remembered_one(stopped_gpu, remembered):
    run, aws, waits = stopped_gpu
    aws.answers["describe_instances"]["Reservations"][0]["Instances"][0].update(G5)
    if remembered:
        remember_price(1.006)
    status, argv, _, err = run("yes", "work")
    said = ", a g5.xlarge at $1.006/h on demand" if remembered else ""
    assert status == "exec" and err.startswith(f"ec2: starting {INSTANCE_ID}{said}\n"), err
    assert "pricing" not in [call[0] for call in aws.calls]


def test_the_question_before_a_start_shows_a_remembered_price_only(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", Keyboard("y\n"))
    assert ec2.auto_start(profile(), {**stopped(), **G5}, "ec2 -H gpu --start", True, NOW) is True
    assert capsys.readouterr().err == f"ec2: instance {INSTANCE_ID} is stopped; start it? [Y/n] "
    remember_price(1.006)
    monkeypatch.setattr(sys, "stdin", Keyboard("y\n"))
    assert ec2.auto_start(profile(), {**stopped(), **G5}, "ec2 -H gpu --start", True, NOW) is True
    assert capsys.readouterr().err == (f"ec2: instance {INSTANCE_ID} is stopped; start it (a g5.xlarge at"
                                       " $1.006/h on demand)? [Y/n] ")


def test_stop_says_what_it_cost_asked_while_it_stops(monkeypatch, capsys):
    price_list = json.loads((ROOT / "tests" / "price_g5.xlarge.json").read_text())
    launched = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2 * 3600 - 5))
    Aws(monkeypatch, get_products=price_list, stop_instances={})
    ec2.stop_instance(profile(), {**instance("ec2-1.example"), **G5, "LaunchTime": launched})
    assert capsys.readouterr().out == (f"stopping instance {INSTANCE_ID}: up 2h 0m, $1.006/h on demand,"
                                       " $2.01 since start\n")


def test_stop_and_start_wait_for_a_price_2_s_at_most_past_aws_s_answer(monkeypatch, capsys):
    slow = threading.Event()

    class Slow(Aws):
        def __call__(self, profile, *args, **how):
            if args[0] == "pricing":
                slow.wait(30)  # an endpoint that does not answer
            return super().__call__(profile, *args, **how)

    Slow(monkeypatch, get_products={}, stop_instances={})
    began = time.monotonic()
    ec2.stop_instance(profile(), {**instance("ec2-1.example"), **G5})
    took = time.monotonic() - began
    slow.set()
    assert 1.9 < took < 3 and capsys.readouterr().out == f"stopping instance {INSTANCE_ID}\n"
