"""``bcu report``: the page's path on stdout, one line and exit 2 for a missing or foreign folder or a file that
exists (unless --force)."""

from __future__ import annotations

import pytest

from bcu_gui.cli import main


def test_report_writes_into_the_run_folder_by_default(demo_run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(demo_run_dir, run, ignore=shutil.ignore_patterns("*.pt", "*.safetensors", "report.html"))
    assert main(["report", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(run / "report.html")
    assert "file://" in err
    assert (run / "report.html").read_text().startswith("<!DOCTYPE html>")
    # a second time: refused in one line, the first page kept
    before = (run / "report.html").read_bytes()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--force" in err
    assert (run / "report.html").read_bytes() == before
    assert main(["report", str(run), "--force"]) == 0


def test_report_to_a_named_file(demo_run_dir, tmp_path, capsys):
    target = tmp_path / "pages" / "my run.html"
    assert main(["report", str(demo_run_dir), "-o", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert target.is_file() and not (demo_run_dir / "report.html").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "not a BCU run folder"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "not a folder"),
])
def test_bad_folders_are_one_line_and_exit_2(tmp_path, capsys, make, message):
    folder = make(tmp_path)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bcu: error: ") and message in err
    assert "Traceback" not in err


def test_report_needs_a_folder_argument(capsys):
    assert pytest.raises(SystemExit, main, ["report"]).value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
