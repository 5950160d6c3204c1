"""Idle stop on a booted machine: systemd as PID 1, the instance's own.

The machine is a container that `systemd-nspawn --boot` starts from a Debian
12 root that `bash .ci/machine` builds with debootstrap (and keeps: it is
cached between runs). Its systemd, sshd with PAM, sudo, python3 and
shutdown are Debian's own, as on an instance; nothing of them is a stand-in.
Each run lays an overlay over the cached root, so the root stays as built,
and gives the container a network namespace of the run's own, reached over a
veth pair. The default user is `admin`, with passwordless sudo, as on
Debian's AMIs. ec2 arms it as it arms an instance: moto holds the instance,
and the ssh config maps its made-up address to the container.

Time is compressed: EC2_IDLE_STOP_MINUTE=2, for the guard's unit (a drop-in)
and for every login (/etc/environment), so a minute lasts 2 s: the shortest
window, 10 min, lasts 20 s, and the notice 10 s (after the reboot, when
nobody logs in any more, a minute lasts 1 s). The container's disks are
this machine's: their counters are held still for it (by a unit of the
tests' own), as on the other test instances. /proc/stat's boot time is this
machine's too, so the first window after a boot is not seen here
(test_idle_e2e checks it).
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EC2, ec2, skip_or_fail, stop_pid, wait_until

# Where `bash .ci/machine` builds the root: a Debian 12 of its own.
ROOT_FS = Path(os.environ.get("EC2_TEST_MACHINE", "/var/cache/ec2-tests/bookworm"))
MINUTE = 2
LIB = "/var/lib/ec2-idle-stop"
MINUTE_DROP_IN = "/etc/systemd/system/ec2-idle-stop.service.d/minute.conf"
USER = "admin"
STILL_DISKS = """\
[Unit]
Description=the tests' disk counters, held still
DefaultDependencies=no
Before=sysinit.target

[Service]
Type=oneshot
ExecStart=/bin/mount --bind /etc/ec2-test/diskstats /proc/diskstats
"""


class Booted:
    """The container, booted with systemd as PID 1. A reboot or a power-off ends a boot
    (ended() says which); boot() starts the next, on the same files."""

    def __init__(self, base):
        self.base = base
        tag = os.getpid() % 100000
        self.ns, self.name = f"ec2b{tag}", f"ec2-booted-{tag}"
        self.veth = (f"ec2bh{tag}", f"ec2bn{tag}")
        subnet = 10 + tag % 200
        self.local_address, self.address = f"10.233.{subnet}.1", f"10.233.{subnet}.2"
        self.merged = base / "root"
        self.nspawn = None
        self.mounted = False

    def path(self, path):
        """PATH inside the machine, as this machine sees it through the overlay."""
        return self.merged / path.lstrip("/")

    def read(self, path):
        try:
            return self.path(path).read_text()
        except FileNotFoundError:
            return None

    def write(self, path, text, mode=0o644):
        self.path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path(path).write_text(text)
        self.path(path).chmod(mode)

    def make(self):
        """The overlay over the cached root, the user, the key, the compressed minute, and the network."""
        for d in ("upper", "work", "root"):
            (self.base / d).mkdir()
        layers = f"lowerdir={ROOT_FS},upperdir={self.base}/upper,workdir={self.base}/work"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", layers, str(self.merged)], check=True)
        self.mounted = True
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.base / "key")],
                       check=True)
        subprocess.run(["chroot", str(self.merged), "useradd", "-m", "-s", "/bin/bash", USER], check=True)
        self.write(f"/home/{USER}/.ssh/authorized_keys", (self.base / "key.pub").read_text(), 0o600)
        subprocess.run(["chroot", str(self.merged), "chown", "-R", f"{USER}:{USER}", f"/home/{USER}/.ssh"],
                       check=True)
        self.write(f"/etc/sudoers.d/90-{USER}", f"{USER} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
        self.write("/etc/hostname", f"{self.name}\n")  # debootstrap left this machine's
        self.write("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n")
        self.write("/etc/environment", f"EC2_IDLE_STOP_MINUTE={MINUTE}\n")
        self.write(MINUTE_DROP_IN, f"[Service]\nEnvironment=EC2_IDLE_STOP_MINUTE={MINUTE}\n")
        host_key = self.read("/etc/ssh/ssh_host_ed25519_key.pub").split()
        (self.base / "known_hosts").write_text(f"{self.address} {host_key[0]} {host_key[1]}\n")
        # Held still from boot on: the disks are this machine's, busy with the tests. (nspawn's
        # --bind-ro cannot reach into /proc.)
        self.write("/etc/ec2-test/diskstats", Path("/proc/diskstats").read_text())
        self.write("/etc/systemd/system/ec2-test-still-disks.service", STILL_DISKS)
        self.path("/etc/systemd/system/sysinit.target.wants").mkdir(exist_ok=True)
        self.path("/etc/systemd/system/sysinit.target.wants/ec2-test-still-disks.service").symlink_to(
            "/etc/systemd/system/ec2-test-still-disks.service")
        run = ["ip", "netns", "exec", self.ns]
        here, there = self.veth
        for argv in (["ip", "netns", "add", self.ns],
                     ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
                     ["ip", "link", "set", there, "netns", self.ns],
                     ["ip", "addr", "add", f"{self.local_address}/30", "dev", here],
                     ["ip", "link", "set", here, "up"],
                     [*run, "ip", "addr", "add", f"{self.address}/30", "dev", there],
                     [*run, "ip", "link", "set", there, "up"]):
            subprocess.run(argv, check=True)

    def boot(self):
        """Start the machine, and wait until its sshd answers."""
        self.console = open(self.base / "console.log", "a")
        # --keep-unit and --register=no: this machine's own init is not systemd.
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--boot", "--keep-unit", "--register=no", f"--machine={self.name}",
             f"--directory={self.merged}", f"--network-namespace-path=/run/netns/{self.ns}",
             "--console=passive"],
            stdin=subprocess.DEVNULL, stdout=self.console, stderr=self.console)
        wait_until(self.answering, 60, what=f"the booted machine's sshd (see {self.console.name})")

    def answering(self):
        if self.nspawn.poll() is not None:
            raise AssertionError(f"the machine ended ({self.nspawn.returncode}):"
                                 f" {(self.base / 'console.log').read_text()[-2000:]}")
        try:
            with socket.create_connection((self.address, 22), timeout=1) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def ended(self, timeout):
        """nspawn's exit status once this boot ends: 0 a power-off, 133 a reboot."""
        try:
            return self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the machine still runs after {timeout} s; the guard's log:"
                                 f" {self.log()}") from None
        finally:
            self.console.close()

    def ssh(self, command, check=True):
        """Run the shell COMMAND on the machine as its default user."""
        done = subprocess.run(["ssh", "-F", str(self.ssh_config), f"{USER}@{self.address}", command],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert not check or done.returncode == 0, f"{command}: {done.stderr}"
        return done

    @property
    def ssh_config(self):
        return self.base / "ssh_config"

    def stop(self):
        if self.nspawn and self.nspawn.poll() is None:
            stop_pid(self.nspawn.pid, timeout=15)  # TERM: nspawn asks systemd to power off
        if self.mounted:
            subprocess.run(["umount", str(self.merged)], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth[0]], capture_output=True)

    def log(self):
        """The guard's log, without the times."""
        text = self.read("/var/log/ec2-idle-stop.log") or ""
        return [line.split(" ", 2)[2] for line in text.splitlines()]

    def state(self):
        """(state, the stop's time or 0) as the guard's last check left them."""
        words = ((self.read(f"{LIB}/state") or "").splitlines() or [""])[0].split()
        return (words[0], int(words[2]) if len(words) > 2 and words[2].isdigit() else 0) if words else ("", 0)


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    missing = [t for t in ("systemd-nspawn", "ip", "ssh", "ssh-keygen") if not shutil.which(t)]
    if missing:
        skip_or_fail(f"the booted machine needs {', '.join(missing)} (apt-get install systemd-container"
                     " iproute2 openssh-client)")
    if os.geteuid() != 0:
        skip_or_fail("the booted machine needs root")
    if not (ROOT_FS / "usr/bin/python3").exists():
        skip_or_fail(f"the booted machine's root is not built at {ROOT_FS} (bash .ci/machine builds it)")
    m = Booted(tmp_path_factory.mktemp("booted"))
    try:
        m.make()
        m.boot()
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def gpu(machine, moto, tmp_path_factory):
    """ec2 -H gpu ARGS, where gpu is a moto instance that the ssh config maps to the machine."""
    base = tmp_path_factory.mktemp("laptop")
    made = moto.aws("ec2", "run-instances", "--image-id", moto.image, "--instance-type", "t3.micro")
    instance_id = made["Instances"][0]["InstanceId"]
    dns = moto.describe(instance_id)["PublicDnsName"]
    known = (machine.base / "known_hosts").read_text()  # ec2 names the key after the instance
    (machine.base / "known_hosts").write_text(known + known.replace(machine.address, instance_id, 1))
    machine.ssh_config.write_text(
        f"Host {dns} {machine.address}\n  HostName {machine.address}\n"
        f"  UserKnownHostsFile {machine.base}/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n  IdentitiesOnly yes\n  LogLevel ERROR\n"
        f"  IdentityFile {machine.base}/key\n")
    (base / "ec2.ini").write_text(f"[gpu]\ninstance = {instance_id}\nuser = {USER}\n"
                                  f"ssh_options = -F {machine.ssh_config}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
    env.update(moto.env, EC2_CONFIG=str(base / "ec2.ini"))

    def run(*args):
        return subprocess.run([sys.executable, str(EC2), "-H", "gpu", *args], env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    run.who = ec2.described(moto.describe(instance_id))
    return run


def notice(machine, timeout):
    """The time the stop is due at, once the guard gives notice."""
    return wait_until(lambda: machine.state()[0] == "stopping" and machine.state()[1], timeout,
                      what=f"the notice (the log: {machine.log()})")


def still_up_after(machine, at):
    """Whether the machine still runs a check past AT, the time a stop was due."""
    time.sleep(max(0, at - time.time()) + 2 * MINUTE + 1)
    return machine.nspawn.poll() is None


def test_systemd_runs_the_guard_and_the_default_user_logs_in_and_keeps_it_during_the_notice(machine, gpu):
    done = gpu("--idle-stop", "10m")  # 20 s here
    assert done.stderr == f"ec2: idle stop armed on {gpu.who}: stops after 10m unused (checks every minute)\n"
    assert machine.ssh("systemctl is-active ec2-idle-stop.service; systemctl is-enabled ec2-idle-stop.service"
                       ).stdout == "active\nenabled\n"
    assert machine.log()[0] == "armed: window 10 min (systemd)"
    at = notice(machine, 20 + 3 * MINUTE + 10)
    assert at - time.time() <= 5 * MINUTE  # the guard counts the notice itself,
    for path in ("/run/nologin", "/etc/nologin", "/run/systemd/shutdown/scheduled"):
        assert not machine.path(path).exists(), path  # so nothing blocks a login
    kept = gpu("--keep", "2h")  # the default user logs in, and keeps it as the notice says
    assert kept.returncode == 0 and kept.stdout.startswith(f"{gpu.who}: in use until "), kept.stderr
    wait_until(lambda: machine.state()[0] == "in-use", 2 * MINUTE + 5, what="the keep, seen")
    assert re.fullmatch(rf"in use: kept until \d\d:\d\d by {USER}: stop cancelled", machine.log()[-1])
    assert gpu("--keep", "off").returncode == 0  # idle from now: the next notice is a window away
    assert still_up_after(machine, at)


def test_re_arming_during_the_notice_cancels_the_stop_and_leaves_none_behind(machine, gpu):
    assert not machine.path(f"{LIB}/keep/{USER}").exists()
    at = notice(machine, 20 + 3 * MINUTE + 10)  # the keep ended: a window on, a notice again
    done = gpu("--idle-stop", "20m")  # 40 s here: no notice again before the old stop was due
    assert done.returncode == 0, done.stderr
    log = machine.log()
    cancelled = log.index("stop cancelled: re-armed with a window of 20 min")
    assert log[cancelled + 1] == "armed: window 20 min (systemd)"
    assert still_up_after(machine, at)
    assert machine.state()[0] == "idle" and not machine.path("/run/systemd/shutdown/scheduled").exists()


def test_after_a_reboot_the_guard_runs_from_boot_and_powers_the_machine_off(machine, gpu):
    assert gpu("--idle-stop", "10m").returncode == 0
    # From this boot on nobody logs in, so the minute can be shorter: 1 s.
    machine.write(MINUTE_DROP_IN, "[Service]\nEnvironment=EC2_IDLE_STOP_MINUTE=1\n")
    machine.ssh("sudo systemctl reboot", check=False)
    assert machine.ended(60) == 133  # nspawn's word for a reboot
    armed = machine.log()
    booted = time.time()
    machine.boot()
    # No ssh from here on: the guard starts from boot, gives notice, and powers off.
    assert machine.ended(10 + 5 + 60) == 0  # nspawn's word for a power-off
    took = time.time() - booted
    after = machine.log()[len(armed):]
    assert re.fullmatch(r"idle 1\d of 10 min: stopping at \d\d:\d\d(:\d\d)?", after[-2]), after
    assert after[-1] == "unused for 10 min: powering off"
    assert took >= 5  # the notice, 5 minutes of 1 s
