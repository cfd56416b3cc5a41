"""Image folders: background decode-checks, thumbnails, the curves sentence, and folder errors as dialogs."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image


def _images(folder, count, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _idle(qtbot, w):
    qtbot.waitUntil(lambda: not w.data_panel.is_checking(), timeout=20_000)


def test_picking_folders_counts_images_and_says_which_curves_will_exist(qtbot, window, demo_env, tmp_path):
    w = window
    assert w.open_checkpoint(demo_env / "model.pt")
    d = w.data_panel
    unlabeled = tmp_path / "unl"
    shutil.copytree(demo_env / "unlabeled", unlabeled)
    (unlabeled / "zz-broken.png").write_bytes(b"not a png")
    d.unlabeled.set_path(unlabeled)
    assert d.is_checking()  # the check runs in the background; the UI did not wait
    _idle(qtbot, w)
    state = d.state("unlabeled")
    assert (state.usable, state.skipped) == (64, 1)
    assert "64 usable images, 1 skipped" in d.unlabeled_status.text()
    assert sum(1 for label in d._thumb_labels if not label.isHidden()) == 8
    assert d.curves_sentence() == ("Curves: loss and teacher agreement always; no ACC: add a labelled clean "
                                   "folder; no ASR: add a triggered folder and target class.")
    assert w.run_panel.start_button.isEnabled()
    assert w.training_panel.keep() == "last" and not w.training_panel.can_keep("best")

    d.clean.set_path(demo_env / "clean")
    _idle(qtbot, w)
    assert "ACC because a clean folder is set" in d.curves_sentence()
    assert "50 usable images" in d.clean_status.text()

    d.triggered.set_path(demo_env / "triggered")
    _idle(qtbot, w)
    assert not w.run_panel.start_button.isEnabled()
    assert "set the target class" in w.run_panel.missing_label.text()
    d.target_spin.setValue(0)
    _idle(qtbot, w)
    assert w.run_panel.start_button.isEnabled()
    assert "ASR because a triggered folder and target class are set" in d.curves_sentence()
    assert "45 usable images" in d.triggered_status.text()
    assert w.training_panel.can_keep("best")
    config = w.build_config()
    assert (config.unlabeled, config.eval_clean, config.target_class) == (str(unlabeled),
                                                                         str(demo_env / "clean"), 0)


def test_an_empty_unlabelled_folder_is_a_dialog_and_blocks_start(qtbot, window, messages, demo_env, tmp_path):
    w = window
    assert w.open_checkpoint(demo_env / "model.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    w.data_panel.unlabeled.set_path(empty)
    _idle(qtbot, w)
    assert messages.titles() == ["Problem with the unlabelled folder"]
    assert "No images found" in messages.texts()
    assert not w.run_panel.start_button.isEnabled()
    assert "fix the unlabelled folder" in w.run_panel.missing_label.text()
    w.data_panel.unlabeled.set_path(demo_env / "unlabeled")  # the user fixes it: usable again
    _idle(qtbot, w)
    assert w.run_panel.start_button.isEnabled()


def test_one_usable_image_is_not_enough(qtbot, window, demo_env, tmp_path):
    w = window
    assert w.open_checkpoint(demo_env / "model.pt")
    w.data_panel.unlabeled.set_path(_images(tmp_path / "one", 1))
    _idle(qtbot, w)
    assert not w.run_panel.start_button.isEnabled()
    assert "at least 2 usable images" in w.run_panel.missing_label.text()


def test_a_clean_folder_with_a_class_beyond_the_model_is_a_dialog(qtbot, window, messages, demo_env, tmp_path):
    w = window
    assert w.open_checkpoint(demo_env / "model.pt")
    clean = tmp_path / "clean"
    _images(clean / "3", 2)
    _images(clean / "12", 2)
    w.data_panel.unlabeled.set_path(demo_env / "unlabeled")
    w.data_panel.clean.set_path(clean)
    _idle(qtbot, w)
    assert messages.titles() == ["Problem with the clean (ACC) folder"]
    assert "beyond the model's 10 classes" in messages.texts()
    assert not w.run_panel.start_button.isEnabled()
    assert "fix the clean folder" in w.run_panel.missing_label.text()
    w.data_panel.clean.set_path("")  # clearing the optional folder is a fix too
    _idle(qtbot, w)
    assert w.run_panel.start_button.isEnabled()


def test_the_demo_says_which_unlabelled_data_it_uses_and_switches(qtbot, window, demo_env):
    w = window
    assert w.open_demo()
    d = w.data_panel
    assert not d.demo_box.isHidden()
    assert "in-distribution held-out digits" in d.demo_note.text()
    d.demo_switch.click()
    assert d.unlabeled_path() == str(demo_env / "ood_unlabeled")
    assert "out-of-distribution photo crops" in d.demo_note.text() and "clean ACC collapsed" in d.demo_note.text()
    _idle(qtbot, w)
    assert d.state("unlabeled").usable == 16
    d.demo_switch.click()
    assert d.unlabeled_path() == str(demo_env / "unlabeled")
