"""Distributed runs without starting processes: torchrun's environment, devices, shards, batches, the launcher.

The runs themselves (two gloo processes on the demo) are in tests/e2e/test_ddp_demo.py; the NCCL path cannot
run without several GPUs, so its set-up is checked here with the CUDA calls recorded instead of made.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import bcu_gui
from bcu_gui import launcher
from bcu_gui.core import distributed
from bcu_gui.core.distributed import Context, Placement
from bcu_gui.core.errors import ConfigError


def test_placement_is_none_outside_torchrun_and_for_one_process():
    assert distributed.placement({}) is None
    assert distributed.placement({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) is None
    assert distributed.placement({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Placement(3, 4, 1)


@pytest.mark.parametrize("env", [{"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "2", "WORLD_SIZE": "2"}])
def test_placement_refuses_a_broken_environment(env):
    with pytest.raises(ConfigError):
        distributed.placement(env)


def test_each_process_takes_the_gpu_of_its_local_rank():
    assert distributed.choose_device("auto", 1, cuda_count=4) == torch.device("cuda", 1)
    assert distributed.choose_device("cuda", 3, cuda_count=4) == torch.device("cuda", 3)
    assert distributed.choose_device("auto", 1, cuda_count=0) == torch.device("cpu")
    assert distributed.choose_device("cpu", 1, cuda_count=4) == torch.device("cpu")
    with pytest.raises(ConfigError, match="has 2 GPU"):
        distributed.choose_device("auto", 2, cuda_count=2)
    with pytest.raises(ConfigError, match="local rank"):
        distributed.choose_device("cuda:1", 0, cuda_count=4)
    with pytest.raises(ConfigError, match="no usable CUDA"):
        distributed.choose_device("cuda", 0, cuda_count=0)


def test_nccl_setup_binds_each_process_to_its_gpu_before_the_group_exists(monkeypatch):
    """What cannot run here (no GPUs): the device from LOCAL_RANK, set_device first, then NCCL bound to it."""
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **kw: calls.append(("init", backend, kw.get("device_id"), kw["timeout"])))
    ctx = distributed.setup("auto", {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert ctx is not None and ctx.device == torch.device("cuda", 1) and ctx.backend == "nccl"
    assert calls == [("set_device", torch.device("cuda", 1)),
                     ("init", "nccl", torch.device("cuda", 1), distributed.TIMEOUT)]
    assert not ctx.is_main and ctx.rank == 5


def test_cpu_setup_uses_gloo(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **kw: calls.append(backend))
    ctx = distributed.setup("cpu", {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert ctx is not None and ctx.is_main and ctx.device.type == "cpu" and calls == ["gloo"]


@pytest.mark.parametrize("images,world", [(400, 2), (401, 2), (10, 3), (7, 4)])
def test_shards_cover_every_image_equally_like_distributed_sampler(images, world):
    order = torch.randperm(images, generator=torch.Generator().manual_seed(0))
    shards = [Context(Placement(r, world, r), torch.device("cpu")).shard(order) for r in range(world)]
    size = -(-images // world)
    assert all(len(s) == size for s in shards)  # every rank takes as many steps
    seen = torch.cat(shards)
    assert set(seen.tolist()) == set(range(images))  # nothing left out; the padding repeats the first ones
    sampler = torch.utils.data.DistributedSampler(range(images), num_replicas=world, rank=1, shuffle=False)
    assert shards[1].tolist() == [order[i].item() for i in sampler]


def test_the_batch_is_global():
    ctx = Context(Placement(0, 2, 0), torch.device("cpu"))
    assert ctx.rank_batch(40) == 20 and ctx.rank_batch(41) == 21 and ctx.rank_batch(3) == 2
    note = ctx.batch_note(41, 400)
    assert "global batch 42 (rounded up from 41)" in note and "200-image shard, 10 steps an epoch" in note


def test_a_run_resumes_with_as_many_processes_as_it_started_with():
    distributed.check_world_size({"resolved": {"world_size": 2}}, 2)
    distributed.check_world_size({"resolved": {}}, 1)  # runs from before distributed training: one process
    with pytest.raises(ConfigError, match="--nproc 2"):
        distributed.check_world_size({"resolved": {"world_size": 2}}, 1)
    with pytest.raises(ConfigError, match="one process"):
        distributed.check_world_size({"resolved": {}}, 4)


def test_peer_failures_are_told_from_our_own_errors():
    gone = RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:8620. This is typically caused")
    assert distributed.is_peer_failure(gone)
    message = distributed.peer_failure_message(gone)
    assert message.startswith("another process of this run failed or was stopped (Connection closed by peer "
                              "[127.0.0.1]:8620)")
    assert not distributed.is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not distributed.is_peer_failure(ValueError("timeout"))


def test_the_launcher_passes_the_same_arguments_minus_nproc():
    argv = ["cleanse", "m.pt", "--unlabeled", "u", "--nproc", "2", "--epochs", "3", "--nproc=4", "--out", "r"]
    assert launcher.strip_nproc(argv) == ["cleanse", "m.pt", "--unlabeled", "u", "--epochs", "3", "--out", "r"]
    cmd = launcher.torchrun_command(["demo"], 3)
    assert cmd == [sys.executable, "-m", "bcu_gui.launcher", "--standalone", "--local-addr=127.0.0.1",
                   "--nproc-per-node=3", "-m", "bcu_gui.cli", "demo"]
    env = launcher.torchrun_env(2, {"PATH": "/bin"})
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(Path(bcu_gui.__file__).resolve().parent.parent)
    assert int(env["OMP_NUM_THREADS"]) >= 1 and env["PATH"] == "/bin"
    assert launcher.torchrun_env(2, {"OMP_NUM_THREADS": "7"})["OMP_NUM_THREADS"] == "7"


def test_cli_refuses_bad_nproc_before_starting_anything(tmp_path, capsys):
    from bcu_gui.cli import main

    assert main(["demo", "--nproc", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--nproc must be at least 1" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["demo", "--nproc", "2", "--device", "cpu", "--out", str(tmp_path / "mine")]) == 2
    assert "not a run folder" in capsys.readouterr().err



def test_the_apps_launched_run_reads_back_the_events_the_cli_prints(tmp_path):
    import json

    from bcu_gui.core.atomic import dumps
    from bcu_gui.core.events import EpochEnd, Started, to_record
    from bcu_gui.core.job import CleanseConfig

    started = Started(epochs=3, steps_per_epoch=10, images=400, device="cpu", teacher_acc=0.99, teacher_asr=1.0,
                      reinit_counts={"stem": 4}, reinit_totals={"stem": 8}, run_dir="r", batch_size=40)
    epoch = EpochEnd(epoch=1, epochs=3, loss=0.5, acc=0.9, asr=None, agreement=0.8, lr=0.01, temperature=2.0,
                     seconds=1.0, elapsed=1.0, extra={"ema_acc": 0.5})
    for event in (started, epoch):
        assert launcher._event(json.loads(dumps(to_record(event)))) == event
    cfg = CleanseConfig(checkpoint="m.pt", unlabeled="u", out=str(tmp_path / "run"))
    assert launcher.LaunchedRun(cfg, 2, scan=True).arguments(Path("s.json")) == \
        ["cleanse", "--config", "s.json", "--out", str(tmp_path / "run"), "--scan", "--json", "--nproc", "2"]
    assert launcher.LaunchedRun(cfg, 4, resume=True).arguments(Path("s.json")) == \
        ["cleanse", "--resume", str(tmp_path / "run"), "--json", "--nproc", "4"]


@pytest.mark.parametrize("codes, ruined", [
    ({0: 3}, True),                      # rank 0 said the verdict, the others ended cleanly
    ({0: 3, 1: -15}, True),              # torchrun stopped a rank still tearing down after rank 0's verdict
    ({0: 3, 1: 3}, True),
    ({0: -15, 1: 3}, False),             # rank 0 did not finish: a real failure
    ({0: 3, 1: 1}, False),               # another rank crashed
    ({1: 3}, False),
])
def test_a_ruined_verdict_is_told_from_a_failed_run(codes, ruined):
    assert launcher.ran_to_a_ruined_verdict(codes) is ruined
