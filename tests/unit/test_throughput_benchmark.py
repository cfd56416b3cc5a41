"""The throughput benchmark's pieces: the naive loop's data, the paired ratios, the JSON it writes (tiny config)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from bcu_gui.core.data import load_unlabeled, to_model_input

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_naive_loop_reads_the_same_pixels_the_engine_trains_on(bench, tmp_path):
    images = bench.source_images(6, "demo")
    folder = bench.write_folder(tmp_path, images)
    engine = load_unlabeled(folder, 32)
    assert torch.equal(engine.images, images)  # PNG is lossless: the folder holds exactly these images
    plain = bench.naive_dataset(folder, augment=False)
    mean = torch.tensor(bench.NORM.mean).view(1, 3, 1, 1)
    std = torch.tensor(bench.NORM.std).view(1, 3, 1, 1)
    expected = to_model_input(images, mean, std)
    got = torch.stack([plain[i][0] for i in range(len(plain))])
    assert got.shape == (6, 3, 32, 32) and torch.allclose(got, expected, atol=1e-5)
    augmented = bench.naive_dataset(folder)
    torch.manual_seed(0)
    assert augmented[0][0].shape == (3, 32, 32)
    assert any(not torch.allclose(augmented[i][0], expected[i]) for i in range(6))  # crops / flips happen


def test_the_naive_loop_trains_one_epoch_per_step_of_the_generator(bench, tmp_path):
    folder = bench.write_folder(tmp_path, bench.source_images(8, "demo"))
    loop = bench.naive_loop(folder, width=4, batch=4, device=torch.device("cpu"))
    assert next(loop) > 0 and next(loop) > 0
    loop.close()


def test_paired_ratios_are_medians_of_per_repeat_ratios(bench):
    assert bench.paired_ratio([2.0, 4.0, 3.0], [1.0, 1.0, 3.0]) == 2.0
    assert bench.paired_ratio(None, [1.0]) is None


def test_a_tiny_run_writes_every_figure_with_its_machine(bench, tmp_path, capsys):
    out = tmp_path / "r.json"
    bench.main(["--widths", "8", "--images", "8", "--steps", "2", "--repeats", "2", "--warmup", "1", "--threads", "1",
                "--variants", "naive", "bare", "engine-fp32", "engine", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["schema"] == bench.SCHEMA and result["benchmark"] == "throughput"
    machine = result["machine"]
    assert {"cpu_model", "avx512_bf16", "amx", "native_bf16", "torch", "threads"} <= set(machine)
    assert machine["threads"] == 1 and machine["torch"] == torch.__version__
    assert all(len(result["load_average"][k]) == 3 for k in ("start", "end"))
    assert result["settings"]["batch_size"] == 4
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["naive", "bare", "engine-fp32", "engine"]
    for row in rows.values():
        assert row["width"] == 8 and row["images_per_second"] > 0 and len(row["seconds"]) == 2
        assert len(row["warmup_seconds"]) == 1 and row["vs_bare_fp32"] > 0 and row["vs_naive"] > 0
    assert rows["bare"]["vs_bare_fp32"] == 1.0 and rows["naive"]["vs_naive"] == 1.0
    assert rows["engine-fp32"]["precision"] == "fp32" and not rows["engine-fp32"]["channels_last"]
    target = result["target"]
    assert target["needed"] == (2.0 if machine["native_bf16"] else 1.3)
    assert target["widths"]["8"]["ratio"] == rows["engine"]["vs_bare_fp32"]
    printed = capsys.readouterr().out
    assert "engine-fp32" in printed and "target (width 8)" in printed


def test_bad_sizes_are_refused(bench, tmp_path):
    with pytest.raises(SystemExit, match="at least twice"):
        bench.main(["--widths", "8", "--images", "3", "--steps", "2", "--out", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit, match="unknown variant"):
        bench.main(["--widths", "8", "--images", "8", "--steps", "2", "--variants", "fast",
                    "--out", str(tmp_path / "r.json")])


@pytest.mark.skip(reason="crashed the test process (segmentation fault in backward, width 4, 8 images) in a fresh-clone "
                         "run on an AVX2-only CPU on 2026-12-07 and hung alone; to investigate before re-enabling")
def test_the_gpu_goal_runs_the_whole_job_and_times_it(bench):
    g = bench.gpu_target("cpu", images=8, epochs=2, width=4, data="demo", log=lambda m: None)
    assert g["epochs"] == 2 and g["steps"] > 0 and g["run_seconds"] > 0 and g["training_seconds"] > 0
    assert g["met"] == (g["run_seconds"] < 30.0) and g["device"].startswith("cpu")
