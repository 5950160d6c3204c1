"""Remembered answers end to end: the real ssh and sshd, moto and the real AWS CLI.

The instance is sshd in a network namespace with two addresses of the
sandbox's own. moto is told that the instance's public address is one of
them (it would otherwise hand out one that nobody may connect to). The
instance "moves" as a stop and start moves it: the remembered address goes
from the namespace, so nothing answers there, and moto names the other.
"""

import os
import subprocess
import sys
import time

import pytest

from conftest import EC2, Host, aws_calls, install_aws_standin, run, started_host, stop_pid, wait_until

USER = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()


class MovingHost(Host):
    """A Host whose sshd listens on every address of its namespace, which has a second one."""

    KIND, NET = "m", 233

    def start_sshd(self, log):
        config = self.base / "sshd_config"
        config.write_text(config.read_text().replace(f"ListenAddress {self.address}:22",
                                                     "ListenAddress 0.0.0.0:22"))
        self.log = log
        return super().start_sshd(log)

    def start(self):
        super().start()
        self.other = self.address.rsplit(".", 1)[0] + ".6"  # outside the /30: a route of its own
        self.netns("ip", "addr", "add", f"{self.other}/32", "dev", self.veth[1])
        run("ip", "route", "add", f"{self.other}/32", "dev", self.veth[0])

    def leave(self, address):
        """ADDRESS is no longer the instance's: nothing answers there, as after a stop and start."""
        self.netns("ip", "addr", "del", f"{address}/32", "dev", self.veth[1])

    def replace(self):
        """Another machine, with a host key of its own, at the same addresses."""
        stop_pid(self.sshd.pid)
        self.pids.remove(self.sshd.pid)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.base / "other_host_key"))
        config = self.base / "sshd_config"
        config.write_text(config.read_text().replace(f"HostKey {self.base}/host_key",
                                                     f"HostKey {self.base}/other_host_key"))
        self.sshd = self.start_sshd(self.log)
        wait_until(self.accepting, what="the other machine's sshd")

    def stop(self):
        subprocess.run(["ip", "route", "del", f"{self.other}/32"], capture_output=True)
        super().stop()


@pytest.fixture(scope="module")
def moving_host(tmp_path_factory):
    yield from started_host(MovingHost, tmp_path_factory.mktemp("moving"))


@pytest.fixture
def client(moving_host, moto, tmp_path):
    """ec2's config for the instance at the namespace's second address, and a way to run ec2."""
    host = moving_host
    name = f"moving-{os.getpid()}"
    instance_id = moto.launch(name)
    moto.set_state(instance_id, f"public-ip {host.other}")
    known_hosts = tmp_path / "known_hosts"
    key = (host.base / "host_key.pub").read_text().split()
    known_hosts.write_text(f"{instance_id} {key[0]} {key[1]}\n")  # as a first connection left it
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host *\n  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                          "  StrictHostKeyChecking yes\n  BatchMode yes\n  IdentitiesOnly yes\n"
                          "  LogLevel ERROR\n")
    config = tmp_path / "ec2.ini"
    config.write_text(f"[gpu]\ninstance = {instance_id}\nuser = {USER}\naddress = public-ip\n"
                      f"identity = {host.base / 'user_key'}\nssh_options = -F {ssh_config}\n")
    log = install_aws_standin(tmp_path / "aws-bin", plugin=False)  # counts the calls, moto answers
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
    env.update(moto.env, PATH=f"{tmp_path / 'aws-bin'}{os.pathsep}{os.environ['PATH']}",
               EC2_TEST_AWS_LOG=str(log), EC2_CONFIG=str(config), XDG_CACHE_HOME=str(tmp_path / "cache"))

    def ec2(*args):
        began = time.monotonic()
        done = subprocess.run([sys.executable, str(EC2), "-H", "gpu", *args], env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        return done, time.monotonic() - began

    ec2.who, ec2.id = f"{instance_id} ({name})", instance_id
    ec2.calls = lambda: [call[:2] for call in aws_calls(log)]
    yield ec2
    subprocess.run(["ip", "netns", "exec", host.ns, "ip", "addr", "add", f"{host.other}/32", "dev",
                    host.veth[1]], capture_output=True)  # back, if a test moved it


def test_a_remembered_address_that_no_longer_answers_is_asked_for_again(client, moving_host, moto):
    first, _ = client("--list")
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"no sessions on {USER}@{moving_host.other}\n"
    again, _ = client("--list")
    assert again.stdout == first.stdout and client.calls() == [["ec2", "describe-instances"]]
    moving_host.leave(moving_host.other)  # stopped and started: at another address now
    moto.set_state(client.id, f"public-ip {moving_host.address}")
    moved, took = client("--list")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout == f"no sessions on {USER}@{moving_host.address}\n"  # the host key held
    assert moved.stderr == (f"ec2: {client.who} does not answer at {moving_host.other};"
                            " asking AWS where it is now\n")
    assert 3 <= took < 15  # PROBE_SECONDS, then one lookup and the login
    assert client.calls() == [["ec2", "describe-instances"]] * 2


def test_a_remembered_address_where_another_machine_answers_is_refused(client, moving_host):
    first, _ = client("--list")
    assert first.returncode == 0, first.stderr
    moving_host.replace()  # another machine at the remembered address
    refused, _ = client("--list")
    assert refused.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert client.calls() == [["ec2", "describe-instances"]]  # remembered: the key check refused it
