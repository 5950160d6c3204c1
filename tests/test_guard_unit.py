"""Idle stop's guard, in-process: its functions against a /proc and files of the test's own.

Every number the guard goes by (the window, the notice, the backstop of an
ssh connection without a terminal, the GPU, CPU, network and disk
thresholds, keep's m/h/d) and every comparison has a test here that fails
when it changes; and each thing it reads that a user can write (a keep
file, a Jupyter runtime file, a tmux socket, a process's name and argv) is
fed a hostile one. test_guard.py runs the real guard in namespaces of its
own, as root; test_idle_e2e.py on an instance over ssh.
"""

import http.server
import json
import os
import socket
import threading
import time

import pytest

from conftest import ec2, skip_or_fail

NOW = 1_800_000_000
HOUR = 3600


def watch(state="none", last=0, at=0, why=""):
    return ec2.Watch(state, last, at, why)


def at(seconds_ago, reason="input on pts/0 (ubuntu)"):
    return ec2.Use(NOW - seconds_ago, reason)


# --- what a check decides ------------------------------------------------------


def test_a_whole_window_unused_gives_notice_and_a_second_less_does_not():
    new, line, notice, off = ec2.decide(watch(), [at(60 * 60)], 60, NOW, 60)
    assert (new.state, new.at, off) == ("stopping", NOW + 5 * 60, False)
    assert line == f"idle 60 of 60 min: stopping at {ec2.clock(NOW + 300)}"
    assert notice == ("ec2 idle stop: nothing has used this instance for 1h; it stops at"
                      f" {ec2.clock(NOW + 300)}. To keep it: type in any terminal, or run:"
                      " ec2-idle-stop keep 2h (or ec2 --keep 2h)")
    new, line, notice, off = ec2.decide(watch(), [at(60 * 60 - 1)], 60, NOW, 60)
    assert (new.state, notice, off) == ("idle", None, False)
    assert line == f"idle since {ec2.clock(NOW - 3599)} (last: input on pts/0 (ubuntu))"


def test_the_window_and_the_notice_are_counted_in_the_machines_minute():
    new, _, _, _ = ec2.decide(watch(), [at(30)], 30, NOW, 1)  # the tests' compressed minute
    assert (new.state, new.at) == ("stopping", NOW + 5)
    assert ec2.decide(watch(), [at(29)], 30, NOW, 1)[0].state == "idle"


def test_the_notice_runs_5_minutes_then_powers_off_never_before():
    notice_at = NOW - 1
    was = watch("stopping", NOW - 70 * 60, NOW + 5 * 60 - 1, "input on pts/0 (ubuntu)")
    assert ec2.decide(was, [at(70 * 60)], 60, NOW, 60) == (was, None, None, False)  # a second to go
    was = was._replace(at=NOW)
    new, line, notice, off = ec2.decide(was, [at(70 * 60)], 60, NOW, 60)
    assert (new.state, line, notice, off) == ("stopping", "unused for 1h: powering off", None, True)
    assert notice_at  # the notice began 5 minutes before at


def test_a_use_since_the_notice_began_cancels_the_stop_and_one_before_does_not():
    began = NOW - 60
    was = watch("stopping", NOW - 70 * 60, began + 5 * 60, "booted at 09:00")
    new, line, notice, off = ec2.decide(was, [ec2.Use(began, "input on pts/1 (ubuntu)")], 60, NOW, 60)
    assert (new.state, new.at, off) == ("idle", 0, False)
    assert line == "in use: input on pts/1 (ubuntu): stop cancelled"
    assert notice == "ec2: idle stop cancelled: in use: input on pts/1 (ubuntu)"
    assert ec2.decide(was, [ec2.Use(began - 1, "input on pts/1 (ubuntu)")], 60, NOW, 60)[1] is None


def test_anything_in_use_now_cancels_the_stop_and_is_said_first():
    was = watch("stopping", NOW - 70 * 60, NOW + 60, "")
    uses = [at(10), ec2.Use(None, "GPU 0 at 97%"), ec2.Use(None, "CPU at 80% (most: python3 pid 7)")]
    new, line, _, _ = ec2.decide(was, uses, 60, NOW, 60)
    assert (new.state, new.why, line) == ("in-use", "GPU 0 at 97%", "in use: GPU 0 at 97%: stop cancelled")
    new, line, _, _ = ec2.decide(watch("in-use", NOW - 60, 0, "GPU 0 at 97%"), uses, 60, NOW, 60)
    assert (new.state, line) == ("in-use", None)  # said once, when it began


def test_a_keep_ahead_is_in_use_and_one_that_ended_early_is_idle_from_now():
    keep = ec2.Use(NOW + HOUR, "kept until 11:00 by ubuntu")
    new, line, _, _ = ec2.decide(watch(), [at(5 * HOUR), keep], 60, NOW, 60)
    assert (new.state, new.last, line) == ("in-use", NOW + HOUR, "in use: kept until 11:00 by ubuntu")
    # keep off: the last check's time lies ahead, and counts only to now.
    new, _, _, _ = ec2.decide(new, [at(5 * HOUR)], 60, NOW, 60)
    assert (new.state, new.last) == ("idle", NOW)


def test_what_status_says_for_each_state(tmp_path):
    machine = fake_machine(tmp_path)
    assert ec2.guard_status(machine, NOW) == "idle stop is not armed"
    (tmp_path / "root/etc/ec2-idle-stop.conf").write_text("window=90\n")
    assert ec2.guard_status(machine, NOW) == "armed, not checked yet; idle stop after 90 min unused"
    state = tmp_path / "root/var/lib/ec2-idle-stop/state"
    state.write_text(f"idle {NOW - 30 * 60 - 59} 0\ninput on pts/0 (ubuntu)\n")
    assert ec2.guard_status(machine, NOW) == ("idle 30 of 90 min (last: input on pts/0 (ubuntu));"
                                              " idle stop after 90 min unused")
    state.write_text(f"in-use {NOW} 0\nGPU 0 at 97%\n")
    assert ec2.guard_status(machine, NOW) == "in use: GPU 0 at 97%; idle stop after 90 min unused"
    state.write_text(f"stopping {NOW} {NOW + 300}\nx\n")
    assert ec2.guard_status(machine, NOW) == (f"stopping at {ec2.clock(NOW + 300)}: unused for 90 min;"
                                              " ec2 --keep 2h keeps it")
    (tmp_path / "root/etc/ec2-idle-stop.conf").write_text("window=120\n")
    assert ec2.guard_status(machine, NOW).endswith(": unused for 2h; ec2 --keep 2h keeps it")


@pytest.mark.parametrize("text", ["window=", "window=1h", "window=-5", "windows=60", "window=6\u0660",
                                  "\0" * 100])
def test_a_conf_or_state_that_is_not_the_guards_own_is_not_read_as_one(tmp_path, text):
    machine = fake_machine(tmp_path)
    (tmp_path / "root/etc/ec2-idle-stop.conf").write_text(text)
    assert ec2.armed_window(machine) is None
    (tmp_path / "root/var/lib/ec2-idle-stop/state").write_text(text + " 1 2\n")
    assert ec2.read_watch(machine) == ec2.Watch("none", 0, 0, "")


# --- the fake machine ---------------------------------------------------------------


def fake_machine(tmp_path, minute=60):
    root = tmp_path / "root"
    for folder in ("proc", "dev/pts", "etc", "var/lib/ec2-idle-stop/keep", "var/log", "sys/class/block"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return ec2.Machine(str(root), minute)


def add_proc(machine, pid, name, argv=(), ppid=1, cpu=0, kids=0, start=100, uid=0):
    folder = os.path.join(machine.root, "proc", str(pid))
    os.makedirs(folder, exist_ok=True)
    fields = ["S", ppid, 1, 1, 0, -1, 0, 0, 0, 0, 0, cpu, 0, kids, 0, 20, 0, 1, 0, start] + [0] * 20
    with open(f"{folder}/stat", "w") as f:
        f.write(f"{pid} ({name}) " + " ".join(map(str, fields)) + "\n")
    with open(f"{folder}/cmdline", "w") as f:
        f.write("".join(word + "\0" for word in (argv or [name])))
    with open(f"{folder}/status", "w") as f:
        f.write(f"Name:\t{name}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
                f"NSpid:\t{pid}\n")
    return folder


# --- CPU, network, disk and GPU -----------------------------------------------------


def procs(*specs):
    return {p[0]: ec2.Proc(p[0], p[1], 1, p[2], p[3], p[4]) for p in specs}


def test_half_a_cpu_since_the_last_check_is_in_use_and_a_tick_less_is_not():
    record = (NOW - 60, {(7, 5): 1000}, {(7, 5): 0})
    use, _ = ec2.cpu_use(procs((7, "python3", 4000, 0, 5)), record, NOW, 100)  # 3000 ticks in 60 s
    assert use == ec2.Use(None, "CPU at 50% (most: python3 pid 7)")
    use, _ = ec2.cpu_use(procs((7, "python3", 3999, 0, 5)), record, NOW, 100)
    assert use is None


def test_the_first_check_only_samples_and_a_new_process_counts_all_its_time():
    use, record = ec2.cpu_use(procs((7, "sh", 99999, 0, 5)), (0, {}, {}), NOW, 100)
    assert use is None and record == f"{NOW}.000\n7 5 99999 0\n"
    then, own, kids = ec2.cpu_record(record)
    assert (then, own, kids) == (NOW, {(7, 5): 99999}, {(7, 5): 0})
    use, _ = ec2.cpu_use(procs((7, "sh", 99999, 0, 5), (8, "cc1", 3000, 0, 900)), (then, own, kids), NOW + 60,
                         100)
    assert use == ec2.Use(None, "CPU at 50% (most: cc1 pid 8)")


def test_children_reaped_since_count_but_not_what_the_last_check_saw_of_them():
    record = (NOW - 60, {(7, 5): 0, (8, 9): 2000}, {(7, 5): 0, (8, 9): 0})
    # 8 ended, reaped by 7: its 2000 ticks were counted, its last 1000 were not.
    use, _ = ec2.cpu_use(procs((7, "make", 0, 3000, 5)), record, NOW, 100)
    assert use is None  # 1000 ticks: 16%
    use, _ = ec2.cpu_use(procs((7, "make", 0, 5000, 5)), record, NOW, 100)
    assert use is not None and use.reason.startswith("CPU at 50%")


def test_the_guards_own_cpu_is_left_out_and_a_check_sooner_than_half_a_minute_waits(tmp_path):
    record = (NOW - 60, {}, {})
    use, text = ec2.cpu_use(procs((7, "python3", 6000, 6000, 5)), record, NOW, 100, mine=7)
    assert use is None and text == f"{NOW}.000\n"  # the guard, with what it ran: not even in the record
    machine = fake_machine(tmp_path)
    add_proc(machine, 7, "python3", cpu=0)
    lib = tmp_path / "root/var/lib/ec2-idle-stop"
    ec2.seen(machine, NOW, 60)
    assert (lib / "cpu").read_text().startswith(f"{NOW}.000\n")
    add_proc(machine, 7, "python3", cpu=6000)  # a minute's CPU, at once
    assert not [use for use in ec2.seen(machine, NOW + 29, 60) if use.reason.startswith("CPU")]
    assert (lib / "cpu").read_text().startswith(f"{NOW}.000\n")  # kept for the next check
    assert [use.reason for use in ec2.seen(machine, NOW + 30, 60) if use.reason.startswith("CPU")] == [
        "CPU at 200% (most: python3 pid 7)"]


def test_a_process_name_is_said_only_in_plain_characters():
    use, _ = ec2.cpu_use(procs((7, "a b$(x);\x1b[2J", 6000, 0, 5)), (NOW - 60, {}, {}), NOW, 100)
    assert use.reason == "CPU at 100% (most: a?b??x????2J pid 7)"


@pytest.mark.parametrize("what, index, busy", [("network", 1, 100_000), ("disk", 2, 500_000)])
def test_network_and_disk_count_at_their_threshold_a_second_and_not_a_byte_below(what, index, busy):
    counters = [0, 0]
    counters[index - 1] = busy * 60
    uses, record = ec2.io_use(NOW, counters, f"{NOW - 60} 0 0")
    assert uses == [ec2.Use(None, f"{what} at {busy // 1000} kB/s")]
    assert record == f"{NOW} {counters[0]} {counters[1]}\n"
    counters[index - 1] -= 1
    assert ec2.io_use(NOW, counters, f"{NOW - 60} 0 0")[0] == []


def test_a_copy_at_1_mb_a_second_counts_and_counters_that_began_again_do_not():
    assert ec2.io_use(NOW, (60_000_000, 0), f"{NOW - 60} 0 0")[0] == [ec2.Use(None, "network at 1000 kB/s")]
    assert ec2.io_use(NOW, (0, 0), f"{NOW - 60} 999999999 999999999")[0] == []
    assert ec2.io_use(NOW, (10**12, 10**12), "garbage")[0] == []  # the first check only samples


def test_network_leaves_out_loopback_and_disks_leave_out_partitions_loop_and_ram(tmp_path):
    machine = fake_machine(tmp_path)
    (tmp_path / "root/proc/net").mkdir()
    (tmp_path / "root/proc/net/dev").write_text(
        "Inter-|   Receive                      |  Transmit\n"
        " face |bytes packets errs drop fifo frame compressed multicast|bytes packets\n"
        "    lo: 9999999 1 0 0 0 0 0 0 9999999 1 0 0 0 0 0 0\n"
        "  ens5: 1000 1 0 0 0 0 0 0 200 1 0 0 0 0 0 0\n"
        "docker0: 30 1 0 0 0 0 0 0 4 1 0 0 0 0 0 0\n")
    (tmp_path / "root/proc/diskstats").write_text(
        " 259 0 nvme0n1 1 0 100 0 1 0 20 0 0 0 0\n"
        " 259 1 nvme0n1p1 1 0 100 0 1 0 20 0 0 0 0\n"
        "   7 0 loop0 1 0 5000 0 0 0 0 0 0 0 0\n"
        "   1 0 ram0 1 0 5000 0 0 0 0 0 0 0 0\n")
    (tmp_path / "root/sys/class/block/nvme0n1p1").mkdir()
    (tmp_path / "root/sys/class/block/nvme0n1p1/partition").write_text("1\n")
    assert ec2.io_counters(machine) == (1000 + 200 + 30 + 4, (100 + 20) * 512)


def test_a_gpu_at_10_percent_is_in_use_and_at_9_or_unreadable_is_not():
    assert ec2.gpu_uses("0, 9\n1, 10\n2, 100\nbad\n3, [N/A]\n") == [ec2.Use(None, "GPU 1 at 10%"),
                                                                    ec2.Use(None, "GPU 2 at 100%")]


# --- ssh connections -------------------------------------------------------------------


def sshd_world(tmp_path, tree):
    machine = fake_machine(tmp_path)
    for pid, (name, argv, ppid) in tree.items():
        add_proc(machine, pid, name, argv, ppid=ppid, start=pid * 100)
    return machine


def connections(machine, now, window=60):
    found = ec2.processes(machine)
    return ec2.ssh_connections(machine, found, now, window, 0, 100)


def test_a_command_over_ssh_without_a_terminal_counts_for_4_windows_from_when_it_opened(tmp_path):
    machine = sshd_world(tmp_path, {10: ("sshd", ["sshd: ubuntu@notty"], 1), 11: ("bash", ["bash"], 10)})
    opened = 10 * 100 / 100  # its start, in seconds after boot (which is 0 here)
    [use] = connections(machine, opened + 4 * 60 * 60 - 1)
    assert use == ec2.Use(None, f"ssh connection without a terminal (ubuntu, open since {ec2.clock(opened)})")
    [use] = connections(machine, opened + 4 * 60 * 60)
    assert use == ec2.Use(opened + 4 * 3600, "ssh connection without a terminal (ubuntu) past its 240 min")


def test_forwards_alone_count_and_a_terminal_or_sshds_own_processes_do_not(tmp_path):
    machine = sshd_world(tmp_path, {10: ("sshd", ["sshd: ubuntu"], 1),
                                    20: ("sshd", ["sshd: ubuntu@pts/0"], 1), 21: ("bash", ["-bash"], 20),
                                    30: ("sshd", ["sshd: ubuntu [priv]"], 1),
                                    40: ("sshd", ["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100"], 1),
                                    50: ("bash", ["sshd: ubuntu@notty"], 1), 51: ("sleep", ["sleep"], 50)})
    assert [use.reason.split(",")[0] for use in connections(machine, 1000)] == [
        "ssh connection without a terminal (ubuntu"]  # 10 alone; 50 is not sshd, whatever it says


def test_ec2s_own_round_trips_ask_and_a_command_still_starting_does_not_count_yet(tmp_path):
    machine = sshd_world(tmp_path, {
        10: ("sshd", ["sshd: ubuntu@notty"], 1),
        11: ("sh", ["sh", "-c", "if [ -x /usr/local/bin/ec2-idle-stop ]; then exec ..."], 10),
        20: ("sshd", ["sshd: ubuntu@notty"], 1), 21: ("bash", ["bash", "-c", "..."], 20),
        22: ("python3", ["python3", "/tmp/ec2-idle-stop.Xa81", "install", "60"], 21),
        30: ("sshd", ["sshd: ubuntu@notty"], 1), 31: ("sshd", ["sshd: ubuntu@notty"], 30)})
    assert connections(machine, 1000) == []
    # The same connection once its command runs.
    add_proc(machine, 32, "bash", ["bash", "-c", "sleep 99"], ppid=31)
    assert len(connections(machine, 1000)) == 1


# --- keeps ---------------------------------------------------------------------------


def me():
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def test_keep_counts_a_span_of_m_h_or_d_from_now_in_the_machines_minute(tmp_path):
    machine = fake_machine(tmp_path)
    (tmp_path / "root/etc/ec2-idle-stop.conf").write_text("window=60\n")
    kept = tmp_path / "root/var/lib/ec2-idle-stop/keep" / me()
    for span, minutes in (("90m", 90), ("2h", 120), ("2d", 2880), ("1h30m", 90)):
        said = ec2.keep_until(machine, [span], NOW)
        assert kept.read_text() == f"{NOW + minutes * 60}\n"
        assert said == f"in use until {ec2.clock(NOW + minutes * 60, '%a %H:%M')}"
    ec2.keep_until(ec2.Machine(machine.root, 1), ["2h"], NOW)
    assert kept.read_text() == f"{NOW + 120}\n"
    assert ec2.keep_until(machine, ["off"], NOW) == "no longer kept in use" and not kept.exists()


@pytest.mark.parametrize("words", [["often"], ["8d"], ["0m"], [], ["2h", "3h"], ["-1h"]])
def test_keep_refuses_what_is_not_1m_to_7d_with_status_2(tmp_path, words):
    machine = fake_machine(tmp_path)
    (tmp_path / "root/etc/ec2-idle-stop.conf").write_text("window=60\n")
    with pytest.raises(ec2.Failure, match="usage: ec2-idle-stop keep 90m|3h|2d|off") as e:
        ec2.keep_until(machine, words, NOW)
    assert e.value.status == 2


def test_keep_where_nothing_is_armed_says_so_with_status_3(tmp_path):
    with pytest.raises(ec2.Failure, match="idle stop is not armed") as e:
        ec2.keep_until(fake_machine(tmp_path), ["2h"], NOW)
    assert e.value.status == 3


def test_keep_writes_through_no_link_another_user_left(tmp_path):
    machine = fake_machine(tmp_path)
    (tmp_path / "root/etc/ec2-idle-stop.conf").write_text("window=60\n")
    target = tmp_path / "target"
    target.write_text("precious\n")
    (tmp_path / "root/var/lib/ec2-idle-stop/keep" / me()).symlink_to(target)
    with pytest.raises(ec2.Failure, match="cannot keep: .*"):
        ec2.keep_until(machine, ["2h"], NOW)
    assert target.read_text() == "precious\n"


def test_a_keep_counts_for_its_owner_only_as_a_number_and_at_most_a_week_ahead(tmp_path):
    machine = fake_machine(tmp_path)
    keep = tmp_path / "root/var/lib/ec2-idle-stop/keep"
    (keep / me()).write_text("99999999999\n")
    (keep / "someone-else").write_text(f"{NOW + 60}\n")  # not named after its owner
    (keep / "nobody").symlink_to(keep / me())
    assert ec2.keeps(machine, NOW) == [ec2.Use(NOW + 7 * 24 * HOUR, f"kept until"
                                               f" {ec2.clock(NOW + 7 * 24 * HOUR)} by {me()}")]
    (keep / me()).write_text("soon\n")
    assert ec2.keeps(machine, NOW) == []


def test_what_the_guard_reads_is_never_through_a_link_nor_a_fifo_and_is_cut_at_its_limit(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 100_000)
    assert len(ec2.read_file(str(tmp_path / "big"))) == 64 * 1024
    (tmp_path / "link").symlink_to(tmp_path / "big")
    os.mkfifo(tmp_path / "fifo")  # would hang a reader that waits for a writer
    assert ec2.read_file(str(tmp_path / "link")) is None and ec2.read_file(str(tmp_path / "fifo")) is None
    assert ec2.read_file(str(tmp_path / "nothing")) is None


# --- Jupyter ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, kind", [
    (["/opt/conda/bin/python3.11", "/opt/conda/bin/jupyter-lab", "--no-browser"], "server"),
    (["/home/u/.venv/bin/jupyter-lab"], "server"),
    (["python3", "-m", "jupyter_server"], "server"),
    (["python", "-m", "notebook"], "server"),
    (["/usr/bin/jupyter-notebook", "--ip=0.0.0.0"], "server"),
    (["python", "-m", "ipykernel_launcher", "-f", "/run/k.json"], "kernel"),
    (["/home/u/.venv/bin/python", "-m", "ipykernel_launcher", "--f=/tmp/k.json"], "kernel"),
    (["python3", "/usr/lib/python3/dist-packages/ipykernel_launcher.py", "-f", "k.json"], "kernel"),
    (["python3", "train.py", "--notes", "jupyter-lab"], None),
    (["python3", "-m"], None),
    (["vim", "jupyter-lab"], "server"),  # asked, finds no file of its own, and counts for nothing
])
def test_jupyter_servers_and_kernels_are_known_by_their_argv(argv, kind):
    assert ec2.jupyter_kind(argv) == kind


@pytest.mark.parametrize("argv, found", [(["-f", "/a.json"], "/a.json"), (["--f=/b.json"], "/b.json"),
                                         (["-f=/c.json"], "/c.json"), (["--f", "d.json"], "d.json"),
                                         (["-f"], None), ([], None)])
def test_a_kernels_connection_file_is_read_from_its_argv(argv, found):
    assert ec2.kernel_file(["python", "-m", "ipykernel_launcher", *argv]) == found


@pytest.mark.parametrize("text", ["relative/path", "/[1-99999]/", "/a/../../etc/", "/a%2e%2e/", "/a b/",
                                  "/a?x=1", "/a#b", "/$(reboot)/", "/a\r\n/", None, 7, "/caf\u00e9/"])
def test_a_plain_path_has_no_glob_escape_query_space_or_dot_dot(text):
    assert not ec2.plain_path(text)


def test_a_plain_path_is_what_jupyter_writes():
    for path in ("/", "/user/alice/lab/", "/home/u/.local/x_y-z~1"):
        assert ec2.plain_path(path)


def test_a_servers_runtime_directory_is_where_jupyter_core_puts_it(tmp_path):
    machine = fake_machine(tmp_path)
    folder = add_proc(machine, 40, "python3", ["python3", "-m", "jupyter_server"], uid=os.getuid())

    def dirs(env):
        with open(f"{folder}/environ", "w") as f:
            f.write("".join(f"{k}={v}\0" for k, v in env.items()))
        return ec2.runtime_dirs(machine, 40, os.getuid())

    assert dirs({"HOME": "/home/u"}) == ["/home/u/.local/share/jupyter/runtime"]
    assert dirs({"HOME": "/home/u", "XDG_DATA_HOME": "/data"}) == ["/data/jupyter/runtime"]
    assert dirs({"HOME": "/home/u", "JUPYTER_DATA_DIR": "/jd"}) == ["/jd/runtime"]
    assert dirs({"HOME": "/home/u", "JUPYTER_RUNTIME_DIR": "/rt"}) == [
        "/rt", "/home/u/.local/share/jupyter/runtime"]
    assert dirs({"HOME": "/home/u", "JUPYTER_RUNTIME_DIR": "/rt/$(reboot)"}) == [
        "/home/u/.local/share/jupyter/runtime"]
    import pwd

    assert dirs({}) == [pwd.getpwuid(os.getuid()).pw_dir + "/.local/share/jupyter/runtime"]


def tcp_line(address, port, state, inode):
    return (f"   0: {address}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000"
            f" 0 0 {inode}\n")


def test_where_a_process_listens_comes_from_the_kernels_tables_for_its_own_sockets(tmp_path):
    machine = fake_machine(tmp_path)
    folder = add_proc(machine, 40, "python3")
    os.makedirs(f"{folder}/fd")
    os.makedirs(f"{folder}/net")
    for fd, link in (("3", "socket:[111]"), ("4", "socket:[222]"), ("5", "/dev/null"), ("6", "socket:[333]")):
        os.symlink(link, f"{folder}/fd/{fd}")
    with open(f"{folder}/net/tcp", "w") as f:
        f.write("  sl  local_address rem_address   st ...\n" + tcp_line("0100007F", 8888, "0A", 111)
                + tcp_line("0501000A", 8889, "0A", 222) + tcp_line("00000000", 80, "0A", 999)  # another's
                + tcp_line("0100007F", 5555, "01", 333))  # a connection, not a listener
    with open(f"{folder}/net/tcp6", "w") as f:
        f.write("  sl  local_address ...\n" + tcp_line("0" * 32, 9999, "0A", 333)
                + tcp_line("00000000000000000000000001000000", 7777, "0A", 111))
    assert ec2.listening(machine, 40) == [("127.0.0.1", 8888), ("10.0.1.5", 8889), ("::1", 9999),
                                          ("::1", 7777)]
    assert ec2.listening(machine, 41) == []  # gone


class Recorder(http.server.BaseHTTPRequestHandler):
    """A server that answers /api/kernels as jupyter_server does, and records each request."""
    seen, kernels = [], []

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps(self.kernels).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    """Two loopback servers: the Jupyter server the file belongs to, and one elsewhere."""
    started = []

    def start(address):
        kernels = [{"name": "python3", "execution_state": "busy", "last_activity": "2020-01-01T00:00:00Z"}]
        handler = type("Seen", (Recorder,), {"seen": [], "kernels": kernels})
        server = http.server.HTTPServer((address, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server.server_port, handler.seen

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def runtime_file(tmp_path, **fields):
    folder = tmp_path / "runtime"
    folder.mkdir(exist_ok=True)
    info = {"base_url": "/", "hostname": "localhost", "port": 0, "secure": False, "token": "t0k3n", **fields}
    (folder / "jpserver-40.json").write_text(json.dumps(info))
    return str(folder)


def test_a_servers_kernels_are_asked_where_it_listens_with_the_token_of_its_file(tmp_path, servers):
    port, seen = servers("127.0.0.1")
    runtime = runtime_file(tmp_path, port=port, base_url="/lab/")
    assert ec2.kernels_of_server([runtime], 40, [("127.0.0.1", port)]) == [
        ["busy", "2020-01-01T00:00:00Z", "python3"]]
    assert seen == [("/lab/api/kernels", "token t0k3n")]


@pytest.mark.parametrize("fields", [
    {"port": "1@127.0.0.2:80"},  # a port that would be another host
    {"hostname": "127.0.0.2"},  # a host elsewhere: the guard asks where the server listens, never this
    {"port": True},
    {"base_url": "/[1-99999]/"},  # curl's globbing, once
    {"base_url": "//127.0.0.2/"},
    {"token": "t0k3n\r\nX-Injected: 1"},
    {"token": "t0k3n x"},
    {"token": ["t0k3n"]},
])
def test_a_hostile_runtime_file_asks_nothing_anywhere_else(tmp_path, servers, fields):
    port, seen = servers("127.0.0.1")
    elsewhere, seen_elsewhere = servers("127.0.0.2")
    if isinstance(fields.get("port"), str):  # the port of the server elsewhere
        fields = {**fields, "port": fields["port"].replace("80", str(elsewhere))}
    runtime = runtime_file(tmp_path, **{"port": port, **fields})
    began = time.monotonic()
    answer = ec2.kernels_of_server([runtime], 40, [("127.0.0.1", port)])
    assert time.monotonic() - began < 3
    assert seen_elsewhere == []
    if "hostname" in fields:  # ignored: asked where it listens
        assert answer and seen == [("/api/kernels", "token t0k3n")]
    else:
        assert answer is None and seen == []


def test_a_server_with_https_is_asked_over_tls_with_its_own_certificate(tmp_path):
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        skip_or_fail("the https test needs openssl (apt-get install openssl)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=x", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    kernels = [{"name": "python3", "execution_state": "busy"}]
    handler = type("Seen", (Recorder,), {"seen": [], "kernels": kernels})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        runtime = runtime_file(tmp_path, port=server.server_port, secure=True)
        assert ec2.kernels_of_server([runtime], 40, [("127.0.0.1", server.server_port)]) == [
            ["busy", None, "python3"]]
        assert handler.seen == [("/api/kernels", "token t0k3n")]
    finally:
        server.shutdown()
        server.server_close()


def test_an_answer_in_chunks_is_read_whole_and_one_too_slow_or_not_http_is_none():
    def serve(answer, pause=0.0):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def one():
            connection, _ = listener.accept()
            connection.recv(65536)
            time.sleep(pause)
            connection.sendall(answer)
            connection.close()
            listener.close()

        threading.Thread(target=one, daemon=True).start()
        return listener.getsockname()[1]

    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1, \r\n2\r\n2]\r\n0\r\n\r\n"
    assert ec2.http_ask("127.0.0.1", serve(chunked), "GET", "/") == (200, b"[1, 2]")
    assert ec2.http_ask("127.0.0.1", serve(b"SSH-2.0-OpenSSH\r\n"), "GET", "/") == (None, b"")
    began = time.monotonic()
    slow = serve(b"HTTP/1.1 200 OK\r\n\r\n", 5)
    assert ec2.http_ask("127.0.0.1", slow, "GET", "/", seconds=1) == (None, b"")
    assert time.monotonic() - began < 2


def test_a_runtime_file_behind_a_link_or_of_another_pid_is_not_read(tmp_path, servers):
    port, seen = servers("127.0.0.1")
    runtime = runtime_file(tmp_path, port=port)
    os.rename(f"{runtime}/jpserver-40.json", f"{runtime}/real.json")
    os.symlink(f"{runtime}/real.json", f"{runtime}/jpserver-40.json")
    assert ec2.kernels_of_server([runtime], 40, [("127.0.0.1", port)]) is None
    assert ec2.kernels_of_server([runtime], 41, [("127.0.0.1", port)]) is None
    assert seen == []


def test_a_servers_answer_counts_a_busy_kernel_now_and_an_active_one_at_its_time_never_ahead():
    uses = ec2.server_uses(40, [["busy", "2020-01-01T00:00:00.000000Z", "python3"],
                                ["idle", "2030-01-01T00:00:00Z", "ir"], ["starting", None, "x y"],
                                "garbage", ["idle", 7, {"a": 1}], ["idle", "not a time", "julia"]], NOW)
    from datetime import datetime, timezone

    old = datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()
    assert uses == [ec2.Use(None, "kernel python3 busy (Jupyter pid 40)"),
                    ec2.Use(old, "kernel python3 active (Jupyter pid 40)"),
                    ec2.Use(NOW, "kernel ir active (Jupyter pid 40)")]
    assert ec2.server_uses(40, {"not": "a list"}, NOW) == []


# A kernel's shell channel, in miniature: it answers the first request after argv[1] seconds.
FAKE_KERNEL = """
import sys, time, zmq
shell = zmq.Context.instance().socket(zmq.ROUTER)
port = shell.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
request = shell.recv_multipart()
time.sleep(float(sys.argv[1]))
shell.send_multipart(request[:1] + [b"<IDS|MSG>", b"", b"{}", b"{}", b"{}", b"{}"])
time.sleep(5)
"""


@pytest.mark.parametrize("delay, said", [(1.0, b"idle\n"), (2.5, b"busy\n")])
def test_a_kernel_that_answers_kernel_info_within_1_5_s_is_idle_and_later_busy(tmp_path, delay, said):
    import subprocess
    import sys

    try:
        import zmq  # noqa: F401  (the kernel's own Python has it; the guard's need not)
    except ImportError:
        skip_or_fail("the kernel test needs pyzmq (pip install pyzmq)")
    kernel = subprocess.Popen([sys.executable, "-c", FAKE_KERNEL, str(delay)], stdout=subprocess.PIPE)
    try:
        port = int(kernel.stdout.readline())
        connection = {"shell_port": port, "key": "k3y", "ip": "10.9.9.9"}  # the guard's address, not this
        (tmp_path / "kernel.json").write_text(json.dumps(connection))
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-c", ec2.KERNEL_ASK, str(tmp_path / "kernel.json"),
                               json.dumps([["127.0.0.1", port]])], capture_output=True, timeout=10)
        assert done.stdout == said, done.stderr
        assert time.monotonic() - began < 1.5 + 1.5  # its limit, and a Python's start
    finally:
        kernel.kill()
        kernel.wait()


# --- tmux servers, reached as their users -------------------------------------------------


def tmux_world(tmp_path, mode=0o700, uid=None):
    machine = fake_machine(tmp_path)
    folder = tmp_path / "tmux-sockets"
    folder.mkdir(mode=0o700)
    folder.chmod(mode)
    path = str(folder / "default")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    proc = add_proc(machine, 60, "tmux: server", ["tmux"], uid=os.getuid() if uid is None else uid)
    os.makedirs(f"{proc}/fd")
    os.makedirs(f"{proc}/net")
    os.symlink("socket:[4242]", f"{proc}/fd/5")
    with open(f"{proc}/net/unix", "w") as f:
        f.write("Num       RefCount Protocol Flags    Type St Inode Path\n"
                f"0000000078d71c5a: 00000002 00000000 00010000 0001 01  4242 {path}\n"
                f"0000000078d71c5b: 00000002 00000000 00000000 0001 03  4243 {path}\n")
    return machine, path, listener


def test_a_tmux_server_is_reached_by_its_own_socket_as_its_own_user(tmp_path):
    import pwd

    machine, path, listener = tmux_world(tmp_path)
    with listener:
        assert ec2.tmux_servers(machine, ec2.processes(machine)) == [
            (os.getuid(), os.getgid() if os.getuid() else 0, pwd.getpwuid(os.getuid()).pw_dir, path)]


@pytest.mark.parametrize("mode, uid", [(0o777, None), (0o720, None), (0o700, 12345)])
def test_a_tmux_socket_in_a_directory_others_may_write_or_of_another_user_is_not_reached(tmp_path, mode, uid):
    machine, path, listener = tmux_world(tmp_path, mode, uid)
    with listener:
        assert ec2.tmux_servers(machine, ec2.processes(machine)) == []


def test_a_notice_reaches_each_tmux_client_as_the_servers_user_and_no_file_for_a_terminal(monkeypatch,
                                                                                           tmp_path):
    calls = []
    where = "/tmp/tmux-1000/default"
    monkeypatch.setattr(ec2, "tmux_servers", lambda machine, found: [(1000, 1001, "/home/u", where)])

    def as_user(uid, gid, home, argv):
        calls.append((uid, gid, home, argv))
        return "c /dev/pts/3\np /dev/pts/4\n" if "list-clients" in argv else ""

    monkeypatch.setattr(ec2, "as_user", as_user)
    machine = fake_machine(tmp_path)
    for n in (3, 4, 5):  # regular files here: only a real terminal is written to
        (tmp_path / f"root/dev/pts/{n}").write_text("")
    ec2.tell(machine, "ec2: in use: #(reboot)")
    assert calls == [(1000, 1001, "/home/u", ["tmux", "-S", where, "list-clients", "-F", "c #{client_tty}",
                                              ";", "list-panes", "-a", "-F", "p #{pane_tty}"]),
                     # tmux reads #(...) in a message as a command to run; ## is a #.
                     (1000, 1001, "/home/u", ["tmux", "-S", where, "display-message", "-c", "/dev/pts/3",
                                              "-d", "0", "ec2: in use: ##(reboot)"])]
    assert all((tmp_path / f"root/dev/pts/{n}").read_text() == "" for n in (3, 4, 5))


# --- Spot -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body, found", [
    (b'{"action": "stop", "time": "2026-12-04T14:05:10Z"}', "stop"),
    (b'{"action": "terminate", "time": "2026-12-04T14:05:10Z"}', "terminate"),
    (b'{"action": "hibernate", "time": "2026-12-04T14:05:10Z"}', "hibernate"),
    (b'{"action": "reboot; rm -rf /", "time": "2026-12-04T14:05:10Z"}', None),
    (b'{"action": "stop", "time": "soon"}', None), (b'{"action": "stop"}', None), (b"<html>", None),
    (b"[1]", None), (b"", None),
])
def test_a_spot_notice_is_an_action_of_ec2s_and_a_time(body, found):
    notice = ec2.spot_notice(body)
    assert (notice and notice[0]) == found or notice is found


def test_a_spot_notice_says_when_and_how_long_is_left():
    from datetime import datetime

    when = datetime.fromisoformat("2026-12-04T14:05:10+00:00").timestamp()
    hhmmss = ec2.clock(when, "%H:%M:%S")
    assert ec2.spot_words("stop", when, when - 120) == (f"EC2 will stop this Spot instance at {hhmmss}"
                                                        " (in 2 min): save your work")
    assert ec2.spot_words("terminate", when, when - 59) == ("EC2 will terminate this Spot instance at"
                                                            f" {hhmmss} (in 59 s): save your work")


class Metadata(http.server.BaseHTTPRequestHandler):
    """IMDSv2, in miniature: a token on PUT, then answers to it alone."""
    seen, cycle, action = [], b"spot", None

    def do_PUT(self):
        self.seen.append(("PUT", self.path, self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")))
        self.answer(200, b"tok")

    def do_GET(self):
        self.seen.append(("GET", self.path, self.headers.get("X-aws-ec2-metadata-token")))
        if self.headers.get("X-aws-ec2-metadata-token") != "tok":
            return self.answer(401, b"")
        if self.path == "/latest/meta-data/instance-life-cycle":
            return self.answer(200, self.cycle)
        if self.path == "/latest/meta-data/spot/instance-action" and self.action:
            return self.answer(200, self.action)
        self.answer(404, b"")

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("cycle, token", [(b"spot", "tok"), (b"on-demand", ""), (b"scheduled", "")])
def test_the_spot_watch_asks_with_a_token_first_and_only_a_spot_instance_is_watched(cycle, token):
    handler = type("M", (Metadata,), {"seen": [], "cycle": cycle})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        machine = ec2.Machine("/", 60, ("127.0.0.1", server.server_port))
        assert ec2.spot_token(machine) == token
        assert handler.seen == [("PUT", "/latest/api/token", "21600"),
                                ("GET", "/latest/meta-data/instance-life-cycle", "tok")]
    finally:
        server.shutdown()
        server.server_close()


def test_no_metadata_service_is_no_answer_yet():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # a port nobody listens on
        machine = ec2.Machine("/", 60, ("127.0.0.1", s.getsockname()[1]))
        assert ec2.spot_token(machine) is None


# --- ec2 as the guard ----------------------------------------------------------------------


def test_ec2_run_by_the_guards_name_is_the_guard(tmp_path):
    import shutil
    import subprocess
    import sys

    guard = tmp_path / "ec2-idle-stop"
    shutil.copy(ec2.__file__, guard)
    done = subprocess.run([sys.executable, str(guard)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == ec2.GUARD_USAGE + "\n"
    done = subprocess.run([sys.executable, str(guard), "keep", "often"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == "ec2-idle-stop: usage: ec2-idle-stop keep 90m|3h|2d|off\n"
