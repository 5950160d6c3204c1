"""Shared fixtures: ec2 loaded as a module, a recording ssh, and a real host.

The real host is an OpenSSH server in a network namespace made for the test
run, reached over a veth pair: a second machine as far as ssh, tmux and
port forwards can tell. A person's terminal is a tmux pane on a private
socket, typed into with send-keys and read with capture-pane.
"""

import contextlib
import importlib.machinery
import importlib.util
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from price_list import PriceList

ROOT = Path(__file__).resolve().parent.parent
EC2 = ROOT / "ec2"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The loader would write ec2cpython-311.pyc beside the script.
sys.dont_write_bytecode = True


def pytest_configure(config):
    """A run ended by SIGTERM (a time-out's signal) ends as one ended by Ctrl-C: pytest
    tears the fixtures down, so every sshd, machine and namespace they made goes too."""
    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)


def load_ec2():
    """Import the extensionless script as the module `ec2`."""
    loader = importlib.machinery.SourceFileLoader("ec2", str(EC2))
    spec = importlib.util.spec_from_loader("ec2", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ec2"] = module
    loader.exec_module(module)
    return module


ec2 = load_ec2()


def skip_or_fail(reason):
    """Skip on a laptop without the tools; under CI a skip would hide a hole."""
    if IN_CI:
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


def wait_until(check, timeout=15.0, what="condition"):
    """Poll check() until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def stop_pid(pid, timeout=5.0, signals=(signal.SIGTERM, signal.SIGKILL)):
    """Stop one process by its pid: TERM, then KILL (or SIGNALS, in turn)."""
    for sig in signals:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # Reap it if it is our child; else see whether it still exists.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                if not running(pid):
                    return
            time.sleep(0.05)


def running(pid):
    """Whether PID is a process that has not ended: a zombie has, only its parent must reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def held_port(port=0, address="127.0.0.1", reuse=False):
    """PORT (0: a free one) taken by a listening socket on ADDRESS for the with-block; yields it.

    REUSE sets SO_REUSEADDR, as ssh does, to take a port that a closed
    connection left in TIME_WAIT.
    """
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen()
        yield sock.getsockname()[1]


def free_port():
    """A port that is free on this machine's loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def run_cache(tmp_path_factory):
    """Nothing the tests run writes to ~/.cache, not even what a module's fixture
    starts with the environment it copied before any test's own cache was set."""
    real = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ec2")
    before = snapshot(real)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield
    assert snapshot(real) == before, f"a test wrote to {real}"


def snapshot(directory):
    """The names and modification times of what is under DIRECTORY."""
    return sorted((str(path), path.stat().st_mtime_ns) for path in Path(directory).rglob("*")) \
        if os.path.isdir(directory) else None


@pytest.fixture(autouse=True)
def private_cache(run_cache, tmp_path_factory, monkeypatch):
    """ec2's forward records and session list go to a directory of each test's own:
    no test sees what another left there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No EC2_* variables, and a config directory of the test's own."""
    monkeypatch.delenv("EC2_HOST", raising=False)
    monkeypatch.delenv("EC2_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


# --- ec2.main in this process -------------------------------------------------


class Exec(BaseException):
    """Raised by the fake execvp: like the real one, it does not return."""


class TTY:
    def isatty(self):
        return True


@pytest.fixture
def ec2_run(clean_env, monkeypatch, capsys):
    """Call ec2.main(argv); return (status, exec'd argv or None, stdout, stderr)."""

    def call(*argv, tty=True):
        execs = []

        def execvp(file, args):
            execs.append(list(args))
            raise Exec

        monkeypatch.setattr(ec2.os, "execvp", execvp)
        if tty:
            monkeypatch.setattr(sys, "stdin", TTY())
        try:
            status = ec2.main(list(argv))
        except Exec:
            status = "exec"
        except SystemExit as e:
            status = e.code
        out, err = capsys.readouterr()
        return status, (execs[0] if execs else None), out, err

    return call


def write_config(clean_env, text):
    path = clean_env / "xdg" / "ec2" / "config"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the recording ssh -------------------------------------------------------

RECORDING_SSH = """#!/bin/sh
# Records its argv, NUL-separated, in RECORD.1, RECORD.2, ... (one file a
# call), then behaves as told by the environment. ssh -G (what ssh would do)
# is the real ssh's, unrecorded, with $EC2_TEST_SSH_G's options first (where a
# test sends ec2's own connection, after a start: to loopback).
for word; do [ "$word" = -G ] && exec /usr/bin/ssh $EC2_TEST_SSH_G "$@"; done
n=1
while [ -e "$EC2_TEST_RECORD.$n" ]; do n=$((n + 1)); done
printf '%s\\0' "$0" "$@" > "$EC2_TEST_RECORD.$n"
[ -n "$EC2_TEST_SSH_STDOUT" ] && printf '%s\\n' "$EC2_TEST_SSH_STDOUT"
# An interactive ssh (-t) that lasts, as the one holding a forward does.
for word; do [ "$word" = -t ] && [ -n "$EC2_TEST_SSH_SECONDS" ] && sleep "$EC2_TEST_SSH_SECONDS"; done
exit "${EC2_TEST_SSH_STATUS:-0}"
"""


class Recorder:
    """Runs the real ec2 in a subprocess with a recording ssh first on PATH."""

    def __init__(self, tmp_path):
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        ssh = self.bin / "ssh"
        ssh.write_text(RECORDING_SSH)
        ssh.chmod(0o755)
        self.record = tmp_path / "ssh-argv"
        self.command = [sys.executable, str(EC2)]  # the copied script, run by this Python
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EC2_")}
        self.env.update(
            PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            XDG_CONFIG_HOME=str(tmp_path / "xdg"),
            EC2_TEST_RECORD=str(self.record),
        )

    def run(self, *args, env=None, stdin=subprocess.DEVNULL):
        for old in self.record.parent.glob(self.record.name + ".*"):
            old.unlink()
        return subprocess.run(
            [*self.command, *args], env={**self.env, **(env or {})},
            stdin=stdin, capture_output=True, text=True, timeout=30,
        )

    def calls(self):
        """The argv of each call of the recording ssh, in order."""
        calls, n = [], 1
        while (self.record.parent / f"{self.record.name}.{n}").exists():
            words = (self.record.parent / f"{self.record.name}.{n}").read_bytes().split(b"\0")[:-1]
            calls.append([Path(words[0].decode()).name] + [w.decode() for w in words[1:]])
            n += 1
        return calls

    def argv(self):
        """What the recording ssh was called with last, or None if it was not."""
        calls = self.calls()
        return calls[-1] if calls else None


@pytest.fixture
def recorder(tmp_path):
    return Recorder(tmp_path)


# --- the AWS CLI against moto ----------------------------------------------------


class FakeAws:
    """ec2.aws replaced: records each call's arguments, answers from a list (raising
    an answer that is an exception, as a Failure of the CLI)."""

    def __init__(self, monkeypatch, *answers):
        self.calls, self.answers = [], list(answers)
        monkeypatch.setattr(ec2, "aws", self)

    def __call__(self, profile, *args, **how):  # how: aws()'s region and timeout
        self.calls.append(args)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer



def running_once_started(aws, monkeypatch, found):
    """AWS (a fake whose answers are keyed by command) as ec2.aws, where describe-instances
    answers FOUND once start-instances has been called."""
    real = aws.__call__

    def answer(profile, *args):
        if args[1] == "start-instances":
            aws.answers["describe_instances"] = found
        return real(profile, *args)

    monkeypatch.setattr(ec2, "aws", answer)


MOTO = ROOT / "tests" / "moto_ec2.py"


class Moto:
    """moto on 127.0.0.1, and the environment that points the AWS CLI at it."""

    def __init__(self, tmp_path, env=None):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(MOTO), str(self.port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **(env or {})})
        assert self.proc.stdout.readline() == "ready\n"
        # moto has no Price List API; a stand-in answers at once, as IAM does without pricing:GetProducts.
        self.prices = PriceList("denied")
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ENDPOINT_URL_PRICING": self.prices.env["AWS_ENDPOINT_URL_PRICING"],
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            # Never ask the instance metadata service (a link-local address)
            # for credentials, and never read the developer's own AWS files.
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        }
        images = self.aws("ec2", "describe-images")["Images"]
        self.image = images[0]["ImageId"]
        # An AMI moto says nothing of a platform for: Linux, as a correct ec2 prices it.
        self.linux_image = next(i["ImageId"] for i in images if not i.get("Platform"))

    def aws(self, *args, env=None):
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        done = subprocess.run(["aws", *args, "--output", "json"], env={**base, **self.env, **(env or {})},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout or "{}")

    def launch(self, name, instance_type="t3.micro", subnet=None, private_ip=None, image=None, spot=False):
        """A new running instance with that Name tag, of IMAGE (else moto's first, a Windows
        AMI), on demand unless SPOT; returns its id.

        In a SUBNET of the test's own (see private_subnet), it has no public address.
        """
        tags = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}]
        where = (["--subnet-id", subnet] if subnet else []) + (["--private-ip-address", private_ip]
                                                             if private_ip else [])
        market = ["--instance-market-options", '{"MarketType": "spot"}'] if spot else []
        made = self.aws("ec2", "run-instances", "--image-id", image or self.image, "--instance-type",
                        instance_type, "--tag-specifications", json.dumps(tags), *where, *market)
        return made["Instances"][0]["InstanceId"]

    def private_subnet(self, cidr):
        """A new VPC with one subnet of CIDR, whose instances get no public address."""
        vpc = self.aws("ec2", "create-vpc", "--cidr-block", cidr)["Vpc"]["VpcId"]
        return self.aws("ec2", "create-subnet", "--vpc-id", vpc, "--cidr-block", cidr)["Subnet"]["SubnetId"]

    def sent_keys(self):
        """The (instance id, user, key) of each send-ssh-public-key moto has taken."""
        self.proc.stdin.write("keys\n")
        self.proc.stdin.flush()
        return [tuple(sent) for sent in json.loads(self.proc.stdout.readline())]

    def describe(self, instance_id, env=None):
        found = self.aws("ec2", "describe-instances", "--instance-ids", instance_id, env=env)
        return found["Reservations"][0]["Instances"][0]

    def set_state(self, instance_id, state):
        """Put the instance in a state moto's API never leaves it in (or 'launched N')."""
        self.proc.stdin.write(f"{instance_id} {state}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "ok\n"

    def stop(self):
        self.proc.stdin.close()
        stop_pid(self.proc.pid)
        self.prices.close()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    try:
        import moto  # noqa: F401
    except ImportError:
        skip_or_fail("the EC2 tests need moto[server] (pip install 'moto[server]' awscli)")
    if not shutil.which("aws"):
        skip_or_fail("the EC2 tests need the AWS CLI (pip install awscli)")
    m = Moto(tmp_path_factory.mktemp("aws"))
    yield m
    m.stop()


# --- a stand-in aws, for what moto does not do (SSM, EICE) --------------------


def install_aws_standin(directory, plugin=True):
    """Put tests/aws_standin.py in DIRECTORY as `aws` (with a `session-manager-plugin`
    beside it, unless PLUGIN is false); return the file its calls are logged to."""
    directory.mkdir(exist_ok=True)
    aws = directory / "aws"
    standin = shlex.join([sys.executable, str(ROOT / "tests" / "aws_standin.py")])
    # The real CLI by its path, for a caller whose PATH has none (a launcher's).
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if d != str(directory))
    real = shlex.quote(shutil.which("aws", path=path) or "aws")
    aws.write_text(f'#!/bin/sh\nEC2_TEST_AWS_HERE={shlex.quote(str(directory))} EC2_TEST_REAL_AWS={real}'
                   f' exec {standin} "$@"\n')
    aws.chmod(0o755)
    if plugin:  # only looked for: the stand-in aws does the plugin's work itself
        (directory / "session-manager-plugin").write_text("#!/bin/sh\nexit 1\n")
        (directory / "session-manager-plugin").chmod(0o755)
    return directory / "aws-calls"


def aws_calls(log):
    """The argv of each call of the stand-in aws, in order."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# --- a real host: sshd in a network namespace ----------------------------------


def run(*argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


# The instance's home directory, laid over this machine's (an overlay in
# sshd's own mount namespace, so this machine's files stay as they are): a
# data scientist's account in miniature, where `conda init` has put conda in
# ~/.bashrc behind its interactive guard, so `jupyter` is on the PATH of a
# login shell, not on the PATH of an ssh command.
INSTANCE_HOME = {
    ".bash_profile": """\
# As Amazon Linux ships it: a login bash reads ~/.bashrc.
if [ -f ~/.bashrc ]; then . ~/.bashrc; fi
""",
    ".bashrc": """\
# Not interactive (an ssh command): nothing below applies.
case $- in *i*) ;; *) return;; esac
# What conda init leaves, in miniature: `conda activate NAME` puts the
# environment ~/envs/NAME on the PATH in place of the active one, and base
# is activated at once.
conda() {
    if [ "$1" = activate ] && [ -d "$HOME/envs/$2/bin" ]; then
        PATH="$HOME/envs/$2/bin:${PATH#"$HOME/envs/$CONDA_DEFAULT_ENV/bin:"}" CONDA_DEFAULT_ENV=$2
        export PATH CONDA_DEFAULT_ENV
    else
        echo "EnvironmentNameNotFound: Could not find conda environment: $2" >&2
        return 1
    fi
}
conda activate base
""",
    # The tests' sshd logs in as root, which Jupyter refuses unless told.
    ".jupyter/jupyter_server_config.json": '{"ServerApp": {"allow_root": true}}\n',
}


class Host:
    """An OpenSSH server in a network namespace of its own, at `address`.

    ssh reaches it as Host `instance` through the client config `ssh_config`
    (pass it to ec2 as `-- -F PATH`). Remote tmux servers keep their sockets
    under `tmux_dir`, not in the machine's /tmp. The user's home there is
    INSTANCE_HOME laid over this machine's, with the conda environments
    `base` (this interpreter's, with Jupyter), `second` (the same, by
    another name) and `empty` (no Jupyter).
    """

    # Names and addresses of its own, for each kind of host in one test run.
    KIND, NET = "t", 231

    def __init__(self, base):
        self.base = base
        tag = os.getpid() % 100000
        self.ns = f"ec2{self.KIND}{tag}"
        self.veth = (f"ec2{self.KIND}h{tag}", f"ec2{self.KIND}n{tag}")
        subnet = 10 + tag % 200
        # The namespace's own addresses, reachable only over its veth pair.
        self.local_address, self.address = f"10.{self.NET}.{subnet}.1", f"10.{self.NET}.{subnet}.2"
        self.tmux_dir = base / "remote-tmux"
        self.tmux_dir.mkdir(mode=0o700)
        self.ssh_config = base / "ssh_config"
        # Where the instance's Jupyter servers write their info files; ssh
        # sends it, so a test can point a connection elsewhere with -o SetEnv.
        self.jupyter_runtime = base / "jupyter-runtime"
        self.jupyter_runtime.mkdir()
        self.pids = []  # processes started in the namespace, stopped by pid

    def make_home(self):
        """The instance's own files for the home directory, and the overlay's work dir."""
        self.home = self.base / "home"
        for name, text in INSTANCE_HOME.items():
            (self.home / name).parent.mkdir(parents=True, exist_ok=True)
            (self.home / name).write_text(text)
        envs = self.home / "envs"
        envs.mkdir()
        for name in ("base", "second"):
            (envs / name).symlink_to(sys.prefix)
        (envs / "empty" / "bin").mkdir(parents=True)
        (self.base / "home-work").mkdir()

    def start(self):
        self.make_home()
        for name in ("host_key", "user_key"):
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.base / name))
        (self.base / "authorized_keys").write_text((self.base / "user_key.pub").read_text())
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        host_pub = (self.base / "host_key.pub").read_text().split()
        (self.base / "known_hosts").write_text(f"{self.address} {host_pub[0]} {host_pub[1]}\n")
        (self.base / "sshd_config").write_text(f"""\
ListenAddress {self.address}:22
HostKey {self.base}/host_key
AuthorizedKeysFile {self.base}/authorized_keys
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
PrintLastLog no
SetEnv TMUX_TMPDIR={self.tmux_dir}
AcceptEnv JUPYTER_RUNTIME_DIR
Subsystem sftp internal-sftp
""")
        self.ssh_config.write_text(f"""\
Host instance
  HostName {self.address}
  User {user}
  IdentityFile {self.base}/user_key
  IdentitiesOnly yes
  UserKnownHostsFile {self.base}/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
  SetEnv JUPYTER_RUNTIME_DIR={self.jupyter_runtime}
""")
        run("ip", "netns", "add", self.ns)
        here, there = self.veth
        run("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        run("ip", "link", "set", there, "netns", self.ns)
        run("ip", "addr", "add", f"{self.local_address}/30", "dev", here)
        run("ip", "link", "set", here, "up")
        self.netns("ip", "addr", "add", f"{self.address}/30", "dev", there)
        self.netns("ip", "link", "set", there, "up")
        self.netns("ip", "link", "set", "lo", "up")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation dir
        log = open(self.base / "sshd.log", "w")
        self.sshd = self.start_sshd(log)
        wait_until(self.accepting, what=f"sshd on {self.address}:22 (see {log.name})")

    def start_sshd(self, log):
        """sshd in the namespace, with the instance's home laid over this machine's."""
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        # `ip netns exec` gives sshd a mount namespace of its own, where the
        # overlay makes the home directory the instance's; sh execs sshd, so
        # this pid is sshd's own.
        home = pwd.getpwuid(os.getuid()).pw_dir
        return self.spawn(
            "sh", "-c", 'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$1"'
            ' && exec "$4" -D -e -f "$5"', "sh", home, str(self.home), str(self.base / "home-work"),
            sshd, str(self.base / "sshd_config"), stdout=log, stderr=log)

    def ec2_args(self, *args, ssh_args=()):
        """ec2's arguments that reach this host: -H instance ARGS -- -F its config."""
        return ["-H", "instance", *args, "--", "-F", str(self.ssh_config), *ssh_args]

    def ec2_line(self, *args):
        """The command a person types into a terminal to run ec2 ARGS for this host."""
        return shlex.join(["ec2", *self.ec2_args(*args)])

    def run_ec2(self, *args, ssh_args=()):
        """Run ec2 ARGS for this host, with no terminal."""
        return subprocess.run([sys.executable, str(EC2), *self.ec2_args(*args, ssh_args=ssh_args)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def netns(self, *argv):
        return run("ip", "netns", "exec", self.ns, *argv)

    def spawn(self, *argv, **kwargs):
        """Start a process inside the namespace; stop() stops it by its pid."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kwargs)
        self.pids.append(proc.pid)
        return proc

    def accepting(self):
        if self.sshd.poll() is not None:
            raise AssertionError(f"sshd exited: {(self.base / 'sshd.log').read_text()}")
        try:
            socket.create_connection((self.address, 22), timeout=1).close()
            return True
        except OSError:
            return False

    def tmux(self, *args):
        """Run tmux against the instance's default server, as its user would."""
        env = {**os.environ, "TMUX_TMPDIR": str(self.tmux_dir)}
        env.pop("TMUX", None)
        return subprocess.run(["tmux", *args], env=env, capture_output=True, text=True)

    def sessions(self, attached=False):
        """The names of the instance's tmux sessions, with attached counts if asked."""
        form = "#{session_name}\t#{session_attached}" if attached else "#{session_name}"
        done = self.tmux("list-sessions", "-F", form)
        if done.returncode:
            return []
        lines = done.stdout.splitlines()
        return [tuple(line.split("\t")) for line in lines] if attached else lines

    def stop_tmux(self):
        """Stop what runs in the instance's tmux windows, then its server, each by its pid."""
        panes = self.tmux("list-panes", "-a", "-F", "#{pane_pid}").stdout.split()
        for pid in panes:  # an interactive shell ignores TERM, but not HUP
            stop_pid(int(pid), timeout=3, signals=(signal.SIGHUP, signal.SIGTERM, signal.SIGKILL))
        done = self.tmux("display-message", "-p", "#{pid}")
        if done.returncode == 0 and done.stdout.strip().isdigit():
            stop_pid(int(done.stdout))

    def stop(self):
        self.stop_tmux()
        for pid in reversed(self.pids):
            stop_pid(pid)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth[0]], capture_output=True)


def started_host(kind, base, tools=(), packages=""):
    """A started host of class KIND in BASE, for a fixture to yield from; stopped after.

    TOOLS are what it needs beyond ip, ssh, tmux and sshd, from the Debian PACKAGES.
    """
    missing = [t for t in ("ip", "ssh", "ssh-keygen", "tmux", *tools) if not shutil.which(t)]
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        missing.append("sshd")
    if missing:
        install = " ".join(["apt-get install openssh-server tmux iproute2", packages]).strip()
        skip_or_fail(f"end-to-end tests need {', '.join(missing)} ({install})")
    if os.geteuid() != 0:
        skip_or_fail("end-to-end tests make namespaces, which needs root")
    h = kind(base)
    try:
        h.start()
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    yield from started_host(Host, tmp_path_factory.mktemp("host"))


@pytest.fixture
def fresh_host(host):
    """The host, with no tmux server left over from an earlier test."""
    host.stop_tmux()
    yield host
    host.stop_tmux()


# --- a person's terminal: a tmux pane on a private socket ----------------------


class Terminal:
    """A shell in a tmux pane on a private socket, driven like a person would."""

    def __init__(self, base, env):
        self.socket = str(base / "terminal.sock")
        self.env = env
        shell = shlex.join(["env", "-i", *(f"{k}={v}" for k, v in env.items()),
                            "bash", "--norc", "--noprofile"])
        self.tmux("new-session", "-d", "-x", "200", "-y", "50", "-s", "term", shell)
        self.pid = int(self.tmux("display-message", "-p", "#{pid}").stdout)
        self.type("PS1='$ '")

    def tmux(self, *args):
        env = {k: v for k, v in os.environ.items() if k != "TMUX"}
        return run("tmux", "-S", self.socket, "-f", "/dev/null", *args, env=env)

    def type(self, text, enter=True):
        self.tmux("send-keys", "-t", "term", "-l", text)
        if enter:
            self.tmux("send-keys", "-t", "term", "Enter")

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "term", *keys)

    def screen(self):
        """What the pane shows now, joined wrapped lines, with its history."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-1000", "-t", "term").stdout

    def hidden_screen(self):
        """The normal screen a full-screen program (like tmux) is painted over."""
        return self.tmux("capture-pane", "-p", "-J", "-a", "-t", "term").stdout

    def foreground(self):
        """The name of the program in the foreground of the pane."""
        return self.tmux("display-message", "-p", "-t", "term", "#{pane_current_command}").stdout.strip()

    def wait_for_foreground(self, name):
        wait_until(lambda: self.foreground() == name, what=f"{name} in the foreground,"
                   f" not {self.foreground()}:\n{self.screen()}")

    def wait_for(self, text, timeout=15.0):
        return wait_until(lambda: text in self.screen(), timeout,
                          what=f"{text!r} on screen:\n{self.screen()}")

    def close(self):
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)
        stop_pid(self.pid)


@pytest.fixture
def terminal(tmp_path):
    if not shutil.which("tmux"):
        skip_or_fail("the terminal tests need tmux (apt-get install tmux)")
    env = {
        "PATH": f"{ROOT}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        "TERM": "screen-256color",
        "LANG": "C.UTF-8",
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"],
    }
    t = Terminal(tmp_path, env)
    yield t
    t.close()


# --- an instance for idle stop: its own /etc, /var, processes and ptys --------

# The stand-ins that idle stop's tests put on the guard's PATH (/usr/local/sbin
# comes first on it), each recording its arguments, with
# \x1f after each, \x1e after each call; nvidia-smi answers what /var/tmp/gpu says.
RECORDING = """#!/bin/sh
{ for a; do printf '%s\\037' "$a"; done; printf '\\036'; } >> /var/tmp/{name}-calls
"""
NVIDIA_SMI = """#!/bin/sh
cat /var/tmp/gpu 2>/dev/null || echo '0, 0'
"""


# The instance's machine, for the mount namespace that runs this script with
# BASE HOME UPPER KEEP (then what the caller adds: sshd, say): overlays on
# /etc, /var, /usr/local, /home and HOME (whose upper layer is UPPER), whose
# writes land in BASE; a /tmp and /run of its own, where the paths under
# /tmp that KEEP lists (':' between them) stay; and a devpts of its own.
PRIVATE_MACHINE = r"""
set -e
base=$1 home=$2 upper=$3 keep=$4; shift 4
for d in /etc /var /usr/local /home; do
    n=$(echo "$d" | tr / _); mkdir -p "$base/up$n" "$base/work$n"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$base/up$n,workdir=$base/work$n" "$d"
done
mkdir -p "$upper" "$base/home-work"
mount -t overlay overlay -o "lowerdir=$home,upperdir=$upper,workdir=$base/home-work" "$home"
mount -t tmpfs tmpfs /run; mkdir -p /run/sshd
IFS=:; i=0; for p in $keep; do mkdir -p /run/keep$i; mount --bind "$p" /run/keep$i; i=$((i + 1)); done
mount -t tmpfs tmpfs /tmp
i=0; for p in $keep; do mkdir -p "$p"; mount --move /run/keep$i "$p"; rmdir /run/keep$i; i=$((i + 1)); done
unset IFS
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
mount --bind /dev/pts/ptmx /dev/ptmx
"""


# This machine's disks are not the instance's: their counters, held still for
# the guard (a test that measures a disk job lets them go: umount /proc/diskstats).
STILL_DISKS = "cp /proc/diskstats /run/diskstats; mount --bind /run/diskstats /proc/diskstats\n"


def private_machine(base, upper):
    """PRIVATE_MACHINE's BASE HOME UPPER KEEP: KEEP what lies under /tmp and must stay."""
    keep = [p for p in dict.fromkeys([str(base), sys.prefix, os.path.realpath(sys.prefix), sys.base_prefix,
                                      str(ROOT)]) if p.startswith("/tmp/")]
    return [str(base), pwd.getpwuid(os.getuid()).pw_dir, str(upper), ":".join(keep)]


class GuardedHost(Host):
    """A Host that idle stop may arm: as a machine of its own, not this one's.

    sshd runs in a PID namespace of its own (so /proc shows only the
    instance's processes, and they all end with it), with a devpts of its own
    (only the instance's terminals), a /tmp and /run of its own, and overlays
    on /etc, /var, /usr/local, /home and the home directory, so that what
    arming writes there (systemd units, crontabs, sudoers, users) never
    reaches this machine. shutdown, systemctl and nvidia-smi are stand-ins, and
    /proc/diskstats is held still (STILL_DISKS).
    """

    KIND, NET = "g", 232

    def start_sshd(self, log):
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        # Jupyter writes where it would on an instance, in each user's home.
        self.ssh_config.write_text("".join(line for line in self.ssh_config.read_text().splitlines(True)
                                           if "JUPYTER_RUNTIME_DIR" not in line))
        # The other users' key: the tests' base directory is root's alone.
        config = self.base / "sshd_config"
        # tmux keeps its sockets where it would on an instance, in /tmp (the instance's own).
        config.write_text("".join(line for line in config.read_text().replace(
            "AuthorizedKeysFile ", "AuthorizedKeysFile /etc/ec2-test-keys ").splitlines(True)
            if "TMUX_TMPDIR" not in line))
        return self.spawn("unshare", "--pid", "--fork", "--kill-child=SIGTERM", "--mount-proc",
                          "sh", "-c", PRIVATE_MACHINE + STILL_DISKS + 'exec "$1" -D -e -f "$2"\n', "sh",
                          *private_machine(self.base, self.home), sshd, str(self.base / "sshd_config"),
                          stdout=log, stderr=log)

    def start(self):
        super().start()
        for name in ("shutdown", "systemctl"):
            self.put(f"/usr/local/sbin/{name}", RECORDING.replace("{name}", name), mode="755")
        self.put("/usr/local/bin/nvidia-smi", NVIDIA_SMI, mode="755")

    def ssh(self, command, user=None, input=None, check=True, timeout=60):
        """Run the shell COMMAND on the instance (as USER, else the tests' own user)."""
        where = f"{user}@instance" if user else "instance"
        done = subprocess.run(["ssh", "-F", str(self.ssh_config), where, command], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done

    def put(self, path, text, mode="644"):
        """Write TEXT to PATH on the instance."""
        q = shlex.quote(path)
        self.ssh(f"mkdir -p $(dirname {q}) && cat > {q} && chmod {mode} {q}", input=text)

    def read(self, path):
        """PATH's text on the instance, or None if there is no such file."""
        done = self.ssh(f"cat {shlex.quote(path)}", check=False)
        return done.stdout if done.returncode == 0 else None

    def calls(self, name):
        """The argv of each call of the stand-in NAME, in order."""
        text = self.read(f"/var/tmp/{name}-calls") or ""
        return [call.split("\x1f")[:-1] for call in text.split("\x1e")[:-1]]

    def add_user(self, name, sudo):
        """A user who logs in with the tests' key; with passwordless sudo if SUDO."""
        self.ssh(f"id {name} >/dev/null 2>&1 || useradd -m -p '*' -s /bin/sh {name}")
        self.put("/etc/ec2-test-keys", (self.base / "authorized_keys").read_text())
        if sudo:
            self.put(f"/etc/sudoers.d/{name}", f"{name} ALL=(ALL) NOPASSWD:ALL\n", mode="440")


@pytest.fixture(scope="session")
def guarded_host(tmp_path_factory):
    yield from started_host(GuardedHost, tmp_path_factory.mktemp("guarded"),
                            ("unshare", "useradd", "crontab"), "util-linux passwd cron")
