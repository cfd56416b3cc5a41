"""Text from files is text on a terminal too (issue 19, point 7): a run folder's ``failed.json`` message,
``running.json``'s host and an unreadable file's name reach the terminal with their control characters
escaped, so none of them can retitle the window, clear the screen or reorder the line (bidi overrides)."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
from PIL import Image

from bcu_gui.cli import main
from bcu_gui.core.printable import elide, printable

TITLE = "\x1b]0;pwned\x07"  # OSC 0: set the terminal's title
CLEAR = "\x1b[2J"  # erase the screen


def _no_raw_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text and "\x9b" not in text, repr(text)


def test_printable_escapes_controls_bidi_and_surrogates_and_keeps_the_rest():
    assert printable(f"a{TITLE}b") == "a\\x1b]0;pwned\\x07b"
    assert printable("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert printable("one\ntwo\rthree") == "one\\x0atwo\\x0dthree"
    assert printable("one\ntwo", keep_newlines=True) == "one\ntwo"
    assert printable("csi\x9b2J") == "csi\\x9b2J" and printable("bad\udcff.png") == "bad\\udcff.png"
    assert printable("tab\tand ünïcödé, 数字 ✓") == "tab\tand ünïcödé, 数字 ✓"
    assert elide("a" * 50 + "b" * 50, 21) == "a" * 10 + "…" + "b" * 10 and elide("short", 21) == "short"


def test_watch_prints_a_hostile_host_and_failure_message_escaped(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "running.json").write_text(json.dumps({
        "pid": 1, "host": f"evil{TITLE}host{CLEAR}", "started": time.time(), "beat": time.time(), "beats": 1,
        "interval": 5.0}))

    def fail_later() -> None:
        time.sleep(0.6)
        (run / "failed.json").write_text(json.dumps({"message": f"boom{CLEAR}{TITLE}\u202egnp.exe", "kind": "x"}))
        os.unlink(run / "running.json")

    writer = threading.Thread(target=fail_later)
    writer.start()
    try:
        code = main(["watch", str(run), "--interval", "0.05"])
    finally:
        writer.join()
    out, err = capsys.readouterr()
    assert code == 1
    assert "evil\\x1b]0;pwned\\x07host\\x1b[2J" in err  # the host, while running
    assert "failed: boom\\x1b[2J\\x1b]0;pwned\\x07\\u202egnp.exe" in out  # the failure record, at the end
    _no_raw_controls(out + err)


def test_a_skipped_file_warning_prints_the_name_escaped(tiny_checkpoint, tmp_path, capsys):
    clean = tmp_path / "clean"
    for label in ("0", "1"):
        (clean / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(clean / label / f"{i}.png")
    (clean / "0" / f"bad{TITLE}.png").write_bytes(b"not a png")
    assert main(["evaluate", str(tiny_checkpoint), "--eval-clean", str(clean), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "bad\\x1b]0;pwned\\x07.png" in err
    _no_raw_controls(err)


def test_an_error_naming_a_hostile_file_prints_it_escaped(tmp_path, capsys):
    missing = tmp_path / f"model{CLEAR}\u202ept.exe"
    assert main(["inspect", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "model\\x1b[2J\\u202ept.exe" in err and len(err.strip().splitlines()) == 1
    _no_raw_controls(err)
