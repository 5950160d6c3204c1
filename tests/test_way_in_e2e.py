"""The way in, end to end: the real ssh through SSM, EICE and ec2 --proxy, to a real sshd.

moto holds the instances, in a subnet of the test's own with no public
address. What moto does not do, the stand-in aws does (tests/aws_standin.py):
it answers the SSM and EICE questions, and its `ssm start-session` and
`ec2-instance-connect open-tunnel` relay to the sandbox's sshd, as the AWS
services relay to the instance. Nothing connects to an address moto made up:
the one instance --proxy reaches directly was given the sandbox's own
address as its private IP.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from test_laptop import bare_path

from conftest import EC2, ROOT, Terminal, aws_calls, free_port, install_aws_standin, stop_pid, wait_until

USER = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
ENDPOINT = json.dumps({"InstanceConnectEndpoints": [{"InstanceConnectEndpointId": "eice-0e2e",
                                                     "State": "create-complete"}]})


@pytest.fixture(scope="module")
def world(host, moto, tmp_path_factory):
    """The instance (its private IP is the sandbox's address), and a client set up to reach it."""
    base = tmp_path_factory.mktemp("way-in")
    cidr = host.address.rsplit(".", 1)[0] + ".0/24"
    subnet = moto.private_subnet(cidr)
    name = f"private-{os.getpid()}"
    instance_id = moto.launch(name, subnet=subnet, private_ip=host.address)
    found = moto.describe(instance_id)
    assert not found.get("PublicDnsName") and found["PrivateIpAddress"] == host.address
    log = install_aws_standin(base / "bin")
    online = json.dumps({"InstanceInformationList": [{"InstanceId": instance_id, "PingStatus": "Online"}]})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
    env.update(moto.env, PATH=f"{base / 'bin'}{os.pathsep}{ROOT}{os.pathsep}{os.environ['PATH']}",
               EC2_TEST_AWS_LOG=str(log), EC2_TEST_TUNNEL_HOST=host.address, EC2_TEST_SSM_ANSWER=online,
               EC2_TEST_EICE_ANSWER=ENDPOINT, EC2_TEST_AWS_VERSION="aws-cli/2.15.0 Python/3.11.6",
               EC2_CONFIG=str(base / "ec2.ini"))
    return {"id": instance_id, "name": name, "base": base, "log": log, "env": env}


def client(world, tmp_path, known_hosts_text="", checking="accept-new"):
    """ec2's config and the user's ssh config for this test; returns the known_hosts file."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_text)
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host *\n  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                          f"  StrictHostKeyChecking {checking}\n  BatchMode yes\n  IdentitiesOnly yes\n"
                          "  LogLevel ERROR\n")
    return known_hosts, ssh_config


def write_profiles(world, host, ssh_config, **extra):
    keys = "".join(f"{k} = {v}\n" for k, v in extra.items())
    (world["base"] / "ec2.ini").write_text(
        f"[train]\ninstance = {world['name']}\nuser = {USER}\nidentity = {host.base / 'user_key'}\n"
        f"ssh_options = -F {ssh_config}\n{keys}")


def run_ec2(world, *args, env=None):
    env = {**world["env"], "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"], **(env or {})}  # this test's own
    return subprocess.run([sys.executable, str(EC2), *args], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def tunnels(world):
    return [call for call in aws_calls(world["log"]) if call[:2] in (["ssm", "start-session"],
                                                                   ["ec2-instance-connect", "open-tunnel"])]


@pytest.mark.parametrize("mode", ["ssm", "eice"])
def test_login_through_the_tunnel_keeps_the_host_key_under_the_instance_id(world, host, tmp_path, mode):
    known_hosts, ssh_config = client(world, tmp_path)
    write_profiles(world, host, ssh_config, connect=mode)
    done = run_ec2(world, "-H", "train", "--list")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"no sessions on {USER}@{world['id']}\n"
    host_key = (host.base / "host_key.pub").read_text().split()
    assert known_hosts.read_text().split() == [world["id"], *host_key[:2]]
    expected = {"ssm": ["ssm", "start-session", "--target", world["id"], "--document-name",
                        "AWS-StartSSHSession", "--parameters", "portNumber=22"],
                "eice": ["ec2-instance-connect", "open-tunnel", "--instance-id", world["id"],
                         "--remote-port", "22", "--instance-connect-endpoint-id", "eice-0e2e"]}[mode]
    assert tunnels(world)[-1] == expected  # ssh put in the port (%p)


@pytest.mark.parametrize("mode", ["ssm", "eice"])
def test_another_host_key_behind_the_same_instance_id_is_refused(world, host, tmp_path, mode):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key = other.with_suffix(".pub").read_text().split()
    _, ssh_config = client(world, tmp_path, f"{world['id']} {key[0]} {key[1]}\n", checking="yes")
    write_profiles(world, host, ssh_config, connect=mode)
    done = run_ec2(world, "-H", "train", "--list")
    assert done.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in done.stderr


def test_tmux_and_the_jupyter_forward_work_through_ssm(world, host, tmp_path):
    _, ssh_config = client(world, tmp_path)
    write_profiles(world, host, ssh_config)  # connect = auto: no public address, online in SSM
    port = free_port()
    root = tmp_path / "served"
    root.mkdir()
    (root / "index.html").write_text("through the tunnel")
    server = host.spawn(sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(root),
                        str(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    terminal = Terminal(tmp_path, {**world["env"], "TERM": "screen-256color", "LANG": "C.UTF-8",
                                   "HOME": os.environ.get("HOME", "/root"),
                                   "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]})  # this test's own
    try:
        terminal.type(f"ec2 -H train work -j --jupyter-port {port}")
        terminal.wait_for_foreground("ssh")
        assert wait_until(lambda: ("work", "1") in host.sessions(attached=True), what="tmux attached")
        said = wait_until(lambda: re.search(r"Jupyter: http://localhost:(\d+) ", terminal.hidden_screen()),
                          what="the Jupyter line")
        local = int(said.group(1))

        def page():
            try:
                with urllib.request.urlopen(f"http://localhost:{local}/", timeout=5) as response:
                    return response.read().decode()
            except OSError:
                return None

        assert wait_until(page, what="the page through the forward") == "through the tunnel"
        assert "connecting through SSM Session Manager" in terminal.hidden_screen()
    finally:
        terminal.close()
        host.stop_tmux()
        stop_pid(server.pid)


# --- ec2 --proxy, for ssh, scp and the rest -------------------------------------------


def generated_config(world, host, tmp_path, **extra):
    """The user's ssh config: the test's defaults, then ec2 --ssh-config's blocks."""
    known_hosts, defaults = client(world, tmp_path)
    (world["base"] / "ec2.ini").write_text(
        f"[gpu]\ninstance = {world['id']}\nuser = {USER}\nidentity = {host.base / 'user_key'}\n"
        "address = private-ip\nconnect = direct\n" + "".join(f"{k} = {v}\n" for k, v in extra.items()) + "\n"
        f"[tun]\ninstance = {world['name']}\nuser = {USER}\nidentity = {host.base / 'user_key'}\n"
        "connect = ssm\n" + "".join(f"{k} = {v}\n" for k, v in extra.items()))
    done = run_ec2(world, "--ssh-config")
    assert done.returncode == 0, done.stderr
    config = tmp_path / "config"
    config.write_text(f"Include {defaults}\n\n" + done.stdout)
    return config, known_hosts


def proxies_alive(world):
    """The pids of the ec2 --proxy processes of this test's profiles."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--proxy" in argv and str(world["base"] / "ec2.ini").encode() in argv:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("name, mode", [("gpu", "direct"), ("tun", "ssm")])
def test_ssh_and_scp_reach_the_instance_by_profile_name(world, host, tmp_path, name, mode):
    config, known_hosts = generated_config(world, host, tmp_path)
    before = len(tunnels(world))
    done = subprocess.run(["ssh", "-F", str(config), name, "echo", "hello from", "$SSH_CONNECTION"],
                          env=world["env"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("hello from ") and done.stdout.split()[4] == host.address
    # [gpu] names the instance by id: its block gives HostKeyAlias; [tun] by Name, which ssh keys it by.
    assert known_hosts.read_text().split()[0] == (world["id"] if name == "gpu" else name)
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(1 << 20))
    target = host.base / f"copied-{name}"
    done = subprocess.run(["scp", "-q", "-F", str(config), str(payload), f"{name}:{target}"],
                          env=world["env"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == payload.read_bytes()
    assert len(tunnels(world)) - before == (2 if mode == "ssm" else 0)


@pytest.mark.parametrize("name, mode", [("gpu", "direct"), ("tun", "ssm")])
def test_a_launcher_with_a_bare_path_reaches_the_instance_by_name(world, host, tmp_path, name, mode):
    # As VS Code from the Dock, cron or systemd run ssh: nothing of the user's shell but HOME
    # and a PATH of /usr/bin:/bin, behind which python3 is macOS's stub. aws is where the
    # user's shell found it when --ssh-config ran, on no directory of that PATH.
    config, _ = generated_config(world, host, tmp_path)
    assert shutil.which("aws", path="/usr/bin:/bin") is None
    before = len(aws_calls(world["log"]))
    plumbing = [f"{k}={v}" for k, v in world["env"].items() if k.startswith(("AWS_", "EC2_TEST_"))]
    done = subprocess.run(["env", "-i", f"HOME={tmp_path}", f"PATH={bare_path(tmp_path)}", *plumbing,
                           "ssh", "-F", str(config), name, "echo", "reached"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (0, "reached\n"), done.stderr
    asked = [call[:2] for call in aws_calls(world["log"])[before:]]
    assert asked[0] == ["ec2", "describe-instances"]
    assert (["ssm", "start-session"] in asked) == (mode == "ssm")


def test_no_ec2_stays_in_the_data_path_when_the_socket_is_handed_over(world, host, tmp_path):
    config, _ = generated_config(world, host, tmp_path)
    ssh = subprocess.Popen(["ssh", "-F", str(config), "gpu", "echo ready; sleep 3"], env=world["env"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL)
    try:
        assert ssh.stdout.readline() == "ready\n"  # the connection is up and carrying data
        assert proxies_alive(world) == []
        started = time.monotonic()
        assert ssh.wait(30) == 0 and time.monotonic() - started > 1
    finally:
        if ssh.poll() is None:
            ssh.kill()
        ssh.wait()


def own(world):
    """The client's environment, with this test's own ec2 cache: nothing an earlier test's
    connection remembered (a running instance) answers for the stopped one here."""
    return {**world["env"], "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}


def answers(address, port):
    try:
        socket.create_connection((address, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_a_stopped_instance_starts_when_ssh_connects_through_its_host_block(world, host, moto, tmp_path):
    # The instance is stopped; its sshd (a second one, on port 2222 of the sandbox) starts only
    # 5 s after the start call, as an instance's does once it has booted.
    config, _ = generated_config(world, host, tmp_path, auto_start="yes")
    sshd_config = tmp_path / "sshd_config"
    sshd_config.write_text((host.base / "sshd_config").read_text().replace(f"{host.address}:22",
                                                                            f"{host.address}:2222"))
    moto.aws("ec2", "stop-instances", "--instance-ids", world["id"])
    before, sshd = len(aws_calls(world["log"])), None
    ssh = subprocess.Popen(["ssh", "-p", "2222", "-F", str(config), "gpu", "echo", "reached"],
                           env=own(world), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: ["ec2", "start-instances"] in [c[:2] for c in aws_calls(world["log"])[before:]],
                   30, what="the start")
        time.sleep(5)
        sshd = host.spawn(shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(sshd_config),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        up = wait_until(lambda: answers(host.address, 2222) and time.monotonic(), 10, what="the delayed sshd")
        out, err = ssh.communicate(timeout=60)
        done = time.monotonic()
    finally:
        if ssh.poll() is None:
            stop_pid(ssh.pid)
        if sshd:
            stop_pid(sshd.pid)
        moto.aws("ec2", "start-instances", "--instance-ids", world["id"])  # as the other tests want it
    assert (ssh.returncode, out) == (0, "reached\n"), err
    who = f"{world['id']} ({world['name']})"
    lines = err.splitlines()
    assert lines[0] == f"ec2: starting {who}" and f"ec2: {who}: running, waiting for ssh, " in err, err
    assert re.fullmatch(rf"ec2: {re.escape(who)}: ssh answers, \d+ s", lines[-1]), err
    assert done - up < 2.5  # ec2 added at most about a second to sshd's first answer


def test_a_stopped_instance_starts_through_ssm_which_takes_a_session_some_seconds_later(world, host, moto,
                                                                                     tmp_path):
    # After the start SSM knows the instance (ConnectionLost), and its start-session says
    # TargetNotConnected twice, as it does for a minute or more after an instance starts.
    config, _ = generated_config(world, host, tmp_path, auto_start="yes")
    lost = json.dumps({"InstanceInformationList": [{"InstanceId": world["id"],
                                                    "PingStatus": "ConnectionLost"}]})
    moto.aws("ec2", "stop-instances", "--instance-ids", world["id"])
    before = len(tunnels(world))
    env = {**own(world), "EC2_TEST_SSM_ANSWER": lost, "EC2_TEST_SSM_REFUSALS": "2",
           "EC2_TEST_SSM_REFUSED": str(tmp_path / "refused")}
    try:
        done = subprocess.run(["ssh", "-F", str(config), "tun", "echo", "reached"], env=env,
                              capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    finally:
        moto.aws("ec2", "start-instances", "--instance-ids", world["id"])  # as the other tests want it
    assert (done.returncode, done.stdout) == (0, "reached\n"), done.stderr
    assert f"ec2: {world['id']} ({world['name']}): running, waiting for SSM, " in done.stderr
    assert (tmp_path / "refused").read_text() == "xx"
    assert len(tunnels(world)) - before == 4  # refused twice, then the one that answered, then ssh's own


def test_two_connections_at_once_to_a_stopped_instance_both_connect(world, host, moto, tmp_path):
    # As VS Code opens several at once: each may start it (a start of a pending or running
    # instance is harmless to AWS); both wait, and both get in.
    config, _ = generated_config(world, host, tmp_path, auto_start="yes")
    moto.aws("ec2", "stop-instances", "--instance-ids", world["id"])
    before, both = len(aws_calls(world["log"])), []
    try:
        both += [subprocess.Popen(["ssh", "-F", str(config), "gpu", "echo", "reached"], env=own(world),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL) for _ in range(2)]
        said = [ssh.communicate(timeout=60) for ssh in both]
    finally:
        for ssh in both:
            if ssh.poll() is None:
                stop_pid(ssh.pid)
    assert [(ssh.returncode, out) for ssh, (out, _) in zip(both, said)] == [(0, "reached\n")] * 2, said
    starts = [call for call in aws_calls(world["log"])[before:] if call[:2] == ["ec2", "start-instances"]]
    assert 1 <= len(starts) <= 2 and moto.describe(world["id"])["State"]["Name"] == "running"
