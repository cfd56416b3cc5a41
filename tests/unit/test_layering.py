"""The engine stays Qt-free: importing all of bcu_gui.core (and the CLI) pulls in no Qt or pyqtgraph."""

import subprocess
import sys


def test_core_and_cli_import_neither_qt_nor_pyqtgraph():
    code = (
        "import pkgutil, importlib, sys, bcu_gui.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module(f'bcu_gui.core.{m.name}')\n"
        "import bcu_gui.cli, bcu_gui.console\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6', 'qtpy'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt modules imported by the core: {out.stdout}"


def test_core_does_not_import_torchvision_until_a_torchvision_model_is_built():
    code = (
        "import sys, bcu_gui.core.job, bcu_gui.core.models, bcu_gui.core.archs as a\n"
        "from bcu_gui.core.nets import CifarResNet\n"
        "a.infer_architecture(CifarResNet([2,2,2,2], 10, 8).state_dict(), 'resnet18_cifar')\n"
        "print('torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
