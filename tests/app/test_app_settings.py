"""Settings persist between windows, stay out of the user's real settings, and keep recent files tidy."""

from __future__ import annotations

from pathlib import Path

from bcu_gui.app.main_window import MainWindow
from bcu_gui.app.settings import MAX_RECENT, AppSettings


def test_settings_live_in_the_tests_private_folder(private_settings):
    assert Path(AppSettings().path).is_relative_to(private_settings)


def test_recent_files_keep_eight_newest_and_drop_missing_ones(tmp_path):
    s = AppSettings()
    files = []
    for i in range(MAX_RECENT + 2):
        f = tmp_path / f"m{i}.pt"
        f.write_bytes(b"x")
        files.append(f)
        s.add_recent_file(f)
    recent = s.recent_files()
    assert recent == [str(f.resolve()) for f in reversed(files)][:MAX_RECENT]
    files[-1].unlink()
    assert str(files[-1].resolve()) not in AppSettings().recent_files()
    s.add_recent_file(files[3])  # re-opening moves it to the top, without duplicates
    assert AppSettings().recent_files()[0] == str(files[3].resolve())
    assert len(set(AppSettings().recent_files())) == len(AppSettings().recent_files())


def test_training_settings_and_layout_come_back_in_a_new_window(qtbot, tmp_path):
    w = MainWindow()
    qtbot.addWidget(w)
    w.training_panel.epochs_spin.setValue(7)
    w.training_panel.lr_spin.setValue(0.005)
    w.training_panel.output.set_path(tmp_path)
    w.resize(1100, 700)
    w.close()
    w2 = MainWindow()
    qtbot.addWidget(w2)
    assert w2.training_panel.epochs_spin.value() == 7
    assert w2.training_panel.lr_spin.value() == 0.005
    assert w2.training_panel.output.path() == str(tmp_path)


def test_the_recent_files_menu_opens_a_file(qtbot, window, demo_env):
    window.settings.add_recent_file(demo_env / "model.pt")
    window._fill_recent_menu()
    actions = [a for a in window.recent_menu.actions() if a.text().endswith("model.pt")]
    assert len(actions) == 1
    actions[0].trigger()
    assert window.model_panel.model is not None
