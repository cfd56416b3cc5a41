"""The frozen bundle (PyInstaller) and the .deb, run as a person would: no Python anywhere on PATH.

Run with ``.venv/bin/python -m pytest -m packaging tests/packaging`` (deselected by default). The tests use
the bundle in ``packaging/dist`` and build it with ``packaging/build.sh`` when it is missing (minutes, ~1 GB);
``BCU_PACKAGING_FLAVOUR`` picks the flavour (default ``cpu``). They need ``xvfb-run`` and Qt's xcb libraries
(packaging/README.md lists them); the .deb test also needs root and apt-get, and is skipped without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
DIST = PACKAGING / "dist"
FLAVOUR = os.environ.get("BCU_PACKAGING_FLAVOUR", "cpu")
NAME = f"bcu-studio-{FLAVOUR}"
SMOKE_TIMEOUT = 900  # seconds: start-up, the demo's 2-epoch cleansing on a slow shared CPU, saving
XVFB = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24"]


def _version() -> str:
    sys.path.insert(0, str(ROOT))
    try:
        from bcu_gui import __version__
    finally:
        sys.path.pop(0)
    return __version__


def _deb_path() -> Path | None:
    found = sorted(DIST.glob(f"{NAME}_{_version()}_*.deb"))
    return found[-1] if found else None


@pytest.fixture(scope="session")
def bundle() -> Path:
    """The bundle folder (``bcu-gui``, ``bcu``, ``_internal``), built first if it or its .deb is missing."""
    folder = DIST / NAME
    if not ((folder / "bcu-gui").is_file() and (folder / "bcu").is_file() and _deb_path()):
        proc = subprocess.run(["bash", str(PACKAGING / "build.sh"), "--flavour", FLAVOUR],
                              capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, f"build.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return folder


@pytest.fixture(scope="session")
def python_free_path(tmp_path_factory) -> str:
    """A PATH with the system's programs but no Python (no python*, pip*, pydoc*), as on a machine without it."""
    bin_dir = tmp_path_factory.mktemp("no-python-bin")
    for src in (Path("/usr/local/bin"), Path("/usr/bin"), Path("/bin")):
        if not src.is_dir():
            continue
        for prog in src.iterdir():
            if re.match(r"(python|pip|pydoc|idle|2to3|pyvenv)", prog.name) or (bin_dir / prog.name).exists():
                continue
            (bin_dir / prog.name).symlink_to(prog)
    path = str(bin_dir)
    assert shutil.which("python3", path=path) is None and shutil.which("python", path=path) is None
    return path


def _clean_env(path: str, home: Path) -> dict[str, str]:
    """Nothing from this test's environment: no PYTHON*, no virtualenv, no LD_LIBRARY_PATH, a fresh HOME."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "BCU_SETTINGS_ORG": "bcu-studio-packaging-tests"}


def _run_frozen(argv: list[str], path: str, home: Path, *, display: bool = False,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a frozen program with a clean environment; under Xvfb (xcb platform) when ``display``."""
    env = _clean_env(path, home)
    if not display:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb)")
    # xvfb-run runs with this process' environment; the app gets only `env` plus the display xvfb-run made.
    cmd = XVFB + ["sh", "-c", 'exec env -i DISPLAY="$DISPLAY" XAUTHORITY="$XAUTHORITY" "$@"', "sh"]
    cmd += [f"{key}={value}" for key, value in env.items()] + ["QT_QPA_PLATFORM=xcb"] + argv
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


NUMBER = r"([0-9]*\.?[0-9]+%?)"
METRIC = re.compile(rf"\b(ACC|ASR)\b\s*[=:]?\s*{NUMBER}(?:\s*(?:->|→)\s*{NUMBER})?")


def _summary(stdout: str) -> dict[str, float]:
    """The cleansed model's ACC and ASR (fractions) from the smoke summary line.

    Reads ``ACC 99.0% -> 97.5%, ASR 100.0% -> 3.1%`` (teacher -> cleansed: the value after the arrow) as well
    as ``ACC 0.975 ASR 0.031``.
    """
    for line in reversed(stdout.splitlines()):
        found = {name.lower(): after or before for name, before, after in METRIC.findall(line)}
        if {"acc", "asr"} <= found.keys():
            return {k: float(v[:-1]) / 100 if v.endswith("%") else float(v) for k, v in found.items()}
    raise AssertionError(f"no summary line with ACC and ASR in the output:\n{stdout[-3000:]}")


def _saved_model(stdout: str, out: Path) -> Path:
    """The .pt the smoke run saved: the one its summary line names (``saved PATH``), else OUT/cleansed*.pt."""
    named = re.findall(r"\bsaved (\S+\.pt)\b", stdout)
    if named:
        return Path(named[-1])
    found = sorted(out.glob("cleansed*.pt"))
    assert found, f"no cleansed*.pt in {out}: {sorted(p.name for p in out.iterdir())}"
    return found[0]


def _check_smoke(proc: subprocess.CompletedProcess, out: Path) -> dict[str, float]:
    """Exit 0, the three files saved, the model loads back into the demo's architecture, ACC/ASR add up."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    model = _saved_model(proc.stdout, out)
    assert model.parent.resolve() == out.resolve(), f"{model} is not in {out}"
    for suffix in (".pt", ".safetensors", ".json"):
        assert model.with_suffix(suffix).is_file(), f"{model.stem}{suffix} missing: {sorted(out.iterdir())}"
    metrics = _summary(proc.stdout)
    assert 0.0 <= metrics["acc"] <= 1.0 and 0.0 <= metrics["asr"] <= 1.0

    from bcu_gui.core.models import load_model
    from bcu_gui.demo import demo_dir

    demo = json.loads((demo_dir() / "model.json").read_text())
    cleansed = load_model(model)
    assert cleansed.arch_name == demo["arch"] and cleansed.num_classes == demo["num_classes"]
    assert cleansed.width == demo["width"] and cleansed.input_size == demo["input_size"]
    teacher = load_model(demo_dir() / "model.pt")
    assert set(cleansed.module.state_dict()) == set(teacher.module.state_dict())

    # the printed ACC is the saved model's: measure it again here, with the dev install
    from bcu_gui.core.devices import plan_compute
    from bcu_gui.core.evaluation import Evaluator, load_eval_sets

    sets = load_eval_sets(str(demo_dir() / "clean"), str(demo_dir() / "triggered"), demo["target_class"],
                          cleansed.input_size, cleansed.num_classes)
    measured = Evaluator(sets, cleansed.normalization, plan_compute("cpu", "fp32")).measure(cleansed.module)
    assert abs(measured["acc"] - metrics["acc"]) <= 0.02, (measured, metrics)
    assert abs(measured["asr"] - metrics["asr"]) <= 0.02, (measured, metrics)
    return metrics


def test_bundle_records_its_build_and_ships_the_demo(bundle):
    info = json.loads((bundle / "_internal" / "bcu_build.json").read_text())
    assert info["version"] == _version() and info["flavour"] == FLAVOUR
    assert (bundle / "_internal" / "resources" / "demo" / "model.pt").is_file()
    assert not list(bundle.glob("python*")), "the bundle must not rely on a python executable"
    if FLAVOUR == "cpu":
        assert info["cuda"] is None and info["torchvision"] is False
        assert not (bundle / "_internal" / "torchvision").exists()
    elif FLAVOUR == "cuda":  # torchvision's operator libraries, which the spec adds by hand
        assert info["cuda"] and info["torchvision"] is True
        assert (bundle / "_internal" / "torchvision" / "_C_stable.so").is_file()


def test_frozen_cli_inspects_the_demo_model(bundle, python_free_path, tmp_path):
    model = bundle / "_internal" / "resources" / "demo" / "model.pt"
    proc = _run_frozen([str(bundle / "bcu"), "inspect", str(model)], python_free_path, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "ResNet-18 (CIFAR-style), width 16" in proc.stdout and "classes        10" in proc.stdout
    for group in ("stem", "layer4", "head", "total"):
        assert f"  {group}" in proc.stdout

    proc = _run_frozen([str(bundle / "bcu"), "--version"], python_free_path, tmp_path / "home")
    assert proc.returncode == 0 and proc.stdout.strip() == f"bcu {_version()}"

    proc = _run_frozen([str(bundle / "bcu"), "archs"], python_free_path, tmp_path / "home")
    assert proc.returncode == 0 and "resnet18_cifar" in proc.stdout
    if FLAVOUR == "cpu":  # the CPU flavour ships without torchvision, and says so
        assert "not available in this build" in proc.stdout
    else:
        assert "convnext_tiny" in proc.stdout and "not available" not in proc.stdout


def test_frozen_app_smoke_cleanses_the_demo_under_xvfb(bundle, python_free_path, tmp_path):
    out = tmp_path / "smoke"
    proc = _run_frozen([str(bundle / "bcu-gui"), "--smoke", str(out)], python_free_path, tmp_path / "home",
                       display=True, timeout=SMOKE_TIMEOUT)
    _check_smoke(proc, out)


def test_deb_installs_runs_and_removes(bundle, python_free_path, tmp_path):
    deb = _deb_path()
    assert deb is not None, f"no {NAME}_*.deb in {DIST}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("installing the .deb needs root and apt-get")
    package = subprocess.run(["dpkg-deb", "-f", str(deb), "Package"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert package == NAME
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for leftover in ("bcu-studio-cpu", "bcu-studio-cuda"):  # from an earlier, interrupted run
        if subprocess.run(["dpkg", "-s", leftover], capture_output=True).returncode == 0:
            subprocess.run(["apt-get", "remove", "-y", leftover], env=env, capture_output=True, check=True)
    proc = subprocess.run(["apt-get", "install", "-y", f"./{deb.relative_to(ROOT)}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    try:
        for path in ("/usr/bin/bcu-gui", "/usr/bin/bcu", "/opt/bcu-studio/bcu-gui", "/opt/bcu-studio/bcu"):
            assert os.access(path, os.X_OK), path
        desktop = Path("/usr/share/applications/bcu-studio.desktop")
        assert desktop.is_file()
        entry = desktop.read_text()
        assert "Exec=/usr/bin/bcu-gui" in entry and "Icon=bcu-studio" in entry and "Type=Application" in entry
        if shutil.which("desktop-file-validate"):
            check = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
        icon = Path("/usr/share/icons/hicolor/256x256/apps/bcu-studio.png")
        assert icon.is_file() and icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path("/usr/share/icons/hicolor/scalable/apps/bcu-studio.svg").is_file()

        proc = _run_frozen(["/usr/bin/bcu", "--version"], python_free_path, tmp_path / "home")
        assert proc.returncode == 0 and proc.stdout.strip() == f"bcu {_version()}", proc.stderr
        out = tmp_path / "smoke-deb"
        proc = _run_frozen(["/usr/bin/bcu-gui", "--smoke", str(out)], python_free_path, tmp_path / "home",
                           display=True, timeout=SMOKE_TIMEOUT)
        _check_smoke(proc, out)
    finally:
        removed = subprocess.run(["apt-get", "remove", "-y", package], env=env, capture_output=True, text=True,
                                 timeout=600)
        assert removed.returncode == 0, removed.stdout[-2000:] + removed.stderr[-2000:]
    assert not Path("/usr/bin/bcu-gui").exists() and not Path("/opt/bcu-studio").exists()
    assert not Path("/usr/share/applications/bcu-studio.desktop").exists()
