"""The import layers hold: the core is the bottom, the CLI knows no Qt, only the app knows Qt.

Two checks, because each catches what the other misses: a static scan of every ``import`` statement
(including lazy ones inside functions, which a run-time check would only see if that code path ran), and a
run-time check of what importing the packages actually loads.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bcu_gui"
QT = ("PySide6", "pyqtgraph", "shiboken6", "qtpy", "superqt")

# (modules under the rule, forbidden import prefixes)
CONTRACTS = {
    "core imports neither the app, the CLI, the console, the shared front-end helpers nor the demo toolkit": (
        sorted((PACKAGE / "core").rglob("*.py")),
        ("bcu_gui.app", "bcu_gui.cli", "bcu_gui.console", "bcu_gui.common", "bcu_gui.demo", *QT)),
    "the CLI and its console import no Qt and nothing of the app": (
        [PACKAGE / "cli.py", PACKAGE / "console.py", PACKAGE / "common.py"], ("bcu_gui.app", *QT)),
    "the demo toolkit imports no Qt and nothing of the app": (
        sorted((PACKAGE / "demo").rglob("*.py")), ("bcu_gui.app", *QT)),
}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return imports_in(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                names.add(node.module or "")
                continue
            base = ".".join(package[:len(package) - (node.level - 1)])
            if node.module:
                names.add(f"{base}.{node.module}")
            else:  # from . import job, from .. import app
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _breaks(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("rule", list(CONTRACTS))
def test_import_contracts_hold_for_every_import_statement(rule):
    files, forbidden = CONTRACTS[rule]
    assert files, rule
    broken = {str(f.relative_to(PACKAGE.parent)): bad for f in files if (bad := _breaks(imported_modules(f), forbidden))}
    assert not broken, f"{rule}: {broken}"


def test_the_scanner_sees_relative_and_lazy_imports():
    """The contract check itself must be able to fail: lazy, relative imports of the app are caught."""
    source = "import torch\ndef f():\n    from ..app import worker\n    from .. import cli\n    from . import job\n"
    names = imports_in(source, "bcu_gui.core.probe")
    assert names == {"torch", "bcu_gui.app", "bcu_gui.cli", "bcu_gui.core.job"}
    assert _breaks(names, CONTRACTS[next(iter(CONTRACTS))][1]) == ["bcu_gui.app", "bcu_gui.cli"]


def test_core_and_cli_import_neither_qt_nor_pyqtgraph_at_run_time():
    code = (
        "import pkgutil, importlib, sys, bcu_gui.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module(f'bcu_gui.core.{m.name}')\n"
        "assert not [n for n in sys.modules if n.startswith(('bcu_gui.app', 'bcu_gui.demo', 'bcu_gui.cli'))]\n"
        "import bcu_gui.cli, bcu_gui.console\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {QT!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt modules imported by the core or the CLI: {out.stdout}"


def test_core_does_not_import_torchvision_until_a_torchvision_model_is_built():
    code = (
        "import sys, bcu_gui.core.job, bcu_gui.core.models, bcu_gui.core.archs as a\n"
        "from bcu_gui.core.nets import CifarResNet\n"
        "a.infer_architecture(CifarResNet([2,2,2,2], 10, 8).state_dict(), 'resnet18_cifar')\n"
        "print('torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
