# SPDX-License-Identifier: MIT
"""pip installs the package offline (no index, no build isolation: only
the setuptools and wheel already installed), and the installed copy finds
libvkv through VKV_LIBRARY."""
import os
import shutil
import subprocess
import sys

import pytest

import vkv
from conftest import BACKEND, ROOT


@pytest.mark.skipif(BACKEND != "host", reason="backend-independent: the host pass covers it")
def test_pip_install_offline(tmp_path):
    if subprocess.run([sys.executable, "-m", "pip", "--version"],
                      capture_output=True).returncode != 0:
        pytest.skip("pip is not installed for %s (Debian: python3-pip)" % sys.executable)
    src = tmp_path / "src"  # a copy: pip leaves build/ and *.egg-info behind
    shutil.copytree(os.path.join(ROOT, "python"), src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation",
                        "--no-index", "--no-deps", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    env = dict(os.environ, PYTHONPATH=str(target), VKV_LIBRARY=vkv.library_path())
    p = subprocess.run([sys.executable, "-c", "import vkv; print(vkv.__file__); "
                        "print(vkv.library_version())"], capture_output=True, text=True,
                       env=env, cwd=str(tmp_path), timeout=60)
    assert p.returncode == 0, p.stderr
    where, version = p.stdout.split()
    assert where.startswith(str(target)) and version == vkv.library_version()
