"""pip install . puts a working ec2 on PATH: a console script over the module ec2, from bytecode."""

import shlex
import subprocess
import venv

import pytest
from test_process import EXEC_ARGUMENT_SETS, with_terminal

from conftest import ROOT, ec2, free_port


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with `pip install .` in it; returns its bin directory."""
    env_dir = tmp_path_factory.mktemp("install") / "venv"
    venv.create(env_dir, with_pip=True)
    pip = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    return env_dir / "bin"


def test_the_installed_command_runs_the_module_from_its_bytecode(installed):
    done = subprocess.run([str(installed / "ec2"), "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, f"ec2 {ec2.__version__}\n"), done.stderr
    assert "from ec2 import main" in (installed / "ec2").read_text()
    probe = subprocess.run([str(installed / "python"), "-c", "import ec2, sys; print(ec2.__file__);"
                            " print(ec2.__cached__); print(ec2.__spec__.loader.get_code('ec2') is not None)"],
                           capture_output=True, text=True, cwd="/")
    module, cached, _ = probe.stdout.splitlines()
    assert module.endswith("site-packages/ec2.py")
    assert (ROOT / "ec2").read_text() == open(module).read()  # the same file, by another name
    assert open(cached, "rb").read(4)  # pip wrote the bytecode at install time


@pytest.mark.parametrize("args", EXEC_ARGUMENT_SETS)
def test_the_installed_command_execs_what_dry_run_prints(installed, recorder, args):
    args = [a.format(port=free_port(), port2=free_port()) for a in args]
    recorder.command = [str(installed / "ec2")]
    dry = recorder.run("--dry-run", *args)
    assert dry.returncode == 0, dry.stderr
    real = with_terminal(recorder, *args)
    assert real.returncode == 0, real.stderr
    assert recorder.argv() == shlex.split(dry.stdout)
