"""Opening checkpoints: what the loader found, overrides, unreadable files, and the trust dialog."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bcu_gui.core.groups import layer_groups

sys.path.insert(0, str(Path(__file__).parent))
from app_helpers import PickledClassifier  # noqa: E402


def test_opening_the_demo_checkpoint_shows_the_detected_architecture(window, demo_env):
    w = window
    assert w.right_stack.currentWidget() is w.welcome  # welcome state until a model is loaded
    assert w.open_checkpoint(demo_env / "model.pt")
    p = w.model_panel
    assert "ResNet-18 (CIFAR-style), width 16" == p.arch_label.text()
    assert p.classes_label.text() == "10"
    assert p.input_label.text().startswith("32 × 32")
    assert p.params_label.text() == f"{p.model.parameter_count:,}"
    assert "cifar10" in p.norm_label.text()
    assert "architecture inferred" in p.notes_label.text()
    assert w.right_stack.currentWidget() is w.right_splitter
    assert not w.demo  # opened as a checkpoint, not as the demo
    assert [r.group.name for r in w.reinit_panel.rows] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert w.settings.recent_files() == [str((demo_env / "model.pt").resolve())]
    assert w.run_panel.start_button.isEnabled() is False
    assert "choose an unlabelled image folder" in w.run_panel.missing_label.text()


def test_overrides_reload_the_model_with_the_users_settings(window, demo_env):
    w = window
    assert w.open_checkpoint(demo_env / "model.pt")
    p = w.model_panel
    p.norm_combo.setCurrentText("none")
    p.size_spin.setValue(40)
    p.arch_combo.setCurrentIndex(p.arch_combo.findData("resnet18_cifar"))
    assert p.reload()
    assert p.model.normalization.name == "none" and p.model.input_size == 40
    assert "architecture named" in p.notes_label.text()
    config = w.build_config()
    assert (config.arch, config.input_size, config.normalize) == ("resnet18_cifar", 40, "none")


def test_an_unreadable_checkpoint_shows_a_dialog_and_the_app_stays_usable(window, messages, tmp_path, demo_env):
    w = window
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a checkpoint at all")
    assert not w.open_checkpoint(bad)
    assert messages.titles() == ["Cannot open the checkpoint"]
    assert "broken.pt" in messages.texts()
    assert w.model_panel.model is None
    assert w.open_checkpoint(demo_env / "model.pt")  # still usable


def test_a_wrong_architecture_override_is_a_dialog_and_keeps_the_loaded_model(window, messages, demo_env):
    w = window
    assert w.open_checkpoint(demo_env / "model.pt")
    p = w.model_panel
    p.arch_combo.setCurrentIndex(p.arch_combo.findData("preactresnet18"))
    assert not p.reload()
    assert messages.titles() == ["Cannot open the checkpoint"]
    assert p.model.arch_name == "resnet18_cifar"


def test_a_pickled_model_asks_for_trust_and_loads_only_when_trusted(window, messages, tmp_path):
    w = window
    path = tmp_path / "whole_model.pt"
    torch.save(PickledClassifier(), path)

    messages.trust = False
    assert not w.open_checkpoint(path)
    kind, title, text = messages.shown[-1]
    assert kind == "box" and title == "Trust this checkpoint?"
    assert "runs code" in text and "whole_model.pt" in text
    assert w.model_panel.model is None

    messages.trust = True
    assert w.open_checkpoint(path)
    model = w.model_panel.model
    assert model.source_format == "module" and model.num_classes == 10
    assert w.model_panel.trusted and "trusted" in w.model_panel.format_label.text()
    assert w.build_config().trust_checkpoint is True
    assert [r.group.name for r in w.reinit_panel.rows] == [g.name for g in layer_groups(model.module)]


def test_a_torchscript_file_asks_for_trust_and_runs_nothing_when_refused(window, messages, tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
    from checkpoint_helpers import VICTIM_TEXT, write_file_writing_torchscript

    path, victim = tmp_path / "scripted.pt", tmp_path / "victim.txt"
    write_file_writing_torchscript(path, victim)
    messages.trust = False
    assert not window.open_checkpoint(path)
    kind, title, text = messages.shown[-1]
    assert kind == "box" and title == "Trust this checkpoint?"
    assert "TorchScript" in text and "scripted.pt" in text
    assert window.model_panel.model is None
    assert victim.read_text() == VICTIM_TEXT


def test_a_backdoorbench_result_offers_its_own_test_data_and_says_where_settings_came_from(window, tmp_path, qtbot):
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
    import forms_helpers as fh
    from bcu_gui.core.nets import PreActResNet

    path = tmp_path / "attack_result.pt"
    fh.write_backdoorbench(path, "preactresnet18", PreActResNet([2, 2, 2, 2], 10, 8), "cifar10", 10)
    assert window.open_checkpoint(path)
    panel = window.model_panel
    assert "cifar10" in panel.norm_label.toolTip() and "metadata" in panel.input_label.toolTip()
    data = window.data_panel
    qtbot.waitUntil(lambda: data.bundled_check.isVisibleTo(window), timeout=10_000)  # sized off the GUI thread
    assert data.use_bundled()
    assert "poisoned test images" in data.curves_sentence()
    data.unlabeled.set_path(str(tmp_path))  # any folder: build_config only reads the fields
    assert window.build_config().use_bundled_eval is True
    data.bundled_check.setChecked(False)
    assert window.build_config().use_bundled_eval is False and "no ASR" in data.curves_sentence()


def test_a_bundled_memory_bomb_is_refused_in_the_panel_and_the_log_while_the_model_opens(window, tmp_path, qtbot):
    """Issue 19, point 3: 3,000 references to one 2048 px image (35 GB decoded) are sized off the GUI thread
    and refused; the model is loaded and the option to use the data is never offered."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
    import test_bundled_bombs as bombs

    path = bombs._write(tmp_path / "attack_result.pt", bombs._bd_test_of_one_image(3000, 2048))
    assert window.open_checkpoint(path) and window.model_panel.model is not None
    data = window.data_panel
    qtbot.waitUntil(lambda: "not used" in data.bundled_label.text(), timeout=20_000)
    assert "would decode to 35.2 GB" in data.bundled_label.text() and not data.bundled_check.isVisibleTo(window)
    assert not data.use_bundled() and "no ASR" in data.curves_sentence()
    assert any("would decode to 35.2 GB" in line for line in window.log_pane.lines())
