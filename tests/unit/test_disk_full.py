"""A full disk: the specific message, nothing half-written under a final name, the trained model not lost."""

import torch

from bcu_gui.core import atomic
from bcu_gui.core.events import Failed
from bcu_gui.core.job import CleanseJob
from bcu_gui.core.models import load_model
from bcu_gui.core.training import RunHook

from test_atomic import _tiny_filesystem  # noqa: E402 (a real 256 kB tmpfs; skips where it cannot mount)
from test_job import _config, folders  # noqa: E402,F401


def test_a_run_folder_on_a_full_disk_fails_with_the_disk_message(tiny_checkpoint, folders, tmp_path):
    with _tiny_filesystem(tmp_path) as fs:
        failed = list(CleanseJob(_config(tiny_checkpoint, folders, tmp_path, out=str(fs / "run")),
                                 step_rate=0).events())[-1]
        assert isinstance(failed, Failed) and failed.kind == "disk", failed
        assert failed.message.startswith(f"the disk is full: could not write {fs}")
        leftovers = [p.name for p in (fs / "run").iterdir()]
        assert not [n for n in leftovers if n.endswith(".tmp") or n.startswith("cleansed")], leftovers


def test_a_disk_that_fills_during_training_keeps_the_model_to_save_elsewhere(tiny_checkpoint, folders, tmp_path,
                                                                              monkeypatch):
    real_free = atomic.free_bytes
    full = []

    class FillTheDisk(RunHook):
        def on_finish(self, run):
            full.append(True)

    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 1000 if full else real_free(folder))
    job = CleanseJob(_config(tiny_checkpoint, folders, tmp_path), hooks=[FillTheDisk()], step_rate=0)
    failed = list(job.events())[-1]
    run = tmp_path / "run"
    assert isinstance(failed, Failed) and failed.kind == "disk"
    assert "cleansed.pt" in failed.message and "kept in memory" in failed.message
    assert f"bcu cleanse --resume {run}" in failed.message
    assert not (run / "cleansed.pt").exists() and not list(run.glob(".*.tmp"))  # nothing half-written
    assert (run / "resume.pt").exists()  # and the last epoch is still there to resume from

    full.clear()  # another disk: the model trained in memory is saved there
    files = job.save_trained(tmp_path / "elsewhere" / "model.pt")
    assert [p.name for p in files] == ["model.pt", "model.safetensors", "model.json"]
    student = job.trained[0]
    saved = torch.load(files[0], weights_only=True)
    assert all(torch.equal(saved[k], v.cpu()) for k, v in student.state_dict().items())
    assert load_model(files[1]).arch_name == "resnet18_cifar"
