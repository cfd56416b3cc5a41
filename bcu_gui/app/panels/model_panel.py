"""The suspicious model: open a checkpoint, see what the loader found, override what it guessed wrong.

Loading is synchronous behind a wait cursor (the models this app cleanses load in well under a second). A
file that needs full unpickling is never loaded silently: the user sees why that is risky and decides.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ...core.archs import REGISTRY
from ...core.errors import BcuError, UntrustedCheckpointError
from ...core.models import LoadedModel, load_model
from ...core.normalization import PRESETS
from .. import dialogs
from ..plain import NAME_LIMIT, html_text, plain, tip
from ..settings import AppSettings
from .common import wait_cursor

CHECKPOINT_FILTER = ("Checkpoints (*.pt *.pth *.bin *.ckpt *.tar *.safetensors *.torchscript *.zip);;"
                     "All files (*)")
AUTO = "auto"


class ModelPanel(QGroupBox):
    """Open / reload a checkpoint; emits ``model_changed`` with the ``LoadedModel`` after every good load."""

    model_changed = Signal(object)  # LoadedModel

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__("1 · Suspicious model", parent)
        self._settings = settings
        self.model: LoadedModel | None = None
        self.trusted = False

        self.open_button = QPushButton("Open checkpoint…")
        self.open_button.clicked.connect(self.choose_file)
        self.path_label = QLabel("No model loaded.")
        self.path_label.setWordWrap(True)
        self.path_label.setTextFormat(Qt.TextFormat.RichText)  # our markup; the names in it are escaped
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(self.open_button)
        top.addWidget(self.path_label, 1)

        self.arch_label, self.classes_label, self.input_label = QLabel("—"), QLabel("—"), QLabel("—")
        self.params_label, self.norm_label, self.format_label = QLabel("—"), QLabel("—"), QLabel("—")
        self.norm_label.setWordWrap(True)
        for label in (self.arch_label, self.classes_label, self.input_label, self.params_label, self.norm_label,
                      self.format_label):
            plain(label)  # metadata from the checkpoint (a custom normalisation's name, ...) is shown as text
        info = QFormLayout()
        info.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for label, widget in (("Architecture", self.arch_label), ("Classes", self.classes_label),
                              ("Input", self.input_label), ("Parameters", self.params_label),
                              ("Normalisation", self.norm_label), ("File format", self.format_label)):
            widget.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            info.addRow(label, widget)
        self.notes_label = plain(QLabel())  # notes quote the file's metadata
        self.notes_label.setWordWrap(True)
        self.notes_label.setStyleSheet("color: #555;")
        self.notes_label.setVisible(False)

        # Overrides: what the loader could only guess.
        self.arch_combo = QComboBox()
        self.arch_combo.addItem("auto (detect)", AUTO)
        for name, spec in REGISTRY.items():
            self.arch_combo.addItem(f"{spec.title} [{name}]", name)
        self.arch_combo.setToolTip("Force an architecture when detection picks the wrong one")
        self.size_spin = QSpinBox()
        self.size_spin.setRange(0, 1024)
        self.size_spin.setSpecialValueText("auto")
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip("Square input size the model expects (auto: metadata, else the architecture's)")
        self.norm_combo = QComboBox()
        self.norm_combo.setEditable(True)
        self.norm_combo.addItem(AUTO)
        for name in PRESETS:
            self.norm_combo.addItem(name)
        self.norm_combo.setToolTip("none | cifar10 | gtsrb | imagenet, or 'mean,std', or six numbers "
                                   "'m1,m2,m3,s1,s2,s3'")
        self.reload_button = QPushButton("Reload with these settings")
        self.reload_button.setEnabled(False)
        self.reload_button.clicked.connect(self.reload)
        overrides = QFormLayout()
        overrides.addRow("Architecture", self.arch_combo)
        overrides.addRow("Input size", self.size_spin)
        overrides.addRow("Normalisation", self.norm_combo)
        overrides.addRow("", self.reload_button)
        self.overrides_box = QGroupBox("Override detection")
        self.overrides_box.setLayout(overrides)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(info)
        layout.addWidget(self.notes_label)
        layout.addWidget(self.overrides_box)

    # -- overrides as load_model / CleanseConfig arguments -----------------------------------------------
    def arch_override(self) -> str | None:
        value = self.arch_combo.currentData()
        return None if value in (None, AUTO) else str(value)

    def size_override(self) -> int | None:
        return self.size_spin.value() or None

    def norm_override(self) -> str | None:
        text = self.norm_combo.currentText().strip()
        return None if not text or text.lower() == AUTO else text

    def config_fields(self) -> dict:
        """The CleanseConfig fields this panel stands for (the checkpoint and what overrides its detection)."""
        if self.model is None:
            raise RuntimeError("no model loaded")
        return {"checkpoint": str(self.model.path), "arch": self.arch_override(), "input_size": self.size_override(),
                "normalize": self.norm_override(), "trust_checkpoint": self.trusted}

    def reset_overrides(self) -> None:
        self.arch_combo.setCurrentIndex(0)
        self.size_spin.setValue(0)
        self.norm_combo.setCurrentText(AUTO)

    # -- loading -----------------------------------------------------------------------------------------
    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a suspicious checkpoint",
                                              self._settings.last_dir("checkpoint"), CHECKPOINT_FILTER)
        if path:
            self._settings.set_last_dir("checkpoint", path)
            self.reset_overrides()
            self.load(path)

    def reload(self) -> bool:
        if self.model is None:
            return False
        return self.load(self.model.path, trust=self.trusted)

    def load(self, path: str | Path, trust: bool = False) -> bool:
        """Load ``path`` with the current overrides; on failure show why and keep the previous model."""
        path = Path(path)
        try:
            with wait_cursor():
                model = load_model(path, arch=self.arch_override(), trust=trust,
                                   input_size=self.size_override(), normalize=self.norm_override())
        except UntrustedCheckpointError as exc:
            if dialogs.ask_trust(self.window(), path.name, str(exc)):
                return self.load(path, trust=True)
            return False
        except BcuError as exc:
            dialogs.error(self.window(), "Cannot open the checkpoint", str(exc))
            return False
        except MemoryError:
            dialogs.error(self.window(), "Cannot open the checkpoint",
                          f"{path.name} is too large to load into memory")
            return False
        except Exception as exc:  # torch and pickle raise many types for damaged files
            first_line = str(exc).splitlines()[0][:200] if str(exc) else "no details"
            dialogs.error(self.window(), "Cannot open the checkpoint",
                          f"{path.name} could not be read ({type(exc).__name__}: {first_line})")
            return False
        self.model, self.trusted = model, trust
        self._settings.add_recent_file(path)
        self._show(model)
        self.model_changed.emit(model)
        return True

    def _show(self, model: LoadedModel) -> None:
        # the file's name is anyone's text: escaped (a name like <img width=12000> must not draw) and elided
        self.path_label.setText(f"<b>{html_text(model.path.name, NAME_LIMIT)}</b><br>"
                                f"<span style='color:gray'>{html_text(model.path.parent, 2 * NAME_LIMIT)}</span>")
        self.path_label.setToolTip(tip(model.path))
        title = model.arch.title if model.arch else model.arch_name
        width = f", width {model.width}" if model.width else ""
        self.arch_label.setText(f"{title}{width}")
        self.classes_label.setText(str(model.num_classes))
        self.input_label.setText(f"{model.input_size} × {model.input_size} px, RGB")
        self.params_label.setText(f"{model.parameter_count:,}")
        self.norm_label.setText(model.normalization.describe())
        for label, setting in ((self.arch_label, "architecture"), (self.classes_label, "classes"),
                               (self.input_label, "input size"), (self.norm_label, "normalisation")):
            source = model.sources.get(setting)
            label.setToolTip(tip(f"{setting} from {source}") if source else "")
        trust = " (loaded as trusted: code from the file may run)" if self.trusted else ""
        self.format_label.setText(f"{model.source_format}{trust}")
        notes = [n for n in model.notes]
        self.notes_label.setText("\n".join(f"• {n}" for n in notes))
        self.notes_label.setVisible(bool(notes))
        self.reload_button.setEnabled(True)
