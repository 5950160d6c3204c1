"""ec2 --proxy and --ssh-config, as the real script, with the real ssh reading what they write.

--proxy is run as ssh runs a ProxyCommand: with pipes (it relays), or with
a socket for ProxyUseFdpass (it hands the connection over and exits). A
listening socket on loopback stands in for the instance's sshd.
"""

import array
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EC2, aws_calls, ec2, held_port, install_aws_standin

INSTANCE_ID = "i-0123456789abcdef0"


@pytest.fixture
def listener():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(10)
        yield server


@pytest.fixture
def proxy(tmp_path):
    """Start ec2 --proxy ARGS with a config of [box] on loopback; return the Popen."""
    config = tmp_path / "ec2.ini"
    config.write_text("[box]\nhost = someone@127.0.0.1\n")
    started = []

    def start(*args, **kwargs):
        # Without PYTHONUNBUFFERED, as a user's ssh runs it: under Python 3.8 an
        # unflushed message would then be lost at the exec of the tunnel.
        env = {k: v for k, v in os.environ.items() if not k.startswith("EC2_") and k != "PYTHONUNBUFFERED"}
        proc = subprocess.Popen([sys.executable, str(EC2), "--config", str(config), "--proxy", *args],
                                env={**env, **kwargs.pop("env", {})}, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_relays_through_pipes_both_ways_until_the_instance_closes(proxy, listener):
    port = listener.getsockname()[1]
    proc = proxy(f"box:{port}", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn, _ = listener.accept()
    with conn:
        payload = os.urandom(1 << 20)
        proc.stdin.write(payload)
        proc.stdin.close()  # ssh is done sending: the instance sees the end, and may still answer
        received = b""
        while len(received) < len(payload):
            received += conn.recv(1 << 16)
        assert received == payload and conn.recv(1) == b""
        conn.sendall(b"SSH-2.0-answer\r\n")
    assert proc.stdout.read() == b"SSH-2.0-answer\r\n"
    assert proc.wait(10) == 0 and proc.stderr.read() == b""


def test_hands_the_connection_to_ssh_and_is_gone(proxy, listener):
    port = listener.getsockname()[1]
    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = proxy(f"box:{port}", stdin=theirs, stdout=theirs)
        assert proc.wait(10) == 0  # gone before any byte of the connection passes
        data, ancillary, _, _ = ours.recvmsg(1, socket.CMSG_SPACE(array.array("i").itemsize))
        assert data == b"\0" and ancillary[0][:2] == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        fd = array.array("i", ancillary[0][2])[0]
    assert os.get_blocking(fd)  # as a connection of ssh's own: no time-out of ec2's left on it
    with socket.socket(fileno=fd) as handed, listener.accept()[0] as conn:
        assert handed.getpeername() == ("127.0.0.1", port)
        handed.sendall(b"hello")
        assert conn.recv(5) == b"hello"


def test_port_22_unless_given():
    from conftest import ec2

    assert ec2.proxy_target("gpu") == ("gpu", 22)
    assert ec2.proxy_target("gpu:2222") == ("gpu", 2222)
    assert ec2.proxy_target("ubuntu@i-0123456789abcdef0:22") == ("ubuntu@i-0123456789abcdef0", 22)
    assert ec2.proxy_target("odd:name") == ("odd:name", 22)


def test_a_refused_connection_is_one_line_on_stderr_and_nothing_on_stdout(proxy, listener):
    port = listener.getsockname()[1]
    listener.close()
    proc = proxy(f"box:{port}", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.wait(10) == 1 and proc.stdout.read() == b""
    said = proc.stderr.read().decode()
    assert said == f"ec2: cannot connect to 127.0.0.1 port {port}: Connection refused\n"


def tunnel_env(tmp_path, private="10.1.2.3"):
    """The stand-in aws on PATH, describing INSTANCE_ID with no public address, online in SSM."""
    log = install_aws_standin(tmp_path / "bin")
    found = {"InstanceId": INSTANCE_ID, "State": {"Name": "running"}, "VpcId": "vpc-1",
             "PrivateIpAddress": private}
    return log, {
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "EC2_TEST_AWS_LOG": str(log),
        "EC2_TEST_DESCRIBE": json.dumps({"Reservations": [{"Instances": [found]}]}),
        "EC2_TEST_SSM_ANSWER": json.dumps({"InstanceInformationList": [{"PingStatus": "Online"}]}),
        "EC2_TEST_TUNNEL_HOST": "127.0.0.1",
    }


def test_execs_the_ssm_tunnel_to_the_port_asked_for(proxy, listener, tmp_path):
    port = listener.getsockname()[1]
    log, env = tunnel_env(tmp_path)
    proc = proxy(f"{INSTANCE_ID}:{port}", env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    with listener.accept()[0] as conn:
        conn.sendall(b"through SSM")
    assert proc.stdout.read(11) == b"through SSM"
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert proc.stderr.read().decode() == (f"ec2: {INSTANCE_ID} has no public-dns address;"
                                           " connecting through SSM Session Manager\n")
    assert aws_calls(log)[-1] == ["ssm", "start-session", "--target", INSTANCE_ID, "--document-name",
                                  "AWS-StartSSHSession", "--parameters", f"portNumber={port}"]


def test_a_tunnel_cannot_be_handed_over(proxy, tmp_path):
    _, env = tunnel_env(tmp_path)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = proxy(f"{INSTANCE_ID}:22", env=env, stdin=theirs, stdout=theirs, stderr=subprocess.PIPE)
        assert proc.wait(10) == 1
        assert proc.stderr.read().decode().endswith(
            f"ec2: {INSTANCE_ID} connects through SSM, where no socket can be handed over:"
            " take 'ProxyUseFdpass yes' out of its Host block\n")


# --- --ssh-config, read back by the real ssh ----------------------------------------

PROFILES = f"""\
[gpu]
instance = {INSTANCE_ID}
user = ubuntu
identity = /keys/gpu key.pem
connect = direct
ssh_options = -o ServerAliveInterval=60 -A

[train]
instance = train-box
user = ec2-user
push_key = yes

[plain]
host = me@10.0.0.7
forward = 6006

[odd name]
host = x
"""


def ssh_reads(config, name, *args):
    """What the real ssh makes of the Host block for NAME: ssh -G, as a dict."""
    done = subprocess.run(["ssh", "-G", "-F", str(config), *args, name], capture_output=True, text=True,
                          check=True, stdin=subprocess.DEVNULL)
    return dict(line.partition(" ")[::2] for line in done.stdout.splitlines())


def proxy_words(block):
    """The words ec2 runs with, of the ProxyCommand of a block that ssh -G read back.

    The sh before them checks they are there; test_laptop.py runs it.
    """
    import shlex

    words = shlex.split(block["proxycommand"])
    assert words[:2] == ["/bin/sh", "-c"] and words[3] == "ec2" and words[5] == sys.executable
    return words[6:]


@pytest.fixture
def generated(tmp_path):
    config = tmp_path / "ec2.ini"
    config.write_text(PROFILES)
    done = subprocess.run([sys.executable, str(EC2), "--config", str(config), "--ssh-config"],
                          capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0 and done.stderr == ""
    (tmp_path / "ssh_config").write_text(done.stdout)
    return tmp_path / "ssh_config", config


def test_ssh_config_blocks_reach_each_profile_by_name(generated, tmp_path):
    ssh_config, config = generated
    text = ssh_config.read_text()
    header = f"# Written by ec2 --ssh-config from {config}: append to ~/.ssh/config.\n"
    assert text.startswith(header + "\nHost gpu\n")
    assert "\n\nHost train\n" in text and "\n\nHost plain\n" in text  # a blank line between blocks
    gpu = ssh_reads(ssh_config, "gpu")
    assert proxy_words(gpu) == [str(EC2), "--config", str(config), "--proxy", "gpu:%p"]
    assert (gpu["proxyusefdpass"], gpu["hostkeyalias"], gpu["user"]) == ("yes", INSTANCE_ID, "ubuntu")
    assert (gpu["identityfile"], gpu["serveraliveinterval"]) == ("/keys/gpu key.pem", "60")
    train = ssh_reads(ssh_config, "train")
    assert proxy_words(train) == [str(EC2), "--config", str(config), "--proxy", "train:%p"]
    assert train["proxyusefdpass"] == "no" and "hostkeyalias" not in train  # a Name: ssh keys it by 'train'
    assert train["identityfile"] == f"{tmp_path}/ec2/push_key"
    plain = ssh_reads(ssh_config, "plain")
    assert (plain["hostname"], plain["user"], plain.get("proxycommand")) == ("10.0.0.7", "me", None)
    assert "# [odd name]: not a name ssh can match; left out" in ssh_config.read_text()


def test_ssh_config_with_no_profiles_says_so(tmp_path):
    config = tmp_path / "empty.ini"
    config.write_text("")
    done = subprocess.run([sys.executable, str(EC2), "--config", str(config), "--ssh-config"],
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"ec2: no profiles in {config}, so no Host blocks to write\n"


@pytest.mark.parametrize("args", [["--proxy", "gpu", "-H", "gpu"], ["--proxy", "gpu", "work"],
                                  ["--proxy", "gpu", "--start"], ["--ssh-config", "--via", "ssm"],
                                  ["--ssh-config", "--list"], ["--proxy", "gpu", "-j"]])
def test_what_does_not_go_with_proxy_or_ssh_config(args):
    done = subprocess.run([sys.executable, str(EC2), *args], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("usage: ec2")


def test_a_name_dns_cannot_carry_is_one_line(tmp_path):
    # idna refuses a label over 63 characters before any lookup: nothing leaves this machine.
    config = tmp_path / "ec2.ini"
    config.write_text(f"[long]\nhost = {'a' * 64}.example\n")
    done = subprocess.run([sys.executable, str(EC2), "--config", str(config), "--proxy", "long"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"ec2: cannot connect to {'a' * 64}.example port 22: not a valid host name\n"


@pytest.mark.parametrize("version, on_stderr, works", [("aws-cli/2.15.30 Python/3.11.8", "", True),
                                                       ("aws-cli/1.18.69 Python/3.8.10", "1", False)])
def test_the_cli_version_is_read_from_either_stream(tmp_path, version, on_stderr, works):
    _, env = tunnel_env(tmp_path)
    env.update(EC2_TEST_AWS_VERSION=version, EC2_TEST_AWS_VERSION_ON_STDERR=on_stderr,
               EC2_TEST_EICE_ANSWER=json.dumps({"InstanceConnectEndpoints": [
                   {"InstanceConnectEndpointId": "eice-1", "State": "create-complete"}]}))
    done = subprocess.run([sys.executable, str(EC2), "--dry-run", "--via", "eice", "-H", INSTANCE_ID],
                          env={**os.environ, **env}, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if works:
        assert done.returncode == 0 and "open-tunnel" in done.stdout, done.stderr
    else:
        assert done.returncode == 1 and done.stderr.startswith(
            f"ec2: cannot connect through EICE: the AWS CLI here ({version.split()[0]}) has no")


def test_a_stopped_instance_is_refused_with_the_command_that_starts_it(proxy, tmp_path):
    _, env = tunnel_env(tmp_path)
    found = {"InstanceId": INSTANCE_ID, "State": {"Name": "stopped"}, "PublicDnsName": "ec2-1.example"}
    env["EC2_TEST_DESCRIBE"] = json.dumps({"Reservations": [{"Instances": [found]}]})
    proc = proxy(INSTANCE_ID, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    assert proc.wait(10) == 1 and proc.stdout.read() == b""
    assert proc.stderr.read().decode() == (
        f"ec2: instance {INSTANCE_ID} is stopped, and there is nobody to ask whether to start it (no"
        f" terminal); `ec2 -H {INSTANCE_ID} --config {tmp_path / 'ec2.ini'} --start` starts it, and a profile"
        " with instance = and auto_start = yes starts it at every connection\n")


def test_direct_to_an_instance_connects_to_its_address_and_sends_the_key_first(tmp_path):
    with socket.socket() as server:  # the instance, at an address of its own on loopback
        server.bind(("127.0.0.2", 0))
        server.listen()
        server.settimeout(10)
        port = server.getsockname()[1]
        log, env = tunnel_env(tmp_path, private="127.0.0.2")
        (tmp_path / "id").write_text("private")
        (tmp_path / "id.pub").write_text("ssh-ed25519 AAAAkey me\n")
        config = tmp_path / "ec2.ini"
        config.write_text(f"[gpu]\ninstance = {INSTANCE_ID}\nuser = ubuntu\nidentity = ~/id\npush_key = yes\n"
                          "connect = direct\naddress = private-ip\n")
        env.update(HOME=str(tmp_path), EC2_TEST_SEND_KEY_ANSWER='{"Success": true}')
        ours, theirs = socket.socketpair()
        with ours, theirs:
            proc = subprocess.Popen([sys.executable, str(EC2), "--config", str(config), "--proxy",
                                     f"gpu:{port}"], env={**os.environ, **env}, stdin=theirs, stdout=theirs,
                                    stderr=subprocess.PIPE)
            assert proc.wait(10) == 0, proc.stderr.read()
            with server.accept()[0]:
                pass  # it came to the instance's address, not another loopback one
        assert aws_calls(log)[-1] == ["ec2-instance-connect", "send-ssh-public-key", "--instance-id",
                                      INSTANCE_ID, "--instance-os-user", "ubuntu", "--ssh-public-key",
                                      "ssh-ed25519 AAAAkey me", "--output", "json"]


@pytest.mark.parametrize("option", [["--via", "ssm"], ["--push-key"]])
def test_via_and_push_key_need_an_instance_here_too(proxy, option):
    proc = proxy("box", *option, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.wait(10) == 2
    assert proc.stderr.read() == b"ec2: --via and --push-key need an EC2 instance\n"


@pytest.mark.parametrize("argv", [["--proxy", "gpu"],
                                  ["--config", "/c/ec2.ini", "--proxy", "ubuntu@i-01234567:2222"]])
def test_the_shortcut_reads_what_ssh_config_writes_as_argparse_does(argv):
    from conftest import ec2

    _, args, _ = ec2.parse_command_line(argv)
    shortcut = ec2.proxy_shortcut(argv)
    assert vars(shortcut) == {key: getattr(args, key) for key in vars(shortcut)}


@pytest.mark.parametrize("argv", [["--proxy", "-x"], ["--proxy", "gpu", "--via", "ssm"],
                                  ["--config", "-c", "--proxy", "gpu"], ["--proxy"],
                                  ["--config", "c", "--proxy"], ["gpu", "--proxy", "x"]])
def test_anything_else_is_left_to_argparse(argv):
    from conftest import ec2

    assert ec2.proxy_shortcut(argv) is None


# --- AWS's answers, remembered for a while ------------------------------------------------


def described_at(env, public=None, private="10.1.2.3"):
    """Have the stand-in aws describe INSTANCE_ID at these addresses from now on."""
    found = {"InstanceId": INSTANCE_ID, "State": {"Name": "running"}, "VpcId": "vpc-1",
             "PrivateIpAddress": private}
    if public:
        found["PublicIpAddress"] = found["PublicDnsName"] = public
    env["EC2_TEST_DESCRIBE"] = json.dumps({"Reservations": [{"Instances": [found]}]})


def remembering(tmp_path, public="127.0.0.2"):
    """The stand-in aws, and an environment of ec2's own cache; returns (calls(), env)."""
    log = install_aws_standin(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EC2_", "AWS_"))}
    env.update(PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", EC2_TEST_AWS_LOG=str(log),
               XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    described_at(env, public)
    return (lambda: [call[:2] for call in aws_calls(log)]), env


def destination(argv):
    return argv[argv.index("-t") + 1]


def run(env, *args):
    return subprocess.run([sys.executable, str(EC2), *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def test_a_second_lookup_within_the_time_asks_aws_nothing(tmp_path):
    calls, env = remembering(tmp_path)
    first = run(env, "-H", INSTANCE_ID, "--dry-run", "work")
    assert first.returncode == 0, first.stderr
    assert calls() == [["ec2", "describe-instances"]]  # the one call a first connection makes
    again = run(env, "-H", INSTANCE_ID, "--dry-run", "work")
    assert (again.stdout, again.stderr) == (first.stdout, first.stderr)
    assert calls() == [["ec2", "describe-instances"]]
    kept = list((tmp_path / "cache" / "ec2" / "answers").iterdir())
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o600


def test_an_answer_is_kept_for_10_minutes_for_its_aws_profile_and_region(tmp_path):
    calls, env = remembering(tmp_path)
    config = tmp_path / "ec2.ini"
    config.write_text(f"[a]\ninstance = {INSTANCE_ID}\n[b]\ninstance = {INSTANCE_ID}\nregion = eu-west-1\n"
                      f"[c]\ninstance = {INSTANCE_ID}\naws_profile = work\n")
    for name in ("a", "b", "c", "a", "b", "c"):
        assert run(env, "--config", str(config), "-H", name, "--dry-run").returncode == 0
    assert len(calls()) == 3  # one for each AWS profile and region
    assert len(list((tmp_path / "cache" / "ec2" / "answers").iterdir())) == 3
    kept = Path(ec2.answers_path(ec2.Profile("a", str(config)), env))  # [a]'s: no region, no aws_profile
    answers = json.loads(kept.read_text())
    for entry in answers.values():
        entry[0] -= ec2.REMEMBER_SECONDS + 1  # older than the time
    kept.write_text(json.dumps(answers))
    assert run(env, "--config", str(config), "-H", "a", "--dry-run").returncode == 0
    assert len(calls()) == 4 and ec2.REMEMBER_SECONDS == 600


def test_status_stop_and_start_always_ask_and_stop_forgets(tmp_path):
    calls, env = remembering(tmp_path)
    assert run(env, "-H", INSTANCE_ID, "--dry-run").returncode == 0
    assert run(env, "-H", INSTANCE_ID, "--status").returncode == 0
    assert run(env, "-H", INSTANCE_ID, "--status").returncode == 0
    assert calls() == [["ec2", "describe-instances"]] * 3
    env["EC2_TEST_STOP_ANSWER"] = json.dumps({"StoppingInstances": []})
    assert run(env, "-H", INSTANCE_ID, "--dry-run").returncode == 0  # remembered from --status
    assert len(calls()) == 3
    stopped = run(env, "-H", INSTANCE_ID, "--stop")
    assert calls()[3:] == [["ec2", "describe-instances"], ["ec2", "stop-instances"]], stopped.stderr
    assert run(env, "-H", INSTANCE_ID, "--dry-run").returncode == 0
    assert calls()[5:] == [["ec2", "describe-instances"]]  # forgotten: asked again


def test_a_remembered_address_that_does_not_answer_is_looked_up_again(tmp_path, recorder):
    from test_process import with_terminal

    calls, env = remembering(tmp_path, public="127.0.0.2")
    recorder.env.update(env, PATH=f"{recorder.bin}{os.pathsep}{env['PATH']}")
    with held_port() as port:  # on 127.0.0.1: nothing listens on the port at 127.0.0.2
        args = ("-H", INSTANCE_ID, "work", "--", "-p", str(port))
        assert with_terminal(recorder, *args).returncode == 0
        assert destination(recorder.argv()) == "127.0.0.2" and len(calls()) == 1
        described_at(recorder.env, "127.0.0.3")  # stopped and started: a new address
        done = with_terminal(recorder, *args)
    assert done.returncode == 0
    assert done.stderr == (f"ec2: {INSTANCE_ID} does not answer at 127.0.0.2; asking AWS where it is now\n")
    assert destination(recorder.argv()) == "127.0.0.3" and len(calls()) == 2


def test_a_remembered_private_address_is_tried_too_and_asked_about_again_when_silent(tmp_path, recorder):
    # A console stop leaves a private address silent; asking again finds the instance stopped.
    from test_process import with_terminal

    calls, env = remembering(tmp_path, public=None)
    described_at(env, None, private="127.0.0.4")
    recorder.env.update(env, PATH=f"{recorder.bin}{os.pathsep}{env['PATH']}")
    config = tmp_path / "ec2.ini"
    config.write_text(f"[vpn]\ninstance = {INSTANCE_ID}\naddress = private-ip\n")

    def connect(port):
        return with_terminal(recorder, "--config", str(config), "-H", "vpn", "work", "--", "-p", str(port))

    with socket.socket() as sshd:
        sshd.bind(("127.0.0.4", 0))
        sshd.listen()
        port = sshd.getsockname()[1]
        for _ in range(2):
            done = connect(port)
            assert done.returncode == 0 and done.stderr == "" and destination(recorder.argv()) == "127.0.0.4"
        assert len(calls()) == 1  # the second was remembered, and answered
    done = connect(port)  # nothing answers there now
    assert done.returncode == 0 and destination(recorder.argv()) == "127.0.0.4"
    assert done.stderr == f"ec2: {INSTANCE_ID} does not answer at 127.0.0.4; asking AWS where it is now\n"
    assert len(calls()) == 2


def through_ssm(tmp_path):
    """remembering()'s, for an instance with no public address that SSM has."""
    calls, env = remembering(tmp_path, public=None)
    env["EC2_TEST_SSM_ANSWER"] = json.dumps({"InstanceInformationList": [{"PingStatus": "Online"}]})
    env["EC2_TEST_EICE_ANSWER"] = json.dumps({"InstanceConnectEndpoints": []})
    return calls, env


def test_through_a_tunnel_the_instances_state_is_asked_again_and_ssms_answer_remembered(tmp_path):
    calls, env = through_ssm(tmp_path)
    first = run(env, "-H", INSTANCE_ID, "--dry-run", "work")
    assert first.returncode == 0 and "connecting through SSM" in first.stderr, first.stderr
    asked = calls()
    assert ["ssm", "describe-instance-information"] in asked
    again = run(env, "-H", INSTANCE_ID, "--dry-run", "work")
    assert (again.stdout, again.stderr) == (first.stdout, first.stderr)  # the route said once
    assert calls() == asked + [["ec2", "describe-instances"]]


def test_an_instance_stopped_since_its_remembered_answer_is_seen_stopped_through_a_tunnel(tmp_path):
    calls, env = through_ssm(tmp_path)
    assert run(env, "-H", INSTANCE_ID, "--dry-run", "work").returncode == 0
    described = json.loads(env["EC2_TEST_DESCRIBE"])
    described["Reservations"][0]["Instances"][0]["State"]["Name"] = "stopped"  # from the console
    env["EC2_TEST_DESCRIBE"] = json.dumps(described)
    done = run(env, "-H", INSTANCE_ID, "--dry-run", "work")
    assert done.returncode == 1 and done.stderr == (
        f"ec2: instance {INSTANCE_ID} is stopped; a connection would ask to start it first (auto_start),"
        " and --dry-run starts nothing\n")


def test_proxy_tries_a_remembered_address_briefly_then_asks_again(tmp_path, proxy):
    calls, env = remembering(tmp_path, public="127.0.0.2")
    with socket.socket() as old, socket.socket() as new:
        old.bind(("127.0.0.2", 0))
        old.listen()
        port = old.getsockname()[1]
        new.bind(("127.0.0.3", port))
        new.listen()
        ours, theirs = socket.socketpair()
        with ours, theirs:
            first = proxy(f"{INSTANCE_ID}:{port}", env=env, stdin=theirs, stdout=theirs,
                          stderr=subprocess.PIPE)
            assert first.wait(10) == 0 and len(calls()) == 1
        old.accept()[0].close()
        old.close()  # the instance has gone from 127.0.0.2
        described_at(env, "127.0.0.3")
        ours, theirs = socket.socketpair()
        with ours, theirs:
            again = proxy(f"{INSTANCE_ID}:{port}", env=env, stdin=theirs, stdout=theirs,
                          stderr=subprocess.PIPE)
            assert again.wait(10) == 0
            new.settimeout(5)
            new.accept()[0].close()  # it came to the new address
        assert again.stderr.read().decode() == (f"ec2: {INSTANCE_ID} does not answer at 127.0.0.2;"
                                                " asking AWS where it is now\n")
        assert len(calls()) == 2


def test_the_cli_version_is_asked_once_for_each_cli_path_and_time(tmp_path):
    calls, env = remembering(tmp_path, public=None)
    env.update(EC2_TEST_AWS_VERSION="aws-cli/2.15.30 Python/3.11.8",
               EC2_TEST_EICE_ANSWER=json.dumps({"InstanceConnectEndpoints": [
                   {"InstanceConnectEndpointId": "eice-1", "State": "create-complete"}]}))
    for _ in range(2):
        done = run(env, "--dry-run", "--via", "eice", "-H", INSTANCE_ID)
        assert done.returncode == 0 and "open-tunnel" in done.stdout, done.stderr
        # The answers forgotten, as after 10 minutes: the version is remembered apart.
        (tmp_path / "cache" / "ec2" / "answers").rename(tmp_path / f"answers-{len(calls())}")
    assert [call for call in calls() if call == ["--version"]] == [["--version"]]
    aws = tmp_path / "bin" / "aws"
    os.utime(aws, ns=(aws.stat().st_atime_ns, aws.stat().st_mtime_ns + 1))  # an upgrade
    assert run(env, "--dry-run", "--via", "eice", "-H", INSTANCE_ID).returncode == 0
    assert [call for call in calls() if call == ["--version"]] == [["--version"]] * 2


def test_answers_are_kept_apart_for_each_aws_profile_region_and_endpoint_the_cli_would_use():
    def path(region=None, aws_profile=None, **environ):
        p = ec2.Profile("gpu", "/cfg")
        p.region, p.aws_profile = region, aws_profile
        return ec2.answers_path(p, {"XDG_CACHE_HOME": "/c", **environ})

    paths = [path(), path(region="eu-west-1"), path(AWS_REGION="eu-west-1"),
             path(AWS_DEFAULT_REGION="eu-west-2"), path(aws_profile="work"), path(AWS_PROFILE="team"),
             path(AWS_ENDPOINT_URL="http://127.0.0.1:5000"), path(AWS_ENDPOINT_URL="http://127.0.0.1:5001")]
    assert len(set(paths)) == len(paths) - 1  # a region from the profile or from the environment is one
    assert path(region="eu-west-1") == path(AWS_REGION="eu-west-1") == path(AWS_DEFAULT_REGION="eu-west-1")
    assert path(aws_profile="work") == path(AWS_PROFILE="work")
    assert all(os.path.dirname(p) == "/c/ec2/answers" and "/" not in os.path.basename(p) for p in paths)


def test_the_host_block_keeps_the_path_ssh_was_given_first_and_adds_where_aws_was_found(tmp_path):
    shows = tmp_path / "shows-path"  # stands in for ec2: says the PATH it was run with
    shows.write_text("#!/bin/sh\necho \"$PATH\"\n")
    shows.chmod(0o755)
    done = subprocess.run(["/bin/sh", "-c", ec2.PROXY_SH, "ec2", "/opt/aws/bin", sys.executable, str(shows)],
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "/usr/bin:/bin:/opt/aws/bin\n"), done.stderr
