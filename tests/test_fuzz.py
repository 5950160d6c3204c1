"""No traceback, whatever a user types or ssh and aws answer: the real script, driven by hypothesis.

Generated command lines, environments and config files go to the real ec2 in
a process, with a terminal as stdin, and with stand-ins for ssh and aws first
on PATH that answer what hypothesis chooses: garbage, JSON of every shape,
the shapes ec2's scripts expect with wrong contents, any exit status, death
by a signal. ec2 must end with a documented exit status (or ssh's own, once
it became ssh) and never print a traceback. --proxy is left out: it connects
by itself, to whatever host it is given; tests/test_proxy_process.py drives
it on loopback.
"""

import json
import os
import pty
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import EC2

STAND_IN = """#!/bin/sh
# Answers as the test chose, for {name}.
[ -n "$FUZZ_{NAME}_OUT" ] && printf '%s\\n' "$FUZZ_{NAME}_OUT"
[ -n "$FUZZ_{NAME}_SIGNAL" ] && kill -s "$FUZZ_{NAME}_SIGNAL" $$
exit "${{FUZZ_{NAME}_STATUS:-0}}"
"""

INSTANCE = {"InstanceId": "i-0123456789abcdef0", "State": {"Name": "running"}, "InstanceType": "t3.micro",
            "PublicDnsName": "ec2-1-2-3-4.example", "Tags": [{"Key": "Name", "Value": "gpu-box"}],
            "LaunchTime": "2026-11-27T09:00:00+00:00"}
JSON_SHAPES = [
    {}, [], None, 3, "text", {"Reservations": None}, {"Reservations": [1, "x", None]},
    {"Reservations": [{"Instances": [1, {"InstanceId": 5}, {"InstanceId": "i-01234567"}]}]},
    {"Reservations": [{"Instances": [INSTANCE]}]},
    {"Reservations": [{"Instances": [{**INSTANCE, "State": "running", "Tags": "x", "PublicDnsName": 7}]}]},
    {"Reservations": [{"Instances": [{**INSTANCE, "State": {"Name": "stopped"}}]}]},
    {"Reservations": [{"Instances": [{**INSTANCE, "LaunchTime": "yesterday"}]}]},
    {"StartingInstances": [{"CurrentState": "x"}, 1]},
    {"Reservations": [{"Instances": [{**INSTANCE, "PublicDnsName": "", "VpcId": 3}]}]},
    {"InstanceInformationList": [{"PingStatus": "Online"}, 1]}, {"InstanceInformationList": "x"},
    {"InstanceConnectEndpoints": [{"State": "create-complete"}, {"InstanceConnectEndpointId": 1}]},
    {"Success": "yes"},
]
ANSWERS = st.one_of(
    st.sampled_from(["", "<html>Please log in</html>", "WARNING: old CLI\n{}", "\x00\xff",
                     "ec2-lab ready window /r/jpserver-1.json\n{\"port\": 88",
                     "ec2-lab ready other /r/jpserver-1.json\n[]",
                     "ec2-lab ready window /r/f.json\n{\"port\": \"x\", \"token\": 1}",
                     "ec2-lab ready window /r/f.json\n{\"port\": 8888, \"sock\": \"/s\"}",
                     "ec2-lab ready window /r/f.json\n{\"port\": 8888, \"hostname\": [1], \"base_url\": 3}",
                     "ec2-lab exited", "ec2-lab exited 127 -lic", "ec2-lab timeout\n\x1b[31mred",
                     "ec2-lab starting\nec2-lab wait x\nec2-lab ready", "ec2-lab tmux-error",
                     "aws-cli/2.15.0 Python/3", "aws-cli/x",
                     "\nec2-jupyter-file running /f\n{\"port\": \"8888\", \"token\": [1]}",
                     "\nec2-jupyter-file running /f\n{\"port\": -1}",
                     "\nec2-jupyter-file running\n", "work: 1 windows\nbad line"]),
    st.sampled_from(JSON_SHAPES).map(json.dumps),
    st.text(max_size=40),
)
WORDS = st.one_of(
    st.sampled_from(["--dry-run", "--list", "--urls", "--open", "--status", "--stop", "--instances",
                     "--lab", "--no-browser", "-j", "--jupyter-port", "-L", "-H", "-i", "--config",
                     "--completion", "--", "--help", "--version", "work", "données", "x;y", "-",
                     "8888", "0", "99999", "8888:9999", "[::1]:1:h:2", "a:b:c:d:e", "gpu", "box",
                     "i-0123456789abcdef0", "u@i-01234567", "bash", "fish", "/nonexistent", "",
                     "--via", "ssm", "eice", "direct", "--push-key", "--ssh-config"]),
    st.text(max_size=12),
)
CONFIG_LINES = st.one_of(
    st.sampled_from(["[default]", "[gpu]", "host = box", "instance = gpu-box",
                     "instance = i-0123456789abcdef0",
                     "user = ubuntu", "identity = /nonexistent", "jupyter_port = 88888", "forward = 6006 x",
                     "ssh_options = -o 'unclosed", "region = -x", "address = moon", "lab_timeout = 0",
                     "conda_env = $(id)", "open_browser = maybe", "lab_command =", "bogus = 1",
                     "host = a\n  continued", "[gpu]\n[gpu]", "%(interp)s = 1", "connect = ssm",
                     "connect = eice", "connect = x", "push_key = yes", "eice_id = eice-1", "[odd name]"]),
    st.text(max_size=20),
)


@settings(max_examples=int(os.environ.get("EC2_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=st.lists(WORDS, max_size=6), config=st.one_of(st.none(), st.lists(CONFIG_LINES, max_size=6)),
       ssh_out=ANSWERS, ssh_status=st.sampled_from([0, 1, 2, 127, 255]),
       ssh_signal=st.sampled_from(["", "", "", "TERM", "KILL"]),
       aws_out=ANSWERS, aws_status=st.sampled_from([0, 0, 1, 255]),
       aws_signal=st.sampled_from(["", "", "KILL"]),
       ec2_host=st.sampled_from([None, "box", "-bad", "i-0123456789abcdef0", "a b"]))
def test_no_input_ends_in_a_traceback(tmp_path_factory, argv, config, ssh_out, ssh_status, ssh_signal,
                                      aws_out, aws_status, aws_signal, ec2_host):
    tmp = tmp_path_factory.mktemp("fuzz")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name in ("ssh", "aws"):
        (bin_dir / name).write_text(STAND_IN.format(name=name, NAME=name.upper()))
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "xdg"),
           "XDG_CACHE_HOME": str(tmp / "cache"), "LANG": "C.UTF-8",
           "FUZZ_SSH_OUT": ssh_out.replace("\x00", ""), "FUZZ_SSH_STATUS": str(ssh_status),
           "FUZZ_SSH_SIGNAL": ssh_signal, "FUZZ_AWS_OUT": aws_out.replace("\x00", ""),
           "FUZZ_AWS_STATUS": str(aws_status), "FUZZ_AWS_SIGNAL": aws_signal}
    if ec2_host is not None:
        env["EC2_HOST"] = ec2_host
    if config is not None:
        (tmp / "xdg" / "ec2").mkdir(parents=True)
        (tmp / "xdg" / "ec2" / "config").write_text("\n".join(config).replace("\x00", ""))
    argv = [word.replace("\x00", "") for word in argv]
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([sys.executable, str(EC2), *argv], env=env, stdin=terminal,
                              capture_output=True, timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    stderr = done.stderr.decode(errors="replace")
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, (argv, stderr)
    # ec2's own statuses, or what ssh returned once ec2 had become ssh.
    became_ssh = ssh_signal == "" and done.returncode == ssh_status
    signal = {"TERM": 15, "KILL": 9}.get(ssh_signal)
    killed = signal and done.returncode in (-signal, 128 + signal)  # as ssh, or as ec2 says it
    assert done.returncode in (0, 1, 2, 126, 127) or became_ssh or killed, (argv, done.returncode, stderr)
    # What reaches stderr is ec2's own (its message, argparse's usage, the Jupyter
    # notice), never the stand-ins', which print on stdout.
    assert not stderr or stderr.startswith(("ec2:", "usage:", "Jupyter:")), (argv, stderr)
