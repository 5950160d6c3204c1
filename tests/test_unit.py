"""main(argv) with os.execvp replaced by a recorder: what ec2 decides to run."""

import io
import json
import os
import socket
import sys

import pytest

from conftest import EC2, ROOT, FakeAws, ec2, free_port, held_port, write_config


def test_plain_ssh(ec2_run):
    assert ec2_run("-H", "ubuntu@box")[:2] == ("exec", ["ssh", "ubuntu@box"])


def test_session_creates_or_attaches_with_a_terminal(ec2_run):
    status, argv, _, _ = ec2_run("work", "-H", "box")
    assert argv == ["ssh", "-t", "box", "tmux", "-2", "new-session", "-A", "-s", "work"]


def test_jupyter_forward_with_exit_on_failure(ec2_run):
    port = free_port()
    status, argv, _, err = ec2_run("-j", "--jupyter-port", str(port), "-H", "box")
    assert argv == ["ssh", "-L", f"{port}:localhost:{port}", "-o", "ExitOnForwardFailure=yes",
                    "-o", "ControlPath=none", "box"]
    assert f"Jupyter: http://localhost:{port} -> instance port {port}" in err


def test_default_jupyter_port_is_8888(ec2_run, monkeypatch):
    monkeypatch.setattr(ec2, "port_is_free", lambda port, bind=None: True)
    _, argv, _, _ = ec2_run("new_sesh", "-j", "-H", "box")
    assert argv[:3] == ["ssh", "-L", "8888:localhost:8888"]
    assert argv[-6:] == ["tmux", "-2", "new-session", "-A", "-s", "new_sesh"]


@pytest.mark.parametrize("family, address", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_taken_jupyter_port_moves_to_the_next_free_one(ec2_run, family, address):
    with held_port(0, address) as port:
        status, argv, _, err = ec2_run("-j", "--jupyter-port", str(port), "-H", "box")
    local = int(argv[2].split(":")[0])
    assert local > port and argv[2] == f"{local}:localhost:{port}"
    assert f"Jupyter: http://localhost:{local} -> instance port {port} ({port} is in use here)" in err


def test_taken_explicit_forward_is_refused_naming_the_port(ec2_run):
    with held_port() as port:
        status, argv, _, err = ec2_run("-L", str(port), "-H", "box")
    assert (status, argv) == (1, None)
    assert (f"ec2: local port {port} is already in use; free it, or forward another local port"
            f" to it, e.g. -L {port + 1}:{port}\n") in err


def test_jupyter_skips_a_port_an_explicit_forward_claims(ec2_run):
    port = free_port()
    _, argv, _, _ = ec2_run("-j", "--jupyter-port", str(port), "-L", str(port), "-H", "box")
    assert argv[1:5] == ["-L", f"{port}:localhost:{port}", "-L", f"{port + 1}:localhost:{port}"]


def test_same_local_port_twice_is_refused(ec2_run):
    port = free_port()
    status, _, _, err = ec2_run("-L", str(port), "-L", f"{port}:9", "-H", "box")
    assert status == 1 and f"local port {port} is forwarded twice" in err


@pytest.mark.parametrize("spec, expected", [
    ("6006", ("6006:localhost:6006", None, 6006, "localhost", 6006)),
    ("9000:9001", ("9000:localhost:9001", None, 9000, "localhost", 9001)),
    ("9000:db:5432", ("9000:db:5432", None, 9000, "db", 5432)),
    ("127.0.0.1:9000:db:5432", ("127.0.0.1:9000:db:5432", "127.0.0.1", 9000, "db", 5432)),
    ("[::1]:9000:[fe80::1]:5432", ("[::1]:9000:[fe80::1]:5432", "::1", 9000, "fe80::1", 5432)),
    ("*:9000:db:5432", ("*:9000:db:5432", "*", 9000, "db", 5432)),
    (":9000:db:5432", (":9000:db:5432", "", 9000, "db", 5432)),  # ssh: all interfaces
    ("1:65535", ("1:localhost:65535", None, 1, "localhost", 65535)),
])
def test_forward_forms(spec, expected):
    assert tuple(ec2.forward_spec(spec)) == expected


@pytest.mark.parametrize("text", ["0", "65536", "-1", "1.5", ""])
def test_ports_are_1_to_65535(text):
    with pytest.raises(ValueError, match="is not a port"):
        ec2.port_number(text)


def test_a_session_name_never_starts_with_a_dash():
    # argparse takes such a word for an option; the check holds for any caller.
    with pytest.raises(ValueError, match="not starting with '-'"):
        ec2.session_name("-a")


@pytest.mark.parametrize("text, expected", [("1", 1), ("3600", 3600)])
def test_lab_timeout_bounds_are_taken(text, expected):
    assert ec2.seconds(text) == expected


@pytest.mark.parametrize("text", ["0", "3601", "", "x"])
def test_lab_timeout_out_of_bounds(text):
    with pytest.raises(ValueError):
        ec2.seconds(text)


@pytest.mark.parametrize("spec", ["0", "70000", "x", "1:2:3:4:5", "/tmp/sock:host:1", "9000::80", ""])
def test_bad_forward_is_a_usage_error(ec2_run, spec):
    status, argv, _, err = ec2_run("-L", spec, "-H", "box")
    assert (status, argv) == (2, None)
    assert "invalid forward" in err and "PORT, LOCAL:REMOTE" in err


@pytest.mark.parametrize("name", ["a;b", "a b", "$0", "#(id)", "a.b", "a:b", "x" * 65, "`id`",
                                  "é\u0301", "a\nb"])
def test_unsafe_session_names_are_refused(ec2_run, name):
    status, argv, _, err = ec2_run(name, "-H", "box")
    assert (status, argv) == (2, None)
    assert "use 1-64 letters, digits, '_' or '-', not starting with '-'" in err


@pytest.mark.parametrize("name", ["work", "new_sesh2", "a-b", "données", "実験", "x" * 64, "a", "7"])
def test_safe_session_names_are_taken(ec2_run, name):
    _, argv, _, _ = ec2_run(name, "-H", "box")
    assert argv[-1] in (name, f"'{name}'")


@pytest.mark.parametrize("host", ["-oProxyCommand=touch x", " box", ""])
def test_destination_that_ssh_would_misread_is_refused(ec2_run, host):
    status, argv, _, err = ec2_run(f"--host={host}")
    assert (status, argv) == (2, None) and "argument -H/--host: invalid value" in err


def test_session_without_a_terminal_is_refused(ec2_run):
    status, argv, _, err = ec2_run("work", "-H", "box", tty=False)
    assert (status, argv) == (1, None)
    assert "needs a terminal" in err and "stdin is not one" in err


def test_no_host_names_the_three_ways(ec2_run):
    status, argv, _, err = ec2_run()
    assert (status, argv) == (2, None)
    assert "-H HOST" in err and "EC2_HOST" in err and "[default]" in err


def test_ssh_args_after_double_dash_come_first(ec2_run):
    _, argv, _, _ = ec2_run("work", "-H", "box", "--", "-A", "-o", "ServerAliveInterval=5")
    assert argv[:4] == ["ssh", "-A", "-o", "ServerAliveInterval=5"]


def test_dry_run_prints_one_quoted_line_and_execs_nothing(ec2_run):
    status, argv, out, _ = ec2_run("--dry-run", "work", "-H", "box", tty=False)
    assert (status, argv) == (0, None)
    assert out == "ssh -t box tmux -2 new-session -A -s work\n"


def test_version(ec2_run):
    status, _, out, _ = ec2_run("--version")
    assert status == 0 and out == f"ec2 {ec2.__version__}\n"


def test_help_teaches_with_examples(ec2_run):
    status, _, out, _ = ec2_run("--help")
    assert status == 0
    for text in ("ec2 work -j", "ec2 -j", "--dry-run", "[default]", "jupyter_port", "else 8888)",
                 "session and forwards:", "EC2 instances:", "(default: lab)"):
        assert text in out


@pytest.mark.parametrize("args, message", [
    (["--list", "--urls"], "argument --urls: not allowed with argument --list"),
    (["--list", "work"], "--list takes no SESSION, -j or -L"),
    (["--urls", "-L", "6006"], "--urls takes no SESSION, -j or -L"),
    (["--status", "-j"], "--status takes no SESSION, -j or -L"),
    (["--start", "--dry-run"], "--start does not go with --dry-run, --status or --stop"),
    (["--start", "--status"], "--start does not go with --dry-run, --status or --stop"),
    (["--start", "--stop"], "--start does not go with --dry-run, --status or --stop"),
    (["--start", "--instances"], "--start does not go with --instances, --completion, --ssh-config"),
    (["--start", "--completion", "bash"], "--start does not go with --instances, --completion, --ssh-config"),
    (["--start", "--proxy", "gpu"], "--start does not go with --instances, --completion, --ssh-config or"),
    (["--proxy", "gpu"], "--proxy NAME takes no -H: NAME is the host"),
    (["--open", "--status"], "--open goes with --urls only"),
    (["--no-browser"], "--no-browser goes with --lab only"),
    (["--lab", "--list"], "--lab does not go with --list"),
    (["--via", "ssm", "--ssh-config"], "--via and --push-key go with a connection, or --proxy"),
    (["--push-key", "--instances"], "--via and --push-key go with a connection, or --proxy"),
    (["--status", "-i", "key"], "--identity does not go with --status"),
    (["--dry-run", "--ssh-config"], "argument --ssh-config: not allowed with argument --dry-run"),
    (["--proxy", "gpu", "-j"], "--proxy NAME takes no -H: NAME is the host"),
    (["--completion", "bash", "-i", "k", "--config", "c"], "--host does not go with --completion"),
    (["--ssh-config"], "--host does not go with --ssh-config"),
    (["--jupyter-port", "9000"], "--jupyter-port goes with -j or --lab"),
    (["--urls", "--jupyter-port", "9000"], "--jupyter-port goes with -j or --lab"),
    (["--open", "--ssh-config"], "--open goes with --urls only"),
    (["--stop", "--", "-v"], "what follows -- is for ssh, which --stop does not run"),
])
def test_what_does_not_go_together_is_a_usage_error(ec2_run, args, message):
    status, argv, _, err = ec2_run(*args, "-H", "box")
    assert (status, argv) == (2, None)
    assert err.startswith("usage: ec2") and f"ec2: error: {message}" in err


# A value for each option, and for what follows -- ("ssh_args"), by argparse dest.
SAMPLES = {"session": ["work"], "jupyter": ["-j"], "jupyter_port": ["--jupyter-port", "9000"],
           "forward": ["-L", "6006"], "host": ["-H", "box"], "identity": ["-i", "key"],
           "config": ["--config", "cfg"], "lab": ["--lab"], "no_browser": ["--no-browser"],
           "open": ["--open"], "start": ["--start"], "via": ["--via", "ssm"], "push_key": ["--push-key"],
           "dry_run": ["--dry-run"], "list": ["--list"], "urls": ["--urls"], "status": ["--status"],
           "stop": ["--stop"], "instances": ["--instances"], "completion": ["--completion", "bash"],
           "ssh_config": ["--ssh-config"], "proxy": ["--proxy", "gpu"], "ssh_args": ["--", "-v"],
           "idle_stop": ["--idle-stop", "1h"], "keep": ["--keep", "3h"], "type": ["--type", "g5.2xlarge"]}


def test_each_mode_takes_or_refuses_every_option_never_ignores_one(capsys):
    parser = ec2.build_parser()
    dests = {action.dest for action in parser._actions if action.dest not in ("help", "version")}
    assert dests | {"ssh_args"} == set(SAMPLES)  # the table below knows every option of the parser
    for mode, (_, takes) in ec2.MODES.items():
        for dest in sorted(set(SAMPLES) - set(ec2.MODES)):
            needs = ec2.REQUIRES.get(dest, ())
            extra = SAMPLES[needs[0]] if needs and mode not in needs else []
            argv = (SAMPLES[mode] if mode else []) + extra + SAMPLES[dest]
            if "--" in argv and argv[-2:] != ["--", "-v"]:
                argv.remove("--")
                argv.remove("-v")
                argv += ["--", "-v"]
            if dest in takes or (mode is None and dest == "open"):  # --open alone is --urls --open
                assert ec2.parse_command_line(argv)[0] == (mode or ("urls" if dest == "open" else None)), argv
                continue
            with pytest.raises(SystemExit) as refused:
                ec2.parse_command_line(argv)
            assert refused.value.code == 2, argv
            said = capsys.readouterr().err.splitlines()[-1]
            assert said.startswith("ec2: error: ") and "--" in said, argv


def test_ssh_not_found_exits_127(ec2_run, monkeypatch):
    def missing(file, args):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(ec2.os, "execvp", missing)
    assert ec2.main(["-H", "box"]) == 127


def test_an_ssh_that_cannot_be_run_exits_126_saying_why(ec2_run, monkeypatch, capsys):
    def refused(file, args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ec2.os, "execvp", refused)
    assert ec2.main(["-H", "box"]) == 126
    assert capsys.readouterr().err == "ec2: cannot run ssh: Permission denied\n"


# --- the config file ---------------------------------------------------------


def test_default_profile(ec2_run, clean_env):
    key = clean_env / "key.pem"
    key.write_text("")
    write_config(clean_env, f"[default]\nhost = ubuntu@box\nidentity = {key}\n")
    _, argv, _, _ = ec2_run()
    assert argv == ["ssh", "-i", str(key), "ubuntu@box"]


def test_profile_by_name_with_every_key(ec2_run, clean_env, monkeypatch):
    monkeypatch.setenv("HOME", str(clean_env))
    (clean_env / "gpu.pem").write_text("")
    write_config(clean_env, """\
[gpu]
host = gpu-box
user = ubuntu
identity = ~/gpu.pem
jupyter_port = 8889
forward = 6006 9000:9001
ssh_options = -o ServerAliveInterval=60 -o "ProxyCommand=nc %h %p"
""")
    monkeypatch.setattr(ec2, "port_is_free", lambda port, bind=None: True)
    _, argv, _, _ = ec2_run("-H", "gpu", "-j", "work")
    assert argv == [
        "ssh", "-o", "ServerAliveInterval=60", "-o", "ProxyCommand=nc %h %p",
        "-i", str(clean_env / "gpu.pem"),
        "-L", "6006:localhost:6006", "-L", "9000:localhost:9001", "-L", "8889:localhost:8889",
        "-o", "ExitOnForwardFailure=yes", "-o", "ControlPath=none", "-t", "ubuntu@gpu-box",
        "tmux", "-2", "new-session", "-A", "-s", "work",
    ]


def test_command_line_beats_environment_beats_profile(ec2_run, clean_env, monkeypatch):
    write_config(clean_env, "[default]\nhost = d-box\n[p]\nhost = p-box\njupyter_port = 7000\n")
    monkeypatch.setattr(ec2, "port_is_free", lambda port, bind=None: True)
    monkeypatch.setenv("EC2_HOST", "p")
    assert ec2_run()[1] == ["ssh", "p-box"]
    assert ec2_run("-H", "other")[1] == ["ssh", "other"]
    assert ec2_run("-j")[1][2] == "7000:localhost:7000"
    assert ec2_run("-j", "--jupyter-port", "7100")[1][2] == "7100:localhost:7100"


def test_config_lines_may_end_in_a_comment(ec2_run, clean_env):
    write_config(clean_env, "[default]\nhost = box   # the GPU box\n# a whole-line comment\n")
    assert ec2_run()[1] == ["ssh", "box"]


def test_ec2_config_variable_names_the_file(ec2_run, clean_env, monkeypatch):
    path = clean_env / "elsewhere.ini"
    path.write_text("[default]\nhost = there\n")
    monkeypatch.setenv("EC2_CONFIG", str(path))
    assert ec2_run()[1] == ["ssh", "there"]


@pytest.mark.parametrize("text, message", [
    ("[p]\nhots = x\n", "[p] hots: unknown key; the keys are host, instance, user"),
    ("[p]\nhost = x\njupyter_port = 88x\n", "[p] jupyter_port: '88x' is not a port (1-65535)"),
    ("[p]\nhost = x\nforward = 6006 99999\n", "[p] forward: invalid forward '99999'"),
    ("[p]\nhost = x\nssh_options = -o 'unclosed\n", "[p] ssh_options: No closing quotation"),
    ("[p]\nhost = -oProxyCommand=x\n", "[p] host: invalid value '-oProxyCommand=x'"),
    ("[p]\nhost = x\nuser = -x\n", "[p] user: invalid value '-x': it must not be empty, start with"),
    ("host = x\n", "line 1: 'host = x' comes before any [profile] line"),
    ("[p]\nhost = a\nhost = b\n", "line 3: [p] host is given twice"),
    ("[p]\nhost = a\n[p]\n", "line 3: [p] is given twice"),
    ("[p]\nhost = a\nnonsense\n", "line 3 is neither '[profile]' nor 'key = value'"),
    ("[p]\nhost = a\ninstance = b\n", "[p] gives both 'host =' and 'instance ='; keep one"),
    ("[p]\ninstance = b\naddress = moon\n", "[p] address: 'moon' is not one of public-dns, public-ip,"),
    ("[p]\ninstance = b\nregion = -x\n", "[p] region: invalid value '-x'"),
    ("[p]\ninstance = b\naws_profile =\n", "[p] aws_profile: invalid value ''"),
])
def test_config_errors_name_the_file_and_the_key(ec2_run, clean_env, text, message):
    path = write_config(clean_env, text)
    status, argv, _, err = ec2_run("-H", "p")
    assert (status, argv) == (1, None)
    assert err.startswith(f"ec2: {path}") and message in err and err.count("\n") == 1


def test_missing_explicit_config_is_an_error(ec2_run, clean_env):
    status, _, _, err = ec2_run("--config", str(clean_env / "nope"), "-H", "box")
    assert status == 1 and f"config file {clean_env / 'nope'} not found" in err


def test_user_given_twice_is_an_error(ec2_run, clean_env):
    write_config(clean_env, "[p]\nhost = a@box\nuser = b\n")
    status, _, _, err = ec2_run("-H", "p")
    assert (status, err) == (1, f"ec2: {clean_env / 'xdg' / 'ec2' / 'config'}: [p] gives a user twice,"
                                " in 'host =' and 'user ='\n")


def test_missing_identity_file_is_an_error(ec2_run, clean_env):
    status, argv, _, err = ec2_run("-H", "box", "-i", str(clean_env / "nokey.pem"))
    assert (status, argv) == (1, None) and "nokey.pem not found" in err


def test_profile_without_host_is_an_error(ec2_run, clean_env):
    write_config(clean_env, "[default]\nuser = ubuntu\n")
    status, _, _, err = ec2_run()
    assert status == 1 and "[default] has no 'host ='" in err


def test_ec2_host_variable_that_ssh_would_misread_is_refused(ec2_run, monkeypatch):
    monkeypatch.setenv("EC2_HOST", "-oProxyCommand=touch x")
    status, argv, _, err = ec2_run()
    assert (status, argv) == (1, None)
    assert err.startswith("ec2: $EC2_HOST: invalid value '-oProxyCommand=touch x'")


def test_ec2_host_variable_may_name_an_instance_with_a_user(ec2_run, monkeypatch):
    found = []
    monkeypatch.setattr(ec2, "find_instance", lambda profile: found.append(profile) or {
        "InstanceId": "i-0123456789abcdef0", "State": {"Name": "running"},
        "PublicDnsName": "ec2-198-51-100-7.compute-1.amazonaws.com"})
    monkeypatch.setenv("EC2_HOST", "ubuntu@i-0123456789abcdef0")
    _, argv, _, _ = ec2_run()
    assert (found[0].user, found[0].instance) == ("ubuntu", "i-0123456789abcdef0")
    assert argv == ["ssh", "-o", "HostKeyAlias=i-0123456789abcdef0",
                    "ubuntu@ec2-198-51-100-7.compute-1.amazonaws.com"]


def config_examples():
    """The config files the manual and the README show."""
    manual = ec2.__doc__.split("config file (INI")[1].split("\n\n")[0]
    yield "manual", "\n".join(line[2:] for line in manual.splitlines()[1:])
    readme = (EC2.parent / "README.md").read_text()
    for n, block in enumerate(readme.split("```ini\n")[1:]):
        yield f"README block {n + 1}", block.split("```")[0]


@pytest.mark.parametrize("where, text", list(config_examples()), ids=lambda x: x if " " in x else "")
def test_the_config_examples_shown_are_valid(tmp_path, where, text):
    path = tmp_path / "config"
    path.write_text(text)
    assert ec2.read_config(str(path), True)


@pytest.mark.parametrize("launched, shown", [
    ("2026-11-27T09:00:00+00:00", "3h 0m"), ("2026-11-27T11:59:30Z", "0m"),
    ("2026-11-24T10:30:00.000Z", "3d 1h"), ("2026-11-27T11:15:00+00:00", "45m"), ("junk", None), (None, None),
    ("2026-11-26T12:00:00Z", "1d 0h"), ("2026-11-26T12:00:01Z", "23h 59m"),
])
def test_uptime_of_a_running_instance(launched, shown):
    from datetime import datetime, timezone

    assert ec2.uptime(launched, datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)) == shown



def held(family, address):
    """A socket listening on ADDRESS at a free port; returns (socket, port)."""
    sock = socket.socket(family)
    sock.bind((address, 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def has_ipv6():
    try:
        socket.socket(socket.AF_INET6).close()
        return socket.has_ipv6
    except OSError:
        return False


@pytest.mark.parametrize("holder, bind, free", [
    ((socket.AF_INET, "127.0.0.1"), None, False),
    ((socket.AF_INET6, "::1"), None, False),  # ssh binds both for localhost
    ((socket.AF_INET6, "::1"), "localhost", False),
    ((socket.AF_INET, "127.0.0.1"), "127.0.0.1", False),
    ((socket.AF_INET6, "::1"), "127.0.0.1", True),
    ((socket.AF_INET, "127.0.0.1"), "::1", True),
    ((socket.AF_INET6, "::1"), "::1", False),
    ((socket.AF_INET, "127.0.0.1"), "*", False),  # all addresses, 127.0.0.1 among them
    ((socket.AF_INET, "127.0.0.1"), "", False),
])
def test_port_checks_follow_the_bind_address(holder, bind, free):
    if socket.AF_INET6 in (holder[0],) or (bind and ":" in bind):
        if not has_ipv6():
            pytest.skip("no IPv6 on this machine")
    sock, port = held(*holder)
    with sock:
        assert ec2.port_is_free(port, bind) is free


def test_a_bind_address_this_machine_does_not_have_is_no_obstacle():
    # ssh cannot bind it either, and says so itself.
    assert ec2.port_is_free(free_port(), "192.0.2.1") is True



def test_a_profile_keeps_what_its_keys_say(tmp_path):
    path = tmp_path / "config"
    path.write_text("[p]\ninstance = gpu\naddress = private-ip\nregion = eu-west-1\naws_profile = work\n"
                    "user = ubuntu\nidentity = ~/k.pem\njupyter_port = 9999\nforward = 6006\n"
                    "ssh_options = -o A=1\nlab_command = jupyter notebook\nconda_env = torch\n"
                    "lab_timeout = 5\nopen_browser = no\n")
    p = ec2.read_config(str(path), True)["p"]
    assert (p.instance, p.address, p.region, p.aws_profile, p.user, p.identity, p.jupyter_port) == (
        "gpu", "private-ip", "eu-west-1", "work", "ubuntu", "~/k.pem", 9999)
    assert (p.forwards, p.ssh_options) == ([ec2.forward_spec("6006")], ["-o", "A=1"])
    assert (p.lab_command, p.conda_env, p.lab_timeout, p.open_browser) == (
        "jupyter notebook", "torch", 5, False)
    assert (p.name, p.source, p.host) == ("p", str(path), None)


def test_a_profile_without_keys_has_the_defaults():
    p = ec2.Profile("p", "/c")
    assert (p.address, p.lab_command, p.conda_env, p.lab_timeout, p.open_browser, p.forwards) == (
        "public-dns", "jupyter lab --no-browser", None, 90, True, [])


# --- instances, as the AWS CLI answers -----------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("i-01234567", True), ("i-0123456789abcdef0", True), ("i-0123456", False), ("i-012345678", False),
    ("i-0123456g", False), ("x-01234567", False), ("i-0123456789ABCDEF0", False), ("i-x1234567", False),
    ("ii-1234567", False), ("i-0123456789abcdef", False), ("", False),
])
def test_instance_ids_have_8_or_17_hex_digits(text, expected):
    assert ec2.is_instance_id(text) is expected


def test_instances_are_read_from_any_answer_without_trusting_it():
    good = {"InstanceId": "i-01234567"}
    answer = {"Reservations": [1, None, {"Instances": "x"}, {"Instances": [1, {"InstanceId": 5}, good]},
                               {"Instances": [{**good, "InstanceId": "i-89abcdef"}]}]}
    assert [i["InstanceId"] for i in ec2.instances_in(answer)] == ["i-01234567", "i-89abcdef"]
    assert ec2.instances_in({"Reservations": {"Instances": [good]}}) == []
    assert ec2.instances_in({}) == []


@pytest.mark.parametrize("mapping, expected", [
    ({"k": "v"}, "v"), ({"k": ""}, None), ({"k": 5}, None), ({}, None), ("k", None), (None, None),
])
def test_text_field(mapping, expected):
    assert ec2.text_field(mapping, "k") == expected


@pytest.mark.parametrize("tags, expected", [
    ([{"Key": "Owner", "Value": "me"}, {"Key": "Name", "Value": "gpu"}], "gpu"),
    ([{"Key": "Name", "Value": ""}], None), ("Name", None), ([1, {"Key": "Name"}], None), (None, None),
])
def test_instance_name_is_its_name_tag(tags, expected):
    assert ec2.instance_name({"InstanceId": "i-01234567", "Tags": tags}) == expected


@pytest.mark.parametrize("state, expected", [
    ({"Name": "running", "Code": 16}, "running"), ("running", "unknown"), ({}, "unknown"), (None, "unknown"),
])
def test_instance_state(state, expected):
    assert ec2.instance_state({"InstanceId": "i-01234567", "State": state}) == expected


@pytest.mark.parametrize("kind, instance, expected", [
    ("public-dns", {"PublicDnsName": "ec2-1.example", "PublicIpAddress": "1.2.3.4"}, "ec2-1.example"),
    ("public-dns", {"PublicDnsName": "", "PublicIpAddress": "1.2.3.4"}, "1.2.3.4"),  # no DNS in the VPC
    ("public-dns", {"PrivateIpAddress": "10.0.0.7"}, None),
    ("public-ip", {"PublicDnsName": "ec2-1.example", "PublicIpAddress": "1.2.3.4"}, "1.2.3.4"),
    ("public-ip", {"PublicDnsName": "ec2-1.example"}, None),
    ("private-ip", {"PublicIpAddress": "1.2.3.4", "PrivateIpAddress": "10.0.0.7"}, "10.0.0.7"),
])
def test_instance_address_of_each_kind(kind, instance, expected):
    assert ec2.instance_address(instance, kind) == expected


def described_as(*instances):
    return {"Reservations": [{"Instances": list(instances)}]}


def instance(instance_id, state, name=None):
    tags = [{"Key": "Name", "Value": name}] if name else []
    return {"InstanceId": instance_id, "State": {"Name": state}, "Tags": tags}


def profile_for(instance_name, region=None):
    p = ec2.Profile("gpu", "/cfg")
    p.instance, p.region = instance_name, region
    return p


@pytest.mark.parametrize("named, field", [("i-01234567", "instance-id"), ("gpu,box", "tag:Name")])
def test_find_instance_asks_by_id_or_by_name(monkeypatch, named, field):
    fake = FakeAws(monkeypatch, described_as(instance("i-01234567", "running")))
    assert ec2.find_instance(profile_for(named))["InstanceId"] == "i-01234567"
    (args,) = fake.calls
    assert args[:3] == ("ec2", "describe-instances", "--filters")
    assert json.loads(args[3]) == [{"Name": field, "Values": [named]}]  # a comma stays in the Name


@pytest.mark.parametrize("region, where", [(None, ""), ("eu-west-3", " in region eu-west-3")])
def test_find_instance_not_found(monkeypatch, region, where):
    FakeAws(monkeypatch, described_as())
    with pytest.raises(ec2.Failure, match=f"^no EC2 instance 'gpu' found{where}$"):
        ec2.find_instance(profile_for("gpu", region))


def test_find_instance_refuses_a_name_two_live_instances_share(monkeypatch):
    FakeAws(monkeypatch, described_as(instance("i-01234567", "running", "gpu"),
                                      instance("i-89abcdef", "stopped", "gpu")))
    with pytest.raises(ec2.Failure) as e:
        ec2.find_instance(profile_for("gpu"))
    assert str(e.value) == ("several instances are named 'gpu': i-01234567 (running), i-89abcdef (stopped);"
                            " name one by its id (instance = i-...)")


@pytest.mark.parametrize("gone", ["terminated", "shutting-down"])
def test_find_instance_passes_over_an_ended_namesake(monkeypatch, gone):
    FakeAws(monkeypatch, described_as(instance("i-01234567", gone, "gpu"),
                                      instance("i-89abcdef", "stopped", "gpu")))
    assert ec2.find_instance(profile_for("gpu"))["InstanceId"] == "i-89abcdef"


def test_find_instance_gives_an_ended_one_when_it_is_all_there_is(monkeypatch):
    FakeAws(monkeypatch, described_as(instance("i-01234567", "terminated", "gpu"),
                                      instance("i-89abcdef", "terminated", "gpu")))
    assert ec2.find_instance(profile_for("gpu"))["InstanceId"] == "i-01234567"


@pytest.mark.parametrize("state, message", [
    ("stopped", "instance i-01234567 (gpu) is stopped; `ec2 -H gpu --start` starts it"),
    ("pending", "instance i-01234567 (gpu) is starting (pending); `ec2 -H gpu --start` waits for it"),
    ("stopping", "instance i-01234567 (gpu) is stopping; once it has stopped, `ec2 -H gpu --start` starts it"
     " again"),
    ("terminated", "instance i-01234567 (gpu) is terminated; it cannot be started again"),
])
def test_require_running_says_what_to_do(state, message):
    with pytest.raises(ec2.Failure) as e:
        ec2.require_running(instance("i-01234567", state, "gpu"), "ec2 -H gpu --start")
    assert str(e.value) == message


def test_require_running_lets_a_running_instance_through():
    assert ec2.require_running(instance("i-01234567", "running"), "x") is None


@pytest.mark.parametrize("state, stops, said", [
    ("running", True, "stopping instance i-01234567 (gpu): up ?, ?/h, ? since start\n"),  # nothing to price
    ("pending", True, "stopping instance i-01234567 (gpu)\n"),
    ("stopped", False, "instance i-01234567 (gpu) is already stopped\n"),
    ("stopping", False, "instance i-01234567 (gpu) is already stopping\n"),
])
def test_stop_instance(monkeypatch, capsys, state, stops, said):
    fake = FakeAws(monkeypatch, {})
    assert ec2.stop_instance(profile_for("gpu"), instance("i-01234567", state, "gpu")) == 0
    assert fake.calls == ([("ec2", "stop-instances", "--instance-ids", "i-01234567")] if stops else [])
    assert capsys.readouterr().out == said


def test_stop_instance_refuses_an_ended_one(monkeypatch):
    fake = FakeAws(monkeypatch)
    with pytest.raises(ec2.Failure, match="is terminated; there is nothing to stop"):
        ec2.stop_instance(profile_for("gpu"), instance("i-01234567", "terminated", "gpu"))
    assert fake.calls == []


def test_instance_status_is_one_line():
    found = {**instance("i-01234567", "running", "gpu"), "InstanceType": "g5.xlarge",
             "PublicDnsName": "ec2-1.example"}
    assert ec2.instance_status(found, "public-dns") == "i-01234567  gpu  running  g5.xlarge  ec2-1.example"
    stopped = instance("i-01234567", "stopped")
    assert ec2.instance_status(stopped, "public-dns") == "i-01234567  -  stopped  -  -"


def test_instance_table_puts_running_first_and_names_the_profile():
    from datetime import datetime, timezone

    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    rows = [instance("i-0000000a", "stopped", "alpha"),
            {**instance("i-0000000b", "running", "beta"), "LaunchTime": "2026-11-27T10:30:00Z",
             "PrivateIpAddress": "10.0.0.7"},
            instance("i-0000000c", "running")]
    lines = ec2.instance_table(rows, [profile_for("beta"), profile_for("i-0000000a")], now,
                               {"i-0000000b": "1h", "i-0000000c": None, "i-0000000a": "?"},
                               {"i-0000000b": ec2.Price(1.006, False)})
    assert [line.split() for line in lines] == [
        ["beta", "i-0000000b", "running", "-", "10.0.0.7", "1h", "30m", "$1.006/h", "$1.51", "idle-stop=1h",
         "gpu"],
        ["-", "i-0000000c", "running", "-", "-", "-", "?", "?", "-", "-"],  # no price: ?
        ["alpha", "i-0000000a", "stopped", "-", "-", "-", "-", "-", "idle-stop=?", "gpu"],
    ]
    assert len({line.index("running") for line in lines[:2]}) == 1  # aligned


@pytest.mark.parametrize("bind", [None, "localhost", "127.0.0.1", "*", ""])
def test_a_free_port_is_free_for_every_bind_address(bind):
    assert ec2.port_is_free(free_port(), bind) is True


def test_a_port_in_time_wait_is_free_as_it_is_to_ssh():
    # The side that closes first keeps the port in TIME_WAIT. An earlier ssh
    # forward (which, like ssh now, set SO_REUSEADDR) leaves it so; ssh binds
    # it anyway, so ec2 must not call it taken.
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server's side closes first: TIME_WAIT on PORT
    client.close()
    server.close()
    plain = socket.socket()
    with plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the control: without SO_REUSEADDR it is taken
    assert ec2.port_is_free(port, "127.0.0.1") is True


def test_jupyter_looks_no_further_than_port_65535(monkeypatch):
    monkeypatch.setattr(ec2, "port_is_free", lambda port, bind=None: port > 65535)
    with pytest.raises(ec2.Failure, match="no free local port for Jupyter in 65500-65535"):
        ec2.jupyter_local_port(65500)


def test_jupyter_looks_at_100_ports_past_its_own(monkeypatch):
    asked = []
    monkeypatch.setattr(ec2, "port_is_free", lambda port, bind=None: asked.append(port) and False)
    with pytest.raises(ec2.Failure, match="^no free local port for Jupyter in 8888-8987$"):
        ec2.jupyter_local_port(8888)
    assert asked == list(range(8888, 8988))


def test_the_same_forward_from_profile_and_command_line_is_kept_once(ec2_run, clean_env, monkeypatch):
    monkeypatch.setattr(ec2, "port_is_free", lambda port, bind=None: True)
    write_config(clean_env, "[p]\nhost = box\nforward = 6006 9000:9001\n")
    _, argv, _, _ = ec2_run("-H", "p", "-L", "6006", "-L", "7000")
    assert [argv[n + 1] for n, word in enumerate(argv) if word == "-L"] == [
        "6006:localhost:6006", "9000:localhost:9001", "7000:localhost:7000"]


def test_forward_records_are_kept_in_a_private_directory(tmp_path):
    directory = tmp_path / "forwards"
    path = ec2.record_forwards(str(directory), "box", [ec2.forward_spec("8888")])
    assert directory.stat().st_mode & 0o777 == 0o700 & ~current_umask()
    assert open(path).read() == "box\n8888 localhost 8888\n"


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_editors_and_github_read_ec2_as_python_though_it_starts_as_sh():
    lines = EC2.read_text().splitlines()
    assert lines[0] == "#!/bin/sh"  # sh finds the Python to run it
    assert lines[1] == "# -*- mode: python -*-"  # Emacs reads the second line after a #!
    assert "# vim: set filetype=python:" in lines[:5]  # vim reads a modeline in the first five
    attributes = (ROOT / ".gitattributes").read_text().splitlines()
    assert "ec2 linguist-language=Python" in attributes  # GitHub's linguist


# --- what it costs -------------------------------------------------------------

PRICE_LIST = json.loads((ROOT / "tests" / "price_g5.xlarge.json").read_text())
G5_TERMS = {"instanceType": "g5.xlarge", "regionCode": "us-east-1", "operatingSystem": "Linux",
            "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
            "licenseModel": "No License required"}


def priced(state="running", **fields):
    """A g5.xlarge in us-east-1a, launched 3h 25m before NOW (below)."""
    return {**instance("i-0abc", state, "gpu-box"), "InstanceType": "g5.xlarge",
            "Placement": {"AvailabilityZone": "us-east-1a"}, "PlatformDetails": "Linux/UNIX",
            "LaunchTime": "2026-12-04T08:35:00.000Z", **fields}


def at_now():
    from datetime import datetime, timezone

    return datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("dollars, said", [(0.0104, "$0.0104/h"), (1.006, "$1.006/h"), (32.77, "$32.77/h"),
                                           (0.526, "$0.526/h"), (1.2, "$1.20/h"), (0.00001, "$0.00001/h"),
                                           (98.32, "$98.32/h"), (0.1, "$0.10/h"), (12.3456, "$12.35/h")])
def test_an_hourly_price_has_four_significant_digits_and_at_least_two_decimals(dollars, said):
    assert ec2.per_hour(dollars) == said


@pytest.mark.parametrize("dollars, said", [(3.44, "$3.44"), (2430.4, "$2,430"), (999.994, "$999.99"),
                                           (1000, "$1,000"), (0.004, "$0.00")])
def test_a_cost_has_cents_below_1000_dollars_and_whole_dollars_above(dollars, said):
    assert ec2.amount(dollars) == said


def test_the_list_price_of_the_real_g5_xlarge_answer_is_its_hourly_on_demand_price():
    assert ec2.list_price(PRICE_LIST, G5_TERMS) == 1.006  # the Reserved term beside it is not taken


def product(**change):
    """The g5.xlarge product, as a dict, with CHANGE applied to it (a function of it)."""
    item = json.loads(PRICE_LIST["PriceList"][0])
    for step in change.values():
        step(item)
    return item


def dimension(item):
    return next(iter(next(iter(item["terms"]["OnDemand"].values()))["priceDimensions"].values()))


@pytest.mark.parametrize("answer", [
    {"PriceList": []},  # none
    {"PriceList": PRICE_LIST["PriceList"] * 2},  # several
    {"PriceList": "x"}, {}, {"PriceList": [None]}, {"PriceList": ["{not json"]}, {"PriceList": [[]]},
    {"PriceList": [product(terms=lambda i: i.pop("terms"))]},
    {"PriceList": [product(terms=lambda i: i["terms"].update(OnDemand=[]))]},
    {"PriceList": [product(two=lambda i: i["terms"]["OnDemand"].update(x=i["terms"]["Reserved"]))]},
    {"PriceList": [product(unit=lambda i: dimension(i).update(unit="Quantity"))]},
    {"PriceList": [product(usd=lambda i: dimension(i).update(pricePerUnit={"USD": "abc"}))]},
    {"PriceList": [product(usd=lambda i: dimension(i).update(pricePerUnit={"USD": "-1.0"}))]},
    {"PriceList": [product(usd=lambda i: dimension(i).update(pricePerUnit={"USD": "nan"}))]},
    {"PriceList": [product(usd=lambda i: dimension(i).update(pricePerUnit={"USD": 1.006}))]},
    {"PriceList": [product(usd=lambda i: dimension(i).update(pricePerUnit={"EUR": "1.0"}))]},
    {"PriceList": [product(other=lambda i: i["product"]["attributes"].update(instanceType="g5.2xlarge"))]},
    {"PriceList": [product(other=lambda i: i["product"]["attributes"].update(regionCode="us-west-2"))]},
    {"PriceList": [product(other=lambda i: i["product"]["attributes"].update(operatingSystem="Windows"))]},
])
def test_a_price_list_answer_of_several_products_none_or_another_shape_gives_no_price(answer):
    assert ec2.list_price(answer, G5_TERMS) is None


def test_the_spot_price_is_asked_for_the_type_zone_and_platform_from_now():
    key, words, region, read = ec2.price_question(priced(InstanceLifecycle="spot"), at_now())
    assert region is None  # the instance's own region, the profile's
    assert words == ["ec2", "describe-spot-price-history", "--instance-types", "g5.xlarge",
                     "--product-descriptions", "Linux/UNIX", "--availability-zone", "us-east-1a",
                     "--start-time", "2026-12-04T12:00:00Z"]


def test_the_spot_price_is_the_latest_entry_for_the_instance_s_zone():
    def entry(zone, when, price, kind="g5.xlarge", product="Linux/UNIX"):
        return {"AvailabilityZone": zone, "InstanceType": kind, "ProductDescription": product,
                "SpotPrice": price, "Timestamp": when}

    answer = {"SpotPriceHistory": [
        entry("us-east-1a", "2026-12-04T09:00:00.000Z", "0.4100"),
        entry("us-east-1a", "2026-12-04T11:00:00.000Z", "0.4021"),  # the latest of its zone
        entry("us-east-1b", "2026-12-04T11:30:00.000Z", "0.3000"),  # another zone, later
        entry("us-east-1a", "2026-12-04T11:45:00.000Z", "0.1000", kind="g5.2xlarge"),
        entry("us-east-1a", "2026-12-04T11:50:00.000Z", "0.2000", product="Windows"),
        entry("us-east-1a", "not a time", "0.5000"),
        entry("us-east-1a", "2026-12-04T11:59:00", "0.9000"),  # no UTC offset: not set against the others
        "not an entry",
        entry("us-east-1a", "2026-12-04T10:00:00.000Z", "0.3900", product="Linux/UNIX (Amazon VPC)"),
    ]}
    assert ec2.spot_price(answer, "g5.xlarge", "us-east-1a", "Linux/UNIX") == 0.4021
    assert ec2.spot_price({"SpotPriceHistory": []}, "g5.xlarge", "us-east-1a", "Linux/UNIX") is None
    assert ec2.spot_price({"SpotPriceHistory": "x"}, "g5.xlarge", "us-east-1a", "Linux/UNIX") is None
    in_a_vpc = {"SpotPriceHistory": [entry("us-east-1a", "2026-12-04T11:00:00Z", "0.39", "g5.xlarge",
                                           "Linux/UNIX (Amazon VPC)")]}
    assert ec2.spot_price(in_a_vpc, "g5.xlarge", "us-east-1a", "Linux/UNIX") == 0.39  # as moto writes it
    a_number = {"SpotPriceHistory": [{**entry("us-east-1a", "2026-12-04T11:00:00Z", "0"), "SpotPrice": 0.4}]}
    assert ec2.spot_price(a_number, "g5.xlarge", "us-east-1a", "Linux/UNIX") is None  # AWS writes a string


@pytest.mark.parametrize("fields, key", [
    ({}, "us-east-1 g5.xlarge Linux"),
    ({"PlatformDetails": "Windows"}, "us-east-1 g5.xlarge Windows"),
    ({"PlatformDetails": None, "Platform": "windows"}, "us-east-1 g5.xlarge Windows"),  # as moto says it
    ({"PlatformDetails": None}, "us-east-1 g5.xlarge Linux"),  # moto's Linux, which says nothing
    ({"Placement": {"AvailabilityZone": "us-east-1-wl1-bos-wlz-1"}}, None),  # Wavelength: no region read
    ({"PlatformDetails": "Red Hat Enterprise Linux"}, "us-east-1 g5.xlarge RHEL"),
    ({"PlatformDetails": "Windows with SQL Server Standard"}, None),  # not priced: never a wrong price
    ({"Placement": {"AvailabilityZone": "us-west-2-lax-1a"}}, "us-west-2-lax-1 g5.xlarge Linux"),
    ({"Placement": {}}, None),
    ({"InstanceType": None}, None),
    ({"InstanceLifecycle": "spot"}, "spot us-east-1a g5.xlarge Linux/UNIX"),
])
def test_what_prices_an_instance_its_type_region_platform_and_whether_it_is_spot(fields, key):
    question = ec2.price_question(priced(**fields), at_now())
    assert (question and question[0]) == key


def test_the_price_list_is_asked_in_us_east_1_with_the_filters_that_leave_one_product():
    in_ireland = priced(Placement={"AvailabilityZone": "eu-west-1b"})
    key, words, region, read = ec2.price_question(in_ireland, at_now())
    assert region == "us-east-1" and words[:7] == ["pricing", "get-products", "--service-code", "AmazonEC2",
                                                   "--format-version", "aws_v1", "--filters"]
    filters = {f["Field"]: f["Value"] for f in json.loads(words[words.index("--filters") + 1])}
    assert filters == {**G5_TERMS, "regionCode": "eu-west-1"}
    assert all(f["Type"] == "TERM_MATCH" for f in json.loads(words[words.index("--filters") + 1]))


class PriceAws:
    """ec2.aws for prices: answers get-products with the g5.xlarge answer (or ANSWER), and
    describe-spot-price-history with one entry; counts the calls, and where they were asked."""

    def __init__(self, monkeypatch, answer=PRICE_LIST):
        self.calls, self.answer = [], answer
        monkeypatch.setattr(ec2, "aws", self)

    def __call__(self, profile, *args, region=None, timeout=None):
        self.calls.append((args[:2], region, timeout))
        if isinstance(self.answer, Exception):
            raise self.answer
        if args[1] == "describe-spot-price-history":
            return {"SpotPriceHistory": [{"AvailabilityZone": "us-east-1a", "InstanceType": "g5.xlarge",
                                          "ProductDescription": "Linux/UNIX", "SpotPrice": "0.402",
                                          "Timestamp": "2026-12-04T11:00:00Z"}]}
        return self.answer


def test_prices_are_remembered_a_day_in_a_private_file_a_second_listing_asks_nothing(monkeypatch, tmp_path):
    aws = PriceAws(monkeypatch)
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    first = ec2.prices(profile_for("gpu"), [priced()], env)
    assert first == {"i-0abc": ec2.Price(1.006, False)}
    assert aws.calls == [(("pricing", "get-products"), "us-east-1", 10)]  # 10 s at most
    assert ec2.prices(profile_for("gpu"), [priced()], env) == first and len(aws.calls) == 1
    kept = tmp_path / "ec2" / "prices"
    assert kept.stat().st_mode & 0o777 == 0o600
    known = json.loads(kept.read_text())
    (key,) = known
    known[key][0] -= 86400 - 60  # a minute short of a day
    kept.write_text(json.dumps(known))
    assert ec2.prices(profile_for("gpu"), [priced()], env) == first and len(aws.calls) == 1
    known[key][0] -= 120  # a day old
    kept.write_text(json.dumps(known))
    assert ec2.prices(profile_for("gpu"), [priced()], env) == first and len(aws.calls) == 2


def test_a_spot_price_is_remembered_an_hour(monkeypatch, tmp_path):
    aws = PriceAws(monkeypatch)
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    spot = priced(InstanceLifecycle="spot")
    assert ec2.prices(profile_for("gpu"), [spot], env) == {"i-0abc": ec2.Price(0.402, True)}
    assert aws.calls[0][:2] == (("ec2", "describe-spot-price-history"), None)  # the instance's own region
    kept = tmp_path / "ec2" / "prices"
    known = json.loads(kept.read_text())
    known["spot us-east-1a g5.xlarge Linux/UNIX"][0] -= 3600 - 60
    kept.write_text(json.dumps(known))
    ec2.prices(profile_for("gpu"), [spot], env)
    assert len(aws.calls) == 1  # a minute short of an hour
    known["spot us-east-1a g5.xlarge Linux/UNIX"][0] -= 120
    kept.write_text(json.dumps(known))
    ec2.prices(profile_for("gpu"), [spot], env)
    assert len(aws.calls) == 2


def test_a_price_that_cannot_be_had_is_unknown_and_asked_again_only_after_an_hour(monkeypatch, tmp_path):
    aws = PriceAws(monkeypatch, ec2.Failure("aws: An error occurred (AccessDeniedException) when calling"
                                            " the GetProducts operation: no"))
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert ec2.prices(profile_for("gpu"), [priced()], env) == {"i-0abc": ec2.Price(None, False)}
    assert ec2.prices(profile_for("gpu"), [priced()], env) == {"i-0abc": ec2.Price(None, False)}
    assert len(aws.calls) == 1
    kept = tmp_path / "ec2" / "prices"
    known = json.loads(kept.read_text())
    known["us-east-1 g5.xlarge Linux"][0] -= 3600 + 1
    kept.write_text(json.dumps(known))
    ec2.prices(profile_for("gpu"), [priced()], env)
    assert len(aws.calls) == 2


@pytest.mark.parametrize("kept", ["not json", "[]", '{"us-east-1 g5.xlarge Linux": [1e99, 5]}',
                                  '{"us-east-1 g5.xlarge Linux": ["x", 5]}',
                                  '{"us-east-1 g5.xlarge Linux": [0, "-3"]}'])
def test_a_damaged_price_file_is_asked_again_never_believed(monkeypatch, tmp_path, kept):
    aws = PriceAws(monkeypatch)
    (tmp_path / "ec2").mkdir()
    (tmp_path / "ec2" / "prices").write_text(kept)
    assert ec2.prices(profile_for("gpu"), [priced()], {"XDG_CACHE_HOME": str(tmp_path)}) == {
        "i-0abc": ec2.Price(1.006, False)}
    assert len(aws.calls) == 1


def test_price_requests_run_at_the_same_time(monkeypatch, tmp_path):
    import threading

    both = threading.Barrier(2, timeout=5)  # broken, and so an unknown price, if they come one by one

    class Together(PriceAws):
        def __call__(self, *args, **how):
            both.wait()
            return super().__call__(*args, **how)

    Together(monkeypatch)
    found = ec2.prices(profile_for("gpu"), [priced(), priced(InstanceId="i-0def", InstanceLifecycle="spot")],
                       {"XDG_CACHE_HOME": str(tmp_path)})
    assert found == {"i-0abc": ec2.Price(1.006, False), "i-0def": ec2.Price(0.402, True)}


def test_without_ask_only_a_remembered_price_is_given(monkeypatch, tmp_path):
    aws = PriceAws(monkeypatch)
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert ec2.prices(profile_for("gpu"), [priced()], env, ask=False) == {"i-0abc": ec2.Price(None, False)}
    assert aws.calls == []
    ec2.prices(profile_for("gpu"), [priced()], env)
    assert ec2.prices(profile_for("gpu"), [priced()], env, ask=False) == {"i-0abc": ec2.Price(1.006, False)}


def test_the_cost_since_start_is_the_price_times_the_time_since_the_last_start():
    cost = ec2.since_start(priced(), ec2.Price(1.006, False), at_now())
    assert round(cost, 4) == round(1.006 * 205 / 60, 4)
    assert ec2.since_start(priced(), ec2.Price(None, False), at_now()) is None
    assert ec2.since_start(priced(LaunchTime="x"), ec2.Price(1.006, False), at_now()) is None


def test_status_says_the_uptime_the_price_and_the_cost_since_start(monkeypatch, tmp_path):
    PriceAws(monkeypatch)
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert ec2.cost_words(profile_for("gpu"), priced(), env, at_now()) == (
        "up 3h 25m, $1.006/h on demand, $3.44 since start")
    assert ec2.cost_words(profile_for("gpu"), priced(InstanceLifecycle="spot"), env, at_now()) == (
        "up 3h 25m, $0.402/h Spot, about $1.37 since start")  # approximate: the price moved meanwhile
    assert ec2.cost_words(profile_for("gpu"), priced(PlatformDetails="Windows with SQL Server Web"), env,
                          at_now()) == "up 3h 25m, ?/h, ? since start"


def test_the_words_of_a_price_say_which_price_it_is():
    assert ec2.hourly_words(ec2.Price(1.006, False)) == "$1.006/h on demand"
    assert ec2.hourly_words(ec2.Price(0.402, True)) == "$0.402/h Spot"
    assert not ec2.hourly_words(ec2.Price(None, False))


def g5_table(width):
    rows = [priced(Tags=[{"Key": "Name", "Value": "gpu-box-for-the-long-training-runs"}],
                   PublicDnsName="ec2-3-91-10-20.compute-1.amazonaws.com", InstanceId="i-0abc1234def567890"),
            priced(InstanceId="i-0def1234abc567890", InstanceType="p4d.24xlarge",
                   PrivateIpAddress="10.0.1.17", Tags=[{"Key": "Name", "Value": "big"}],
                   LaunchTime="2026-12-01T10:00:00Z"),
            priced("stopped", InstanceId="i-0123456789abcdef0", InstanceType="t3.large",
                   Tags=[{"Key": "Name", "Value": "old-cpu"}])]
    costs = {"i-0abc1234def567890": ec2.Price(1.006, False), "i-0def1234abc567890": ec2.Price(32.77, False)}
    return ec2.instance_table(rows, [profile_for("gpu-box-for-the-long-training-runs")], at_now(),
                              {"i-0abc1234def567890": "1h"}, costs, width)


def test_instances_fit_100_columns_by_cutting_the_widest_text_columns_never_a_number():
    lines = g5_table(100)
    assert max(len(line) for line in lines) <= 100
    big, first, old = (line.split() for line in lines)  # running first, then by name
    assert first[5:10] == ["3h", "25m", "$1.006/h", "$3.44", "idle-stop=1h"]
    assert big[5:9] == ["3d", "2h", "$32.77/h", "$2,425"]  # 74 h at $32.77
    assert old[2:9] == ["stopped", "t3.large", "-", "-", "-", "-", "-"]
    assert first[0].endswith("…") and first[4].endswith("…")  # the name and the address, cut
    assert all(line.split()[1].startswith("i-0") for line in lines)
    assert len({line.index("$") for line in lines[:2]}) == 1  # aligned


def test_a_column_is_cut_to_8_characters_no_fewer_and_a_spot_price_never():
    from datetime import datetime, timezone

    spot = priced(InstanceId="i-0abc1234def567890", InstanceLifecycle="spot",
                  PublicDnsName="ec2-3-91-10-20.compute-1.amazonaws.com")
    (line,) = ec2.instance_table([spot], [], datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc), {},
                                 {"i-0abc1234def567890": ec2.Price(0.00001, True)}, 40)
    assert line.split()[:5] == ["gpu-box", "i-0abc1…", "running", "g5.xlar…", "ec2-3-9…"]  # 8 at most
    assert "$0.00001/h spot" in line and len(line) > 40  # too narrow: the line runs on


def test_instances_are_not_cut_without_a_width_a_pipe_s():
    lines = g5_table(None)
    assert "gpu-box-for-the-long-training-runs" in lines[1] and "…" not in "".join(lines)


def test_the_width_is_columns_else_the_terminal_s_and_none_in_a_pipe(monkeypatch):
    assert ec2.terminal_width({"COLUMNS": "100"}) == 100
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert ec2.terminal_width({}) is None
