"""The images: the unlabelled folder BCU distils on, and the optional folders that measure ACC and ASR.

Each folder is decode-checked in a background task as soon as it is chosen (every file is opened, at a tiny
size so memory stays small), so the counts of usable and skipped images are real, and the UI never waits on
the disk. The panel also says, in one sentence, which curves the run will be able to draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from ...core.bundled import BundledInfo, inspect_bundled
from ...core.data import load_labeled, load_thumbnails, load_triggered, load_unlabeled, scan_images
from ...core.errors import BcuError
from .. import dialogs
from ..plain import plain, tip
from ..settings import AppSettings
from ..worker import BackgroundTask, run_task
from .common import FolderField

CHECK_SIZE = 16  # decode-check size: every file is really decoded, but stored tiny
THUMB_SIZE = 32
THUMB_COUNT = 8
MIN_UNLABELED = 2
OOD_NOTE = ("out-of-distribution photo crops. Measured on this small model (demo settings): ASR fell only to "
            "43% and clean ACC collapsed to 31%: photos teach a digits student too little.")
ID_NOTE = "in-distribution held-out digits (400 images the model never saw in training)."


@dataclass
class FolderState:
    """What the background check found out about one folder."""

    path: str = ""
    checking: bool = False
    usable: int | None = None
    skipped: int = 0
    error: str | None = None
    detail: str = ""


class DataPanel(QGroupBox):
    """Folder pickers with live decode-checks; ``changed`` fires whenever what the run could use changes."""

    changed = Signal()
    bundled_note = Signal(str)  # one line for the log about the checkpoint's own test data

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__("2 · Images", parent)
        self._settings = settings
        self._size = 32
        self._num_classes: int | None = None
        self._demo_root: Path | None = None
        self._states = {"unlabeled": FolderState(), "clean": FolderState(), "triggered": FolderState()}
        self._tasks: dict[str, BackgroundTask] = {}
        self._shown_errors: set[tuple[str, str, str]] = set()

        self.unlabeled = FolderField("unlabeled", "folder of unlabelled images (required)", settings)
        self.unlabeled_status = self._status_label()
        self.thumbs = QHBoxLayout()
        self.thumbs.setSpacing(3)
        self._thumb_labels: list[QLabel] = []
        for _ in range(THUMB_COUNT):
            label = QLabel()
            label.setFixedSize(THUMB_SIZE + 2, THUMB_SIZE + 2)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setStyleSheet("border: 1px solid palette(mid);")
            label.setVisible(False)
            self._thumb_labels.append(label)
            self.thumbs.addWidget(label)
        self.thumbs.addStretch(1)

        self.demo_note = QLabel()
        self.demo_note.setWordWrap(True)
        self.demo_switch = QPushButton()
        self.demo_switch.clicked.connect(self._switch_demo_data)
        demo_row = QVBoxLayout()
        demo_row.addWidget(self.demo_note)
        demo_row.addWidget(self.demo_switch, 0, Qt.AlignmentFlag.AlignLeft)
        self.demo_box = QWidget()
        self.demo_box.setLayout(demo_row)
        demo_row.setContentsMargins(0, 0, 0, 0)
        self.demo_box.setVisible(False)

        self.clean = FolderField("clean", "labelled clean images, one sub-folder per class (for ACC)", settings)
        self.clean_status = self._status_label()
        self.triggered = FolderField("triggered", "images with the trigger stamped on (for ASR)", settings)
        self.triggered_status = self._status_label()
        self.target_spin = QSpinBox()
        self.target_spin.setRange(-1, 9999)
        self.target_spin.setSpecialValueText("not set")
        self.target_spin.setValue(-1)
        self.target_spin.setToolTip("The class the backdoor sends triggered images to")
        self._target_timer = QTimer(self)
        self._target_timer.setSingleShot(True)
        self._target_timer.setInterval(300)
        self._target_timer.timeout.connect(lambda: self._check("triggered"))
        self.target_spin.valueChanged.connect(self._on_target_changed)

        # BackdoorBench results carry the attack's own test data: offered when the loaded model has some
        self.bundled_check = QCheckBox("Use the test data inside the checkpoint")
        self.bundled_check.setChecked(True)
        self.bundled_check.setVisible(False)
        self.bundled_check.toggled.connect(lambda _: self._refresh())
        self.bundled_label = QLabel()
        self.bundled_label.setWordWrap(True)  # a long description must not widen the column
        self.bundled_label.setTextFormat(Qt.TextFormat.PlainText)
        self.bundled_label.setStyleSheet("color: gray; margin-left: 22px;")
        self.bundled_label.setVisible(False)
        self._bundled: str | None = None

        self.curves_label = plain(QLabel())
        self.curves_label.setWordWrap(True)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Unlabelled", self.unlabeled)
        form.addRow("", self.unlabeled_status)
        form.addRow("", self._wrap(self.thumbs))
        form.addRow("", self.demo_box)
        form.addRow("Clean (ACC)", self.clean)
        form.addRow("", self.clean_status)
        form.addRow("Triggered (ASR)", self.triggered)
        form.addRow("", self.triggered_status)
        form.addRow("Target class", self.target_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.bundled_check)
        layout.addWidget(self.bundled_label)
        layout.addWidget(self.curves_label)

        self.unlabeled.changed.connect(lambda _: self._check("unlabeled"))
        self.clean.changed.connect(lambda _: self._check("clean"))
        self.triggered.changed.connect(lambda _: self._check("triggered"))
        self._refresh()

    @staticmethod
    def _status_label() -> QLabel:
        label = plain(QLabel())  # says what a folder holds: file names, errors naming them
        label.setWordWrap(True)
        label.setVisible(False)
        return label

    @staticmethod
    def _wrap(layout) -> QWidget:
        w = QWidget()
        layout.setContentsMargins(0, 0, 0, 0)
        w.setLayout(layout)
        return w

    # -- public state ------------------------------------------------------------------------------------
    def set_model(self, input_size: int, num_classes: int) -> None:
        """The model decides the decode size of thumbnails and the valid class range: re-check what depends on it."""
        changed = num_classes != self._num_classes
        self._size, self._num_classes = input_size, num_classes
        self.target_spin.setMaximum(num_classes - 1)
        if changed:
            self._check("clean")
            self._check("triggered")

    def check_bundled(self, raw: Any, size: int) -> None:
        """Size up the loaded checkpoint's own test data in a background task (a hostile file can make even
        counting its records slow); the answer arrives through :meth:`set_bundled` or :meth:`set_bundled_refused`,
        and the line for the log through ``bundled_note``. A newer model's check replaces an older one."""
        previous = self._tasks.pop("bundled", None)
        if previous is not None:
            previous.cancel()
        self.set_bundled(None)
        if raw is None or getattr(raw, "format", None) != "backdoorbench":
            return
        self.bundled_label.setText("Checking the test data inside the checkpoint…")
        self.bundled_label.setVisible(True)
        task = run_task(lambda report: inspect_bundled(raw, size))
        self._tasks["bundled"] = task
        task.result.connect(lambda info, t=task: self._on_bundled(t, info))
        task.error.connect(lambda exc, t=task: self._on_bundled(t, exc))

    def _on_bundled(self, task: BackgroundTask, info: Any) -> None:
        if not self._current("bundled", task):
            return
        self._tasks.pop("bundled", None)
        if isinstance(info, BaseException):  # not expected: inspect_bundled turns odd files into refusals
            info = BundledInfo(None, f"the checkpoint's test data could not be checked ({type(info).__name__})")
        if info is not None and info.refusal:
            self.set_bundled_refused(info.refusal)
            self.bundled_note.emit(f"bundled test data: {info.refusal}")
        else:
            self.set_bundled(info.description if info is not None else None)
            if info is not None and info.description:
                self.bundled_note.emit(f"the checkpoint holds {info.description}")

    def set_bundled_refused(self, reason: str) -> None:
        """The checkpoint holds test data that is not offered: say why, in place of the option."""
        self.set_bundled(None)
        self.bundled_label.setText(f"⚠ The checkpoint's own test data is not used: {reason}.")
        self.bundled_label.setVisible(True)

    def set_bundled(self, description: str | None) -> None:
        """What evaluation data the loaded checkpoint itself holds (None: nothing); shown as an option."""
        self._bundled = description
        self.bundled_check.setVisible(description is not None)
        self.bundled_label.setText(f"The file holds {description}." if description else "")
        self.bundled_label.setVisible(description is not None)
        self.bundled_check.setToolTip(
            "The file holds the attack's own test data. It is used for whatever the folders above leave out "
            "(the poisoned images only when no triggered folder is given).")
        self._refresh()

    def use_bundled(self) -> bool:
        """Whether a run may fill missing evaluation sets from the checkpoint's own test data."""
        return self._bundled is not None and self.bundled_check.isChecked()

    def set_folders(self, unlabeled: str | None, clean: str | None, triggered: str | None,
                    target: int | None) -> None:
        self.target_spin.blockSignals(True)
        self.target_spin.setValue(-1 if target is None else target)
        self.target_spin.blockSignals(False)
        self.unlabeled.set_path(unlabeled)
        self.clean.set_path(clean)
        self.triggered.set_path(triggered)
        self._check("triggered")  # the target may have changed even if the folder did not

    def set_demo_root(self, root: Path | None) -> None:
        self._demo_root = Path(root) if root else None
        self._refresh()

    def unlabeled_path(self) -> str | None:
        return self.unlabeled.path() or None

    def clean_path(self) -> str | None:
        return self.clean.path() or None

    def triggered_path(self) -> str | None:
        return self.triggered.path() or None

    def target_class(self) -> int | None:
        value = self.target_spin.value()
        return None if value < 0 else value

    def config_fields(self) -> dict:
        """The CleanseConfig fields this panel stands for (the target class only with a triggered folder)."""
        triggered = self.triggered_path()
        return {"unlabeled": self.unlabeled_path() or "", "eval_clean": self.clean_path(),
                "eval_poisoned": triggered, "target_class": self.target_class() if triggered else None,
                "use_bundled_eval": self.use_bundled()}

    def state(self, role: str) -> FolderState:
        return self._states[role]

    def is_checking(self) -> bool:
        return any(s.checking for s in self._states.values())

    def acc_available(self) -> bool:
        s = self._states["clean"]
        return bool(s.path) and s.error is None

    def asr_available(self) -> bool:
        s = self._states["triggered"]
        return bool(s.path) and s.error is None and self.target_class() is not None

    def is_demo_ood(self) -> bool | None:
        """For the demo's own folders: True for the photo crops, False for the digits, None otherwise."""
        if self._demo_root is None or not self.unlabeled.path():
            return None
        chosen = Path(self.unlabeled.path()).resolve()
        if chosen == (self._demo_root / "unlabeled").resolve():
            return False
        if chosen == (self._demo_root / "ood_unlabeled").resolve():
            return True
        return None

    def problems(self) -> list[str]:
        """What stops a run from starting, as short phrases for the line under Start."""
        out: list[str] = []
        u = self._states["unlabeled"]
        if not u.path:
            out.append("choose an unlabelled image folder")
        elif u.checking:
            out.append("checking the unlabelled folder…")
        elif u.error:
            out.append("fix the unlabelled folder")
        elif (u.usable or 0) < MIN_UNLABELED:
            out.append(f"the unlabelled folder needs at least {MIN_UNLABELED} usable images")
        for role, name in (("clean", "clean"), ("triggered", "triggered")):
            s = self._states[role]
            if s.path and s.checking:
                out.append(f"checking the {name} folder…")
            elif s.path and s.error:
                out.append(f"fix the {name} folder (or clear it)")
        if self._states["triggered"].path and self.target_class() is None:
            out.append("set the target class for the triggered folder")
        return out

    def curves_sentence(self) -> str:
        """Which curves the run will draw, and what to add for the missing ones."""
        parts = ["loss and teacher agreement always"]
        inside = self.use_bundled()
        if self.acc_available():
            parts.append("ACC because a clean folder is set")
        elif inside and "clean test set" in (self._bundled or ""):
            parts.append("ACC from the checkpoint's clean test set")
        else:
            parts.append("no ACC: add a labelled clean folder")
        if self.asr_available():
            parts.append("ASR because a triggered folder and target class are set")
        elif self._states["triggered"].path and self._states["triggered"].error is None:
            parts.append("no ASR yet: set the target class")
        elif inside and "poisoned test images" in (self._bundled or ""):
            parts.append("ASR from the checkpoint's poisoned test images (its target class)")
        else:
            parts.append("no ASR: add a triggered folder and target class")
        text = "; ".join(parts)
        return f"Curves: {text[0].lower()}{text[1:]}."

    def cancel_checks(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    # -- checks ------------------------------------------------------------------------------------------
    def _on_target_changed(self, _value: int) -> None:
        self._refresh()
        if self.triggered.path():
            self._states["triggered"].checking = True
            self._refresh()
            self._target_timer.start()

    def _check(self, role: str) -> None:
        """Start (or restart) the background decode-check of one folder; a stale check's result is ignored."""
        previous = self._tasks.pop(role, None)
        if previous is not None:
            previous.cancel()
        path = {"unlabeled": self.unlabeled, "clean": self.clean, "triggered": self.triggered}[role].path()
        self._states[role] = FolderState(path=path, checking=bool(path))
        self._status(role).setText("checking…")
        if role == "unlabeled":
            self._show_thumbs([])
        if path:
            fn = self._check_fn(role, path)
            task = run_task(fn)
            self._tasks[role] = task
            task.progress.connect(lambda value, r=role, t=task: self._on_progress(r, t, value))
            task.result.connect(lambda value, r=role, t=task: self._on_result(r, t, value))
            task.error.connect(lambda exc, r=role, t=task: self._on_error(r, t, exc))
        self._refresh()

    def _check_fn(self, role: str, path: str) -> Callable[[Callable[[Any], None]], Any]:
        size, classes, target = self._size, self._num_classes, self.target_class()

        def progress(report: Callable[[Any], None]) -> Callable[[int, int], None]:
            return lambda done, total: report(("progress", done, total))

        if role == "unlabeled":
            def check(report):
                files = scan_images(path)
                report(("found", len(files)))
                report(("thumbs", load_thumbnails(files[:THUMB_COUNT], THUMB_SIZE)))
                images = load_unlabeled(path, CHECK_SIZE, progress=progress(report))
                return len(images), len(images.skipped), images.skipped_summary() or ""
        elif role == "clean":
            def check(report):
                images = load_labeled(path, CHECK_SIZE, num_classes=classes, progress=progress(report))
                present = len(set(images.labels.tolist())) if images.labels is not None else 0
                return len(images), len(images.skipped), f"{present} classes"
        else:
            def check(report):
                if target is None:
                    files = scan_images(path)
                    if not files:
                        load_unlabeled(path, CHECK_SIZE)  # raises the engine's "no images found" error
                    return len(files), 0, "not decode-checked until the target class is set"
                images = load_triggered(path, CHECK_SIZE, target, num_classes=classes,
                                        progress=progress(report))
                return len(images), len(images.skipped), f"non-target images, target class {target}"
        return check

    def _current(self, role: str, task: BackgroundTask) -> bool:
        return self._tasks.get(role) is task

    def _on_progress(self, role: str, task: BackgroundTask, value: tuple) -> None:
        if not self._current(role, task):
            return
        label = self._status(role)
        if value[0] == "thumbs":
            self._show_thumbs(value[1])
        elif value[0] == "found":
            label.setText(f"found {value[1]:,} image files; decode-checking…")
        elif value[0] == "progress":
            label.setText(f"decode-checking {value[1]:,} of {value[2]:,} images…")

    def _on_result(self, role: str, task: BackgroundTask, value: tuple) -> None:
        if not self._current(role, task):
            return
        usable, skipped, note = value
        self._states[role] = FolderState(self._states[role].path, False, usable, skipped, None, note)
        self._tasks.pop(role, None)
        self._refresh()

    def _on_error(self, role: str, task: BackgroundTask, exc: BaseException) -> None:
        if not self._current(role, task):
            return
        self._tasks.pop(role, None)
        path = self._states[role].path
        if isinstance(exc, BcuError):
            message = str(exc)
        else:
            message = f"unexpected error while checking {path}: {type(exc).__name__}: {exc}"
        self._states[role] = FolderState(path, False, None, 0, message)
        if role == "unlabeled":
            self._show_thumbs([])
        self._refresh()
        key = (role, path, message)
        if key not in self._shown_errors:  # once per problem, not on every re-check
            self._shown_errors.add(key)
            name = {"unlabeled": "unlabelled", "clean": "clean (ACC)", "triggered": "triggered (ASR)"}[role]
            dialogs.warning(self.window(), f"Problem with the {name} folder", message)

    # -- display -----------------------------------------------------------------------------------------
    def _status(self, role: str) -> QLabel:
        return {"unlabeled": self.unlabeled_status, "clean": self.clean_status,
                "triggered": self.triggered_status}[role]

    def _refresh(self) -> None:
        for role, s in self._states.items():
            label = self._status(role)
            label.setVisible(bool(s.path))
            if not s.path:
                continue
            if s.checking:
                label.setStyleSheet("color: gray;")
            elif s.error:
                label.setText(f"⚠ {s.error}")
                label.setStyleSheet("color: #b00020;")
            else:
                skipped = f", {s.skipped:,} skipped (unreadable)" if s.skipped else ", none skipped"
                extra = f" · {s.detail}" if s.detail and role != "unlabeled" else ""
                low = (role == "unlabeled" and (s.usable or 0) < MIN_UNLABELED)
                label.setText(f"{'⚠ ' if low else '✓ '}{s.usable:,} usable images{skipped}{extra}")
                label.setStyleSheet("color: #b00020;" if low else "color: #1b5e20;")
            label.setToolTip(tip(s.detail) if s.skipped else "")  # names the skipped files
        ood = self.is_demo_ood()
        self.demo_box.setVisible(ood is not None)
        if ood is not None:
            self.demo_note.setText("<b>Demo data:</b> " + (OOD_NOTE if ood else ID_NOTE))
            self.demo_switch.setText("Use the in-distribution digits instead" if ood
                                     else "Try out-of-distribution photo crops instead")
        self.curves_label.setText(self.curves_sentence())
        self.changed.emit()

    def _show_thumbs(self, thumbs: list[np.ndarray]) -> None:
        for i, label in enumerate(self._thumb_labels):
            if i < len(thumbs):
                arr = np.ascontiguousarray(thumbs[i])
                h, w = arr.shape[:2]
                image = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
                label.setPixmap(QPixmap.fromImage(image))
                label.setVisible(True)
            else:
                label.clear()
                label.setVisible(False)

    def _switch_demo_data(self) -> None:
        if self._demo_root is None:
            return
        ood = self.is_demo_ood()
        self.unlabeled.set_path(self._demo_root / ("unlabeled" if ood else "ood_unlabeled"))
