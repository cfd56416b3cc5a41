"""Several processes, one run: PyTorch's DistributedDataParallel under ``torchrun``, nothing of our own.

``torchrun --nproc-per-node N -m bcu_gui.cli cleanse ...`` (or ``bcu cleanse --nproc N``, which starts it)
runs N copies of the CLI. Each finds its place in the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and :func:`setup` joins the process group: NCCL with one GPU per
process (``cuda:LOCAL_RANK``) on CUDA machines, gloo on the CPU. The job then differs from a one-process run in
a few places only, all named here:

- **Data.** Every rank holds the unlabelled set and draws the same permutation each epoch from the seeded
  order generator; :meth:`Context.shard` takes this rank's part of it by DistributedSampler's rule (pad by
  wrapping to a multiple of N, then every N-th index from ``rank``). Same seed, same shards, run after run.
- **Batch size.** ``--batch-size`` (or the automatic choice) is the *global* batch: each rank takes
  ``ceil(B / N)`` images a step, so a run has the same steps an epoch, the same effective batch and the same
  learning rate on 1 or N processes, and its result does not depend on N beyond seed noise.
  Batch-norm statistics are per process (plain DDP), so each process's batch should stay >= 16.
- **The student** is wrapped in ``DistributedDataParallel`` for the training forward only
  (``Distiller.train_model``); the plain module is what is evaluated, averaged (EMA) and saved. The teacher
  runs locally on every rank, on that rank's images.
- **Rank 0 alone** decides the run folder, writes it (config, metrics, resume points, models, summary),
  evaluates ACC / ASR / agreement, scans, and prints. Other ranks get an evaluator with nothing to measure
  and print only their own errors.
- **Stopping.** After every step the ranks all-reduce ``[loss, stop]``: the plotted loss is the mean over
  ranks, a non-finite loss anywhere is seen everywhere, and a cancel or signal on any rank stops every rank
  before the same next step, so rank 0 saves its resume point and the others exit with it.
- **Failures.** torchrun ends the other workers when one exits with an error (SIGTERM, then SIGKILL 30 s
  later); a rank that is alive but stuck is given up after :data:`TIMEOUT` by the collectives' timeout, with
  a message naming the likely cause rather than a hang.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch
import torch.distributed as dist

from .errors import BcuError, ConfigError
from .training import Distiller, RunHook

TIMEOUT = timedelta(minutes=30)  # a rank waits this long for the others (rank 0 evaluates and scans alone)
T = TypeVar("T")


@dataclass(frozen=True)
class Placement:
    """Where this process sits in the run, as torchrun told it."""

    rank: int
    world_size: int
    local_rank: int


def placement(environ: Mapping[str, str] | None = None) -> Placement | None:
    """This process's place when torchrun started several; ``None`` for an ordinary single process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError("the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK) holds something other than "
                          "whole numbers") from None
    if world <= 1:
        return None
    if not 0 <= rank < world or local < 0:
        raise ConfigError(f"the torchrun environment is inconsistent: RANK {rank}, WORLD_SIZE {world}, "
                          f"LOCAL_RANK {local}")
    return Placement(rank, world, local)


def choose_device(request: str, local_rank: int, cuda_count: int | None = None) -> torch.device:
    """The device of a rank: ``cuda:LOCAL_RANK`` on a CUDA machine (unless the CPU was asked for), else the CPU.

    One GPU per process is the DDP rule; naming one GPU for every process would put them all on it, so a
    ``cuda:N`` request is refused rather than obeyed.
    """
    key = (request or "auto").strip().lower()
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if key == "cpu":
        return torch.device("cpu")
    if key in ("auto", "cuda"):
        if count == 0:
            if key == "cuda":
                raise ConfigError("device 'cuda' was asked for, but this machine has no usable CUDA GPU")
            return torch.device("cpu")
        if local_rank >= count:
            raise ConfigError(f"process {local_rank} on this machine has no GPU of its own: the machine has "
                              f"{count} GPU(s); start at most {count} processes a machine (--nproc-per-node)")
        return torch.device("cuda", local_rank)
    raise ConfigError(f"device '{request}' cannot be used with several processes: each process takes the GPU "
                      "of its local rank; use --device auto, cuda or cpu")


class Context:
    """This process's membership of a distributed run: its rank, device, and the few collectives the job needs."""

    def __init__(self, place: Placement, device: torch.device) -> None:
        self.place = place
        self.device = device

    @property
    def rank(self) -> int:
        return self.place.rank

    @property
    def world_size(self) -> int:
        return self.place.world_size

    @property
    def is_main(self) -> bool:
        return self.place.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"

    def describe(self) -> str:
        return f"{self.world_size} processes ({self.backend}); this is rank {self.rank} on {self.device}"

    # -- collectives ----------------------------------------------------------------------------------------
    def decide(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and hand its result (or its input error) to every rank.

        Used for what must be decided once: whether the run folder may be used, its path, the resume point.
        A ``BcuError`` on rank 0 is raised on every rank with the same message, so no rank waits for a rank
        that already gave up.
        """
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except BcuError as exc:
                box[0] = ("input", str(exc))
                dist.broadcast_object_list(box, src=0)
                raise
            except Exception as exc:
                box[0] = ("failed", f"{type(exc).__name__}: {exc}")
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "input":
            raise ConfigError(value)
        if status == "failed":
            raise RuntimeError(f"process 0 failed ({value}); see its message")
        return value

    def agree_step(self, loss: float, stop: bool) -> tuple[float, bool]:
        """The mean loss over ranks (NaN if any rank's is) and whether any rank wants to stop."""
        values = torch.tensor([loss, 1.0 if stop else 0.0], dtype=torch.float64,
                              device=self.device)
        dist.all_reduce(values)  # sum: NaN anywhere stays NaN; the stop count is > 0 if anyone stops
        total, stops = values.tolist()
        return total / self.world_size, stops > 0

    def mean(self, value: float) -> float:
        values = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        return float(values.item()) / self.world_size

    # -- the data and the batch -----------------------------------------------------------------------------
    def shard_size(self, images: int) -> int:
        """Images each rank sees an epoch: ``ceil(images / N)`` (DistributedSampler pads by wrapping)."""
        return math.ceil(images / self.world_size)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's part of an epoch's permutation (the same on every rank): DistributedSampler's rule."""
        total = self.shard_size(len(order)) * self.world_size
        if total > len(order):
            order = torch.cat([order, order[:total - len(order)]])
        return order[self.rank:total:self.world_size]

    def rank_batch(self, global_batch: int) -> int:
        """Images a rank takes a step for a global batch (at least 2: a batch of 1 breaks batch norm)."""
        return max(2, math.ceil(global_batch / self.world_size))

    def batch_note(self, global_batch: int, images: int) -> str:
        """What the log says about the batch of a run of several processes."""
        from .batching import steps_per_epoch

        per = self.rank_batch(global_batch)
        steps = steps_per_epoch(self.shard_size(images), per)
        used = per * self.world_size
        changed = f" (rounded up from {global_batch})" if used != global_batch else ""
        low = ("; below 16 images a process, batch-norm statistics get noisy: consider a larger batch"
               if per < 16 else "")
        return (f"{self.world_size} processes: the batch size is global, each process takes {per} images a step "
                f"(global batch {used}{changed}) from its {self.shard_size(images)}-image shard, {steps} steps "
                f"an epoch{low}")

    def barrier(self) -> None:
        """Wait for every rank (at the end of a run, while rank 0 saves)."""
        dist.barrier()

    def close(self) -> None:
        """Leave the process group (every rank, at the end of the run)."""
        if dist.is_initialized():
            dist.destroy_process_group()


def setup(device_request: str = "auto", environ: Mapping[str, str] | None = None) -> Context | None:
    """Join the process group when torchrun started several processes; ``None`` when it did not.

    The device comes from ``LOCAL_RANK`` (``torch.cuda.set_device`` before the group exists, so NCCL binds
    each process to its own GPU); the backend from the device: NCCL for CUDA, gloo for the CPU.
    """
    place = placement(environ)
    if place is None:
        return None
    device = choose_device(device_request, place.local_rank)
    ctx = Context(place, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return ctx


def check_world_size(config: dict | None, world_size: int) -> None:
    """A run resumes with as many processes as it started with: its batch and shards were cut for that many."""
    started = int(((config or {}).get("resolved") or {}).get("world_size", 1))
    if started != world_size:
        how = f"--nproc {started}" if started > 1 else "one process (no --nproc, no torchrun)"
        raise ConfigError(f"this run was started with {started} process(es) and cannot go on with {world_size}: "
                          f"its batch and data shards were cut for {started}; resume it with {how}")


_PEER_SIGNS = ("closed by peer", "connection reset", "broken pipe", "timed out", "timeout", "gloo", "nccl",
               "processgroup", "socket")


def is_peer_failure(exc: BaseException) -> bool:
    """Did a collective fail because another rank is gone or silent (not a bug of this one)?

    Gloo reports a dead peer as a plain ``RuntimeError`` ("Connection closed by peer"), NCCL and the store as
    ``torch.distributed.DistError``; both are told apart from this process's own errors by their text.
    """
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(sign in str(exc).lower() for sign in _PEER_SIGNS)


def peer_failure_message(exc: BaseException) -> str:
    """A sentence for a collective that failed: another rank died, or waited too long for this one."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0][:200]  # gloo: "[pair.cc:545] Read error ...: why. More"
    if "timeout" in text.lower() or "timed out" in text.lower():
        return (f"another process of this run stopped answering for {TIMEOUT.total_seconds() / 60:.0f} minutes "
                f"({text}); the run folder keeps its last completed epoch")
    return (f"another process of this run failed or was stopped ({text}); see its own message above; the run "
            "folder keeps its last completed epoch")


class DistributedHook(RunHook):
    """Puts the student under DistributedDataParallel and keeps the ranks' per-epoch numbers together.

    ``on_start`` wraps the student for the training forward, gives the step this rank's shard of each epoch's
    order, and gives ranks other than 0 augmentation draws of their own (seeded ``seed + 1000003 * rank``; on a
    resume, the states saved from every rank). ``on_epoch_end`` averages the epoch's loss over ranks and
    gathers the augmentation states, which rank 0's resume point saves (``state_dict``).
    """

    def __init__(self, ctx: Context, seed: int) -> None:
        self.ctx, self.seed = ctx, seed
        self.aug_states: list[torch.Tensor] | None = None
        self._pending: torch.Tensor | None = None

    def on_start(self, run: Distiller) -> None:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        run.train_model = DistributedDataParallel(run.student, device_ids=ids)
        run.shard_order = self.ctx.shard
        if self._pending is not None:
            run.aug_gen.set_state(self._pending)
            self._pending = None
        elif run.state.step == 0 and self.ctx.rank > 0:
            run.aug_gen.manual_seed(self.seed + 1_000_003 * self.ctx.rank)

    def on_epoch_end(self, run: Distiller) -> None:
        run.state.epoch_loss = self.ctx.mean(run.state.epoch_loss)
        states: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(states, run.aug_gen.get_state())
        self.aug_states = states
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"world_size": self.ctx.world_size, "aug_states": self.aug_states}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        states = state.get("aug_states")
        if states and int(state.get("world_size", 0)) == self.ctx.world_size:
            self._pending = states[self.ctx.rank]


class PeerFolder:
    """The run folder as ranks other than 0 see it: its path, and nothing written (rank 0 writes it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write_config(self, config: dict) -> None:
        pass

    def append_metrics(self, record: dict) -> None:
        pass

    def keep_metrics(self, epochs: int) -> None:
        pass

    def write_summary(self, summary: dict) -> None:
        pass

    def save_model(self, model, metadata: dict) -> list[Path]:
        return []
