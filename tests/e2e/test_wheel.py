"""The built wheel works on its own: built from a clean copy of the source, installed into a fresh virtual
environment outside the checkout, ``bcu demo --epochs 1`` runs from there on the demo the wheel carries.

The fresh environment gets the shared interpreter's already-installed dependencies (torch, …) by a path
entry, added after the wheel is installed; only the path is added, none of that directory's ``.pth`` files
run, so the checkout's own editable install cannot stand in for the wheel (the test checks where
``bcu_gui`` and the demo are imported from).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from bcu_gui.core.outcome import EXIT_RUINED

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                    ".pytest_cache", "runs", "docs", "packaging", "tests", "benchmarks")


def _run(argv: list[str], ok: tuple[int, ...] = (0,), **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode in ok, f"{argv} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_wheel_carries_the_demo_and_icons_and_runs_the_demo_from_a_fresh_venv(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w",
          str(dist)])
    wheel = next(dist.glob("bcu_studio-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("bcu_gui/resources/demo/model.pt", "bcu_gui/resources/demo/unlabeled/00000.png",
                 "bcu_gui/resources/icons/bcu-studio.png"):
        assert name in names, name
    assert not any("__pycache__" in n for n in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)])
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                   .stdout.strip())
    (purelib / "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BCU_DEMO_DIR", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    where = _run([str(python), "-c", "import bcu_gui, bcu_gui.demo as d; print(bcu_gui.__file__); "
                  "print(d.demo_dir())"], cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(env_dir) for p in where), where  # the wheel's code and demo, not the checkout's

    proc = _run([str(env_dir / "bin" / "bcu"), "demo", "--epochs", "1", "--device", "cpu", "--precision", "fp32",
                 "--out", str(work / "run")], ok=(0, EXIT_RUINED), cwd=work, env=env)  # 1 epoch: judged ruined
    done = [line for line in proc.stdout.splitlines() if line.startswith("done in ")]
    assert done and "kept the last epoch (1)" in done[0], proc.stdout
    assert (work / "run" / "cleansed.safetensors").is_file() and (work / "run" / "summary.json").is_file()
