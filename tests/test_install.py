"""pip install . puts a working ec2 on PATH."""

import subprocess
import sys
import venv

from conftest import ROOT, ec2


def test_pip_install_gives_a_working_ec2(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    done = subprocess.run([str(env_dir / "bin" / "ec2"), "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, f"ec2 {ec2.__version__}\n"), done.stderr
    # The installed copy is the script itself, so it also runs with no venv on PATH.
    assert (env_dir / "bin" / "ec2").read_text().startswith("#!")
    assert sys.version_info >= (3, 8)
