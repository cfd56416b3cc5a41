"""A folder someone else made is as hostile as their checkpoint (issue 19): run folders, the image cache.

Each case is built the way an attacker would build it, and each test asserts what the user must see: nothing
ran (a ``__reduce__`` pickle would write a marker file), nothing outside the folder changed (the hash of a
victim tree, a fake ``~/.ssh``), memory stayed bounded (the ``/dev/zero`` and NPZ-bomb cases run in a child
process under ``RLIMIT_AS``), nothing hung (a FIFO, under a timeout), and one clear line, exit 2, or one
damaged row in the library.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bcu_gui.cli import main
from bcu_gui.core import untrusted
from bcu_gui.core.job import CleanseConfig

REPO = Path(__file__).resolve().parents[2]
posix_only = pytest.mark.skipif(os.name != "posix", reason="FIFOs, /dev/zero and RLIMIT_AS are POSIX")


class _Payload:
    """Unpickling this runs ``exec``: it writes the marker file (the proof that code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": _Payload(marker)}, path)
    return path


def _images(folder: Path, n: int = 4, seed: int = 0, size: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.bmp")
    return folder


def _victim(tmp_path: Path) -> Path:
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAA the-owner\n")
    (ssh / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY----- secret\n")
    return ssh


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _unfinished_run(run: Path, **settings) -> Path:
    """A folder that ``--resume`` takes for an unfinished run: a run's config.json and nothing else."""
    run.mkdir(parents=True, exist_ok=True)
    cfg = CleanseConfig(**{"epochs": 1, "device": "cpu", "precision": "fp32", "out": str(run), **settings})
    (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "resolved": {}}))
    return run


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bcu: error: ") and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------- 1. trust is never read from disk


def test_resume_does_not_take_trust_from_the_run_folder(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    run = _unfinished_run(tmp_path / "run", checkpoint=str(_evil_checkpoint(tmp_path / "model.pt", marker)),
                          unlabeled=str(_images(tmp_path / "unl")), trust_checkpoint=True)
    assert main(["cleanse", "--resume", str(run)]) == 2
    assert not marker.exists()
    line = _one_error_line(capsys.readouterr().err)
    assert "--trust-checkpoint" in line and "config.json never grants it" in line


def test_config_file_does_not_take_trust_either(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    run = _unfinished_run(tmp_path / "shared", checkpoint=str(_evil_checkpoint(tmp_path / "model.pt", marker)),
                          unlabeled=str(_images(tmp_path / "unl")), trust_checkpoint=True)
    assert main(["cleanse", "--config", str(run / "config.json"), "--out", str(tmp_path / "new")]) == 2
    assert not marker.exists()
    assert "--trust-checkpoint" in _one_error_line(capsys.readouterr().err)


def test_relative_paths_in_a_config_are_refused_not_read_from_here(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "PWNED"
    _evil_checkpoint(tmp_path / "model.pt", marker)
    _images(tmp_path / "unl")
    run = _unfinished_run(tmp_path / "run", checkpoint="model.pt", unlabeled="unl", trust_checkpoint=True)
    monkeypatch.chdir(tmp_path)  # where the relative names would find the attacker's files
    assert main(["cleanse", "--resume", str(run), "--trust-checkpoint"]) == 2
    assert not marker.exists()
    line = _one_error_line(capsys.readouterr().err)
    assert "relative path (model.pt)" in line and "absolute path" in line


def test_paths_are_made_absolute_before_they_are_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = CleanseConfig(checkpoint="m.pt", unlabeled="unl", eval_clean="~/clean", cache_dir="c").with_absolute_paths()
    assert cfg.checkpoint == str(tmp_path / "m.pt") and cfg.unlabeled == str(tmp_path / "unl")
    assert cfg.cache_dir == str(tmp_path / "c") and cfg.eval_clean == str(Path("~/clean").expanduser())


def test_a_missing_image_folder_is_said_before_the_checkpoint_is_loaded(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    run = _unfinished_run(tmp_path / "run", checkpoint=str(_evil_checkpoint(tmp_path / "model.pt", marker)),
                          unlabeled=str(tmp_path / "moved-away"))
    assert main(["cleanse", "--resume", str(run), "--trust-checkpoint"]) == 2
    assert not marker.exists()  # even a trusted checkpoint is not opened for a run that cannot start
    assert "unlabelled image folder" in _one_error_line(capsys.readouterr().err)
    run = _unfinished_run(tmp_path / "run2", checkpoint=str(tmp_path / "gone.pt"), unlabeled=str(tmp_path))
    assert main(["cleanse", "--resume", str(run)]) == 2
    assert "gone.pt does not exist" in _one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------- 2. nothing written through a link


def test_resume_refuses_a_run_folder_holding_a_link(tmp_path, tiny_checkpoint, capsys):
    victim = _victim(tmp_path)
    before = _tree_hash(victim)
    run = _unfinished_run(tmp_path / "run", checkpoint=str(tiny_checkpoint), unlabeled=str(_images(tmp_path / "u")))
    (run / "resume.pt").write_bytes(b"")  # an unfinished run: --resume takes it
    (run / "original_form").symlink_to(victim)
    assert main(["cleanse", "--resume", str(run)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "original_form" in line and "symbolic link" in line
    assert _tree_hash(victim) == before


def test_the_original_form_is_never_written_through_a_link(tmp_path, tiny_resnet):
    from bcu_gui.core.models import load_model
    from bcu_gui.core.saveback import save_original_form

    victim = _victim(tmp_path)
    before = _tree_hash(victim)
    ckpt = tmp_path / "src" / "authorized_keys"  # the checkpoint named like the file to replace
    ckpt.parent.mkdir()
    torch.save(tiny_resnet.state_dict(), ckpt)
    model = load_model(ckpt)
    run = tmp_path / "run"
    run.mkdir()
    (run / "original_form").symlink_to(victim)
    files, warning = save_original_form(model, model.module, run)
    assert files == [] and "symbolic link" in warning and "\n" not in warning
    assert _tree_hash(victim) == before


def test_write_targets_below_a_run_folder_are_checked_for_links(tmp_path):
    run = tmp_path / "run"
    (run / "scan").mkdir(parents=True)
    untrusted.check_write_target(run, run / "scan" / "x.json")  # plain folders: fine
    (run / "out").symlink_to(tmp_path)
    with pytest.raises(untrusted.UntrustedFileError, match="out is a symbolic link"):
        untrusted.check_write_target(run, run / "out" / "x.json")


# ------------------------------------------------------------------------- 4. every reader of a run folder


def _finished_run(run: Path, name: str = "good") -> Path:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"checkpoint": f"/x/{name}.pt", "unlabeled": "/x/u", "epochs": 2}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 0.5, "acc": 0.9, "asr": 0.1}) + "\n")
    return run


def test_a_fifo_config_is_one_damaged_row_and_never_hangs(tmp_path):
    root = tmp_path / "runs"
    _finished_run(root / "good")
    bad = root / "bad"
    bad.mkdir(parents=True)
    os.mkfifo(bad / "config.json")
    (bad / "summary.json").write_text("{}")
    code = f"""
        from bcu_gui.core.run_library import scan_runs
        rows = [r for chunk in scan_runs([{str(root)!r}]) for r in chunk]
        print(sorted((r.path.name, r.status) for r in rows))
        print([r.note for r in rows if r.status == "damaged"])
    """
    out = _child(code, timeout=120)
    assert "[('bad', 'damaged'), ('good', 'unfinished')]" in out
    assert "not a regular file" in out


@pytest.mark.parametrize("text,why", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"checkpoint": "a.pt", "unlabeled": "u", "epochs": 1e999}', "too large"),
    ('{"checkpoint": "a.pt", "unlabeled": "u", "lr": NaN}', "not a number"),
    ('{"checkpoint": "a.pt", "unlabeled": "u", "seed": ' + "9" * 5000 + "}", "too long"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_a_bad_config_is_one_damaged_row_and_good_runs_stay_listed(tmp_path, text, why):
    from bcu_gui.core.run_library import scan_runs

    root = tmp_path / "runs"
    _finished_run(root / "good")
    bad = _finished_run(root / "bad")
    (bad / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    rows = {r.path.name: r for chunk in scan_runs([root]) for r in chunk}
    assert rows["good"].status == "unfinished" and rows["good"].epochs_done == 1
    assert rows["bad"].status == "damaged" and why in rows["bad"].note and "\n" not in rows["bad"].note


def test_a_heartbeat_with_an_impossible_pid_does_not_break_the_library(tmp_path):
    from bcu_gui.core.heartbeat import pid_alive
    from bcu_gui.core.run_library import scan_runs

    from bcu_gui.core.heartbeat import this_host

    run = _finished_run(tmp_path / "runs" / "r")
    (run / "running.json").write_text(json.dumps({"pid": 2**62, "host": this_host(), "started": 0, "beat": 0}))
    rows = [r for chunk in scan_runs([tmp_path / "runs"]) for r in chunk]
    assert [r.status for r in rows] == ["unfinished"]
    assert pid_alive(2**62) is False
    (run / "running.json").write_text('{"pid": ' + str(2**70) + ', "host": "x", "started": 0, "beat": 0}')
    assert [r.status for chunk in scan_runs([tmp_path / "runs"]) for r in chunk] == ["unfinished"]


def _child(code: str, timeout: float = 180, limit_extra: int | None = None) -> str:
    """Run ``code`` in a fresh interpreter (after imports, its address space is capped ``limit_extra``
    bytes above what it holds then); its stdout, or the test fails with its stderr."""
    prelude = """
        import resource, sys
        def cap(extra):
            size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
            resource.setrlimit(resource.RLIMIT_AS, (size + extra, size + extra))
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    body = textwrap.dedent(prelude) + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@posix_only
def test_dev_zero_as_config_is_refused_in_bounded_memory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").symlink_to("/dev/zero")
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 0.5}) + "\n")
    code = f"""
        import contextlib, io
        from pathlib import Path
        from bcu_gui.cli import main
        from bcu_gui.core.report import read_run
        from bcu_gui.core.watch import RunFollower
        import bcu_gui.core.job, bcu_gui.core.report_charts, bcu_gui.report_command, bcu_gui.watch_command
        cap(300 * 1024**2)
        run = Path({str(run)!r})
        print("report problems:", read_run(run).problems)
        print("watch:", RunFollower(run).poll().state)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            print("resume exit:", main(["cleanse", "--resume", str(run)]))
        print("resume says:", err.getvalue().strip())
        print("report exit:", main(["report", str(run), "-o", str(run.parent / "r.html")]))
    """
    out = _child(code, limit_extra=300 * 1024**2)
    assert "report problems: ['config.json is a symbolic link (to /dev/zero)" in out
    assert "watch: running" in out and "resume exit: 2" in out and "report exit: 0" in out
    assert "config.json is a symbolic link" in out.split("resume says:")[1].splitlines()[0]
    assert "symbolic link" in (tmp_path / "r.html").read_text()


@posix_only
def test_an_npz_bomb_is_refused_before_it_inflates(tmp_path):
    import zipfile
    from numpy.lib import format as npformat

    run = tmp_path / "run"
    run.mkdir()
    n = 600 * 1024**2 // 4  # 600 MB of float32 zeros: a few hundred kB compressed
    with zipfile.ZipFile(run / "features.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("epochs", "at_target", "classes", "meta"):
            with zf.open(f"{name}.npy", "w") as fh:
                npformat.write_array(fh, np.zeros(1, np.int64))
        with zf.open("clean.npy", "w", force_zip64=True) as fh:
            npformat.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
            chunk = bytes(16 * 1024**2)
            for _ in range(n * 4 // len(chunk)):
                fh.write(chunk)
        with zf.open("triggered.npy", "w") as fh:
            npformat.write_array(fh, np.zeros((1, 1, 2), np.float32))
    assert (run / "features.npz").stat().st_size < 5 * 1024**2
    code = f"""
        from bcu_gui.core.errors import ConfigError
        from bcu_gui.core.feature_space import load_frames
        cap(200 * 1024**2)
        try:
            load_frames({str(run)!r})
        except ConfigError as exc:
            print("refused:", exc)
    """
    out = _child(code, limit_extra=200 * 1024**2)
    assert "refused:" in out and "decompress to more than" in out and "features.npz" in out


def test_npz_members_that_claim_more_than_they_hold_or_hold_objects_are_refused(tmp_path):
    import zipfile
    from numpy.lib import format as npformat

    with zipfile.ZipFile(tmp_path / "a.npz", "w") as zf:
        with zf.open("x.npy", "w") as fh:
            npformat.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with pytest.raises(untrusted.UntrustedFileError, match="claims"):
        untrusted.load_npz(tmp_path, "a.npz")
    np.savez(tmp_path / "b.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(untrusted.UntrustedFileError, match="Python objects"):
        untrusted.load_npz(tmp_path, "b.npz")
    np.savez(tmp_path / "c.npz", x=np.arange(3))
    assert untrusted.load_npz(tmp_path, "c.npz")["x"].tolist() == [0, 1, 2]


@posix_only
def test_a_fifo_summary_or_metrics_never_blocks_a_reader(tmp_path):
    run = _finished_run(tmp_path / "run")
    for name in ("metrics.jsonl", "config.json"):
        (run / name).unlink()
        os.mkfifo(run / name)
    os.mkfifo(run / "summary.json")
    code = f"""
        from pathlib import Path
        from bcu_gui.core.report import read_run
        from bcu_gui.core.watch import RunFollower
        from bcu_gui.core.resume import folder_state
        run = Path({str(run)!r})
        print(read_run(run).problems)
        update = RunFollower(run).poll()
        print(update.state, update.message)
        print(folder_state(run).status)
    """
    out = _child(code, timeout=120)
    assert "metrics.jsonl is not a regular file" in out and "summary.json is not a regular file" in out
    assert "config.json is not a regular file" in out.splitlines()[0]
    assert "failed " in out and "summary.json is not a regular file" in out.splitlines()[1]
    assert out.splitlines()[2] == "foreign"


# ------------------------------------------------------------------------- 5. the disk cache


def _same_looking_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two folders with the same names, sizes and times, and other pixels."""
    a, b = _images(tmp_path / "a", 6, seed=1), _images(tmp_path / "b", 6, seed=2)
    for pa in a.iterdir():
        pb = b / pa.name
        assert pa.stat().st_size == pb.stat().st_size
        os.utime(pb, ns=(pa.stat().st_atime_ns, pa.stat().st_mtime_ns))
    return a, b


def test_the_cache_never_serves_another_folders_pixels(tmp_path):
    from bcu_gui.core.data import load_unlabeled
    from bcu_gui.core.image_cache import load_unlabeled_cached

    a, b = _same_looking_folders(tmp_path)
    cache = tmp_path / "cache"
    first = load_unlabeled_cached(a, 8, cache_dir=cache)
    second = load_unlabeled_cached(b, 8, cache_dir=cache)
    assert not second.reused
    assert torch.equal(second.images.images, load_unlabeled(b, 8).images)
    assert not torch.equal(first.images.images, second.images.images)


def _plant(cache: Path, folder: Path, size: int, record: dict, rows: bytes) -> None:
    from bcu_gui.core.data import unlabeled_files
    from bcu_gui.core.image_cache import cache_key

    _, root, files, _ = unlabeled_files(folder, size)
    key = cache_key(root, files, size)
    cache.mkdir(exist_ok=True)
    (cache / f"{key}.json").write_text(json.dumps({"key": key, **record}))
    (cache / f"{key}.u8").write_bytes(rows)


@pytest.mark.parametrize("case", ["white", "million", "outside"])
def test_a_planted_cache_record_is_treated_as_absent(tmp_path, case):
    from bcu_gui.core.data import load_unlabeled
    from bcu_gui.core.image_cache import CACHE_FORMAT, load_unlabeled_cached

    folder = _images(tmp_path / "imgs", 4)
    names = sorted(p.name for p in folder.iterdir())
    record = {"format": CACHE_FORMAT, "size": 8, "images": 4, "root": str(folder.resolve()), "files": names,
              "skipped": []}
    if case == "outside":
        record["files"] = ["/etc/shadow", "../../x.bmp", *names[2:]]
    if case == "million":  # 4 files announced as 1,000 images, with the rows to match
        record["images"], record["files"] = 1000, names * 250
    _plant(tmp_path / "cache", folder, 8, record, b"\xff" * (record["images"] * 3 * 8 * 8))  # all white
    got = load_unlabeled_cached(folder, 8, cache_dir=tmp_path / "cache")
    assert not got.reused and len(got.images) == 4
    assert torch.equal(got.images.images, load_unlabeled(folder, 8).images)
    assert all(Path(f).resolve().parent == folder.resolve() for f in got.images.files)


def test_a_genuine_cache_is_still_reused(tmp_path):
    from bcu_gui.core.image_cache import load_unlabeled_cached

    folder = _images(tmp_path / "imgs", 5)
    first = load_unlabeled_cached(folder, 8, cache_dir=tmp_path / "cache")
    again = load_unlabeled_cached(folder, 8, cache_dir=tmp_path / "cache")
    assert not first.reused and again.reused and torch.equal(first.images.images, again.images.images)


# ------------------------------------------------------------------------- 6. the report copies no other file


def test_the_report_does_not_follow_a_linked_config(tmp_path):
    from bcu_gui.core.report import write_report

    secret = tmp_path / "elsewhere" / "secrets.json"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"checkpoint": "x.pt", "api_token": "TOKEN-8d1f-SECRET"}))
    run = _finished_run(tmp_path / "run")
    (run / "config.json").unlink()
    (run / "config.json").symlink_to(secret)
    (run / "summary.json").symlink_to(secret)
    page = write_report(run, tmp_path / "r.html").read_text()
    assert "TOKEN-8d1f-SECRET" not in page
    assert "config.json is a symbolic link" in page


# ------------------------------------------------------------------------- the guard itself


@posix_only
def test_the_guard_refuses_links_fifos_and_oversized_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text('{"x": 1}')
    assert untrusted.read_json(tmp_path, "sub/a.json") == {"x": 1}
    (tmp_path / "via").symlink_to(tmp_path / "sub")
    with pytest.raises(untrusted.UntrustedFileError, match="via is a symbolic link"):
        untrusted.read_json(tmp_path, "via/a.json")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(untrusted.UntrustedFileError, match="not a regular file"):
        untrusted.read_bytes(tmp_path, "pipe")
    (tmp_path / "big").write_bytes(b" " * 2000)
    with pytest.raises(untrusted.UntrustedFileError, match="more than the 1,000"):
        untrusted.read_bytes(tmp_path, "big", max_bytes=1000)
    with pytest.raises(untrusted.UntrustedFileError, match="does not hold a JSON object"):
        untrusted.parse_json("[1]", "f")
    with pytest.raises(FileNotFoundError):
        untrusted.read_json(tmp_path, "none.json")
    error = untrusted.UntrustedFileError(tmp_path / "x", "line one\nline two")
    assert "\n" not in str(error) and isinstance(error, untrusted.ConfigError)


def test_the_apps_launched_run_says_trust_on_the_command_line(tmp_path):
    from bcu_gui import launcher

    cfg = CleanseConfig(checkpoint=str(tmp_path / "m.pt"), unlabeled=str(tmp_path / "u"), out=str(tmp_path / "r"),
                        trust_checkpoint=True)
    for run in (launcher.LaunchedRun(cfg, 2), launcher.LaunchedRun(cfg, 2, resume=True)):
        assert "--trust-checkpoint" in run.arguments(tmp_path / "s.json")  # the settings file cannot grant it
