"""Ratio sweeps: several cleansing runs over presets or a grid of group ratios (and seeds), one after another.

Choosing the ratios is the method's hard part: on the demo model the paper's ratios keep the backdoor and only
full re-initialisation removes it, and what works depends on the attack and the seed (``method-facts.md``). A
sweep runs every setting on the same model and images and lays the results side by side, so the user picks a
setting from final ACC against ASR (or the scan's proxy ASR when no triggered set exists) and its Pareto front.

A sweep is a folder:

    sweep.json      the spec and the shared settings (what makes "the same sweep")
    sweep.csv       one row per setting: ratios, seed, final ACC / ASR / proxy ASR, status, time, Pareto
    <setting>/      one ordinary run folder per setting (``paper``, ``layer4-0.5_head-1``, ``strong-seed1``)

``SweepJob`` is a ``CleanseJob`` of jobs: ``events()`` yields the sweep's own events around each run's events
(unchanged), so the CLI's console and the app's run worker drive it as they drive one run; pause, resume and
cancel act on the run in progress (cancel saves its resume point, as a single run's does). The model is loaded
once and handed to every run; with ``scan`` the teacher is scanned once and its trigger reused by every run.
Running the same sweep into the same folder again skips finished runs and resumes unfinished ones; another
sweep's folder, or a folder of other files, is refused.

Pure Python and PyTorch: the CLI and the app import it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

from . import atomic
from . import untrusted
from .errors import BcuError, ConfigError
from .events import Event, Failed, Finished, Log
from .groups import PRESET_NAMES, layer_groups, resolve_ratios
from .job import CleanseConfig, CleanseJob
from .models import LoadedModel, load_model
from .resume import folder_state, settings_of, suggest_name
from .runfolder.reader import read_summary
from .summary import RunSummary

SWEEP_FILE = "sweep.json"
TABLE_FILE = "sweep.csv"
FORMAT = 1
# the base config's fields a setting decides (so they are not part of "the shared settings")
PER_SETTING = ("preset", "ratios", "seed", "out")
Status = str  # pending | running | finished | stopped | unfinished | failed

# --------------------------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Setting:
    """One run of a sweep: a preset with per-group ratios on top, a seed, and the folder it writes."""

    name: str  # folder name under the sweep folder: stable and readable
    preset: str
    ratios: dict[str, float]
    seed: int

    def label(self) -> str:
        """'paper, seed 0' or 'layer4=0.5 head=1 (on paper), seed 1': for tooltips and table rows."""
        what = " ".join(f"{g}={v:g}" for g, v in self.ratios.items())
        what = f"{what} (on {self.preset})" if what else self.preset
        return f"{what}, seed {self.seed}"


@dataclass(frozen=True)
class SweepSpec:
    """What varies: a list of presets, or a grid over groups' ratios on top of ``base_preset``; and seeds.

    ``scan``: scan the teacher once and follow each run's proxy ASR (what the front uses without a triggered
    set). Two sweeps are the same when their specs and their shared settings are equal.
    """

    presets: tuple[str, ...] = ()
    grid: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (group, ratios), in the order given
    base_preset: str = "paper"
    seeds: tuple[int, ...] = (0,)
    scan: bool = False
    scan_steps: int | None = None
    scan_limit: int = 400

    def validate(self) -> None:
        """Reject a spec that cannot be run, before any file is read (groups are checked against the model)."""
        if bool(self.presets) == bool(self.grid):
            raise ConfigError("a sweep needs either a list of presets or a grid of group ratios (exactly one)")
        for p in self.presets:
            if p not in PRESET_NAMES:
                raise ConfigError(f"unknown preset '{p}': use {', '.join(PRESET_NAMES)}")
        if len(set(self.presets)) != len(self.presets):
            raise ConfigError("a preset is listed twice; list each once")
        if self.base_preset not in PRESET_NAMES:
            raise ConfigError(f"unknown base preset '{self.base_preset}': use {', '.join(PRESET_NAMES)}")
        names = [g for g, _ in self.grid]
        if len(set(names)) != len(names):
            raise ConfigError("a group is given twice in the grid; give each group once with all its ratios")
        for group, values in self.grid:
            _check_values(group, values)
        if not self.seeds:
            raise ConfigError("a sweep needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("a seed is listed twice; list each once")
        if self.scan_limit < 3:
            raise ConfigError(f"the scan needs at least 3 images, got a limit of {self.scan_limit}")
        if self.scan_steps is not None and self.scan_steps < 1:
            raise ConfigError(f"scan steps must be at least 1, got {self.scan_steps}")

    def settings(self) -> list[Setting]:
        """Every run, seeds innermost: presets in order, or the grid's cartesian product in the order given."""
        self.validate()
        if self.presets:
            points = [(p, {}) for p in self.presets]
        else:
            groups = [g for g, _ in self.grid]
            points = [(self.base_preset, dict(zip(groups, combo)))
                      for combo in itertools.product(*(values for _, values in self.grid))]
        many = len(self.seeds) > 1
        return [Setting(name=_folder_name(preset, ratios, seed if many else None, grid=bool(self.grid)),
                        preset=preset, ratios=ratios, seed=seed)
                for preset, ratios in points for seed in self.seeds]

    def to_dict(self) -> dict:
        return {"presets": list(self.presets), "grid": {g: list(v) for g, v in self.grid},
                "base_preset": self.base_preset, "seeds": list(self.seeds), "scan": self.scan,
                "scan_steps": self.scan_steps, "scan_limit": self.scan_limit}

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        try:
            return cls(presets=tuple(data.get("presets", ())),
                       grid=tuple((str(g), tuple(float(v) for v in values))
                                  for g, values in dict(data.get("grid", {})).items()),
                       base_preset=str(data.get("base_preset", "paper")),
                       seeds=tuple(int(s) for s in data.get("seeds", (0,))), scan=bool(data.get("scan", False)),
                       scan_steps=data.get("scan_steps"), scan_limit=int(data.get("scan_limit", 400)))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"the sweep spec cannot be read: {exc}") from None


def _check_values(group: str, values: Sequence[float]) -> None:
    if not values:
        raise ConfigError(f"group '{group}' has no ratios in the grid")
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ConfigError(f"ratio {v} for '{group}' must lie between 0 and 1")
    if len(set(values)) != len(values):
        raise ConfigError(f"a ratio is listed twice for '{group}'; list each once")


def _safe(text: str) -> str:
    """A group name as a folder-name part: letters, digits and dots kept, anything else becomes '_'."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "group"


def _folder_name(preset: str, ratios: dict[str, float], seed: int | None, grid: bool) -> str:
    name = "_".join(f"{_safe(g)}-{v:g}" for g, v in ratios.items()) if grid else preset
    return f"{name}-seed{seed}" if seed is not None else name


# ------------------------------------------------------------------------------------------ parsing text


def parse_presets(text: str) -> tuple[str, ...]:
    """'paper,strong' -> ('paper', 'strong'); unknown names are errors."""
    presets = tuple(p.strip() for p in text.split(",") if p.strip())
    if not presets:
        raise ConfigError("--presets needs at least one preset name, e.g. paper,strong")
    for p in presets:
        if p not in PRESET_NAMES:
            raise ConfigError(f"unknown preset '{p}': use {', '.join(PRESET_NAMES)}")
    return presets


def parse_grid(items: Sequence[str]) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """``['layer4=0.27,0.5,1', 'head=0.1,1']`` (or one string with spaces) into ((group, ratios), ...).

    Numbers must be finite and lie in [0, 1]; a group given twice is an error. Group names are checked
    against the model later (they depend on it).
    """
    words = [w for item in items for w in item.split()]
    if not words:
        raise ConfigError("the grid is empty: give group=ratios, e.g. layer4=0.27,0.5,1 head=0.1,1")
    grid: list[tuple[str, tuple[float, ...]]] = []
    for word in words:
        group, sep, rest = word.partition("=")
        group = group.strip()
        if not sep or not group:
            raise ConfigError(f"grid item '{word}' needs the form group=ratio,ratio,..., e.g. layer4=0.27,0.5,1")
        values: list[float] = []
        for part in rest.split(","):
            if not part.strip():
                continue
            try:
                value = float(part)
            except ValueError:
                raise ConfigError(f"ratio '{part.strip()}' for '{group}' is not a number") from None
            values.append(value)
        _check_values(group, values)
        if any(g == group for g, _ in grid):
            raise ConfigError(f"group '{group}' is given twice in the grid; give each group once")
        grid.append((group, tuple(values)))
    return tuple(grid)


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2)."""
    seeds: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            seed = int(part)
        except ValueError:
            raise ConfigError(f"seed '{part.strip()}' is not a whole number") from None
        if seed < 0:
            raise ConfigError(f"seeds must not be negative, got {seed}")
        seeds.append(seed)
    if not seeds:
        raise ConfigError("--seeds needs at least one whole number, e.g. 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise ConfigError("a seed is listed twice; list each once")
    return tuple(seeds)


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SweepRow:
    """One setting's result (or its state when it has none yet): a line of ``sweep.csv`` and of the app's table."""

    name: str
    label: str
    preset: str
    ratios: dict[str, float]  # every group's ratio as used (the requested overrides before the run has one)
    seed: int
    status: Status = "pending"
    acc: float | None = None
    asr: float | None = None
    proxy_asr: float | None = None
    kept: str = ""
    seconds: float | None = None
    run_dir: str = ""
    note: str = ""
    teacher_acc: float | None = None
    teacher_asr: float | None = None
    teacher_proxy_asr: float | None = None

    def value(self, metric: str | None) -> float | None:
        return None if metric is None else getattr(self, metric)


def pending_row(setting: Setting, run_dir: Path) -> SweepRow:
    return SweepRow(name=setting.name, label=setting.label(), preset=setting.preset, ratios=dict(setting.ratios),
                    seed=setting.seed, run_dir=str(run_dir))


def row_from_summary(setting: Setting, summary: RunSummary, status: Status, run_dir: Path) -> SweepRow:
    """``run_dir`` is where the folder is now (a sweep folder may have been moved since it ran)."""
    cs, ts = summary.cleansed_scan, summary.teacher_scan
    return dataclasses.replace(
        pending_row(setting, run_dir), status=status, ratios=dict(summary.reinit.ratios),
        acc=summary.cleansed.acc, asr=summary.cleansed.asr, proxy_asr=cs.proxy_asr if cs else None,
        kept=summary.kept, seconds=summary.seconds, note=summary.note,
        teacher_acc=summary.teacher.acc, teacher_asr=summary.teacher.asr,
        teacher_proxy_asr=ts.proxy_asr if ts else None)


def row_of_folder(setting: Setting, run_dir: Path) -> SweepRow:
    """What a setting's folder holds: finished, stopped (resumable), failed (diverged), unfinished, or pending.

    A diverged run writes a summary marked cancelled and removes its resume point (resuming would diverge
    again), which is how "failed" is told from "stopped".
    """
    state = folder_state(run_dir)
    summary = read_summary(run_dir)
    if state.status in ("absent", "empty"):
        return pending_row(setting, run_dir)
    if summary is None:
        return dataclasses.replace(pending_row(setting, run_dir), status="unfinished")
    if state.status == "unfinished":
        return row_from_summary(setting, summary, "stopped", run_dir)
    if summary.cancelled:
        return row_from_summary(setting, summary, "failed", run_dir)
    return row_from_summary(setting, summary, "finished", run_dir)


def front_metric(rows: Sequence[SweepRow]) -> str | None:
    """'asr' when any finished run measured ASR (a triggered set exists), else 'proxy_asr', else None."""
    done = [r for r in rows if r.status == "finished" and r.acc is not None]
    if any(r.asr is not None for r in done):
        return "asr"
    if any(r.proxy_asr is not None for r in done):
        return "proxy_asr"
    return None


METRIC_LABEL = {"asr": "ASR", "proxy_asr": "proxy ASR"}


def pareto_front(rows: Sequence[SweepRow], metric: str | None = None) -> list[SweepRow]:
    """Finished runs no other finished run beats on both ACC (higher) and ``metric`` (lower), by ``metric``.

    A run is dominated when another is at least as good on both and better on one; equal points all stay.
    ``metric`` defaults to ``front_metric(rows)``; without one there is no front.
    """
    metric = metric or front_metric(rows)
    if metric is None:
        return []
    points = [r for r in rows if r.status == "finished" and r.acc is not None and r.value(metric) is not None]

    def dominated(r: SweepRow) -> bool:
        return any(o.acc >= r.acc and o.value(metric) <= r.value(metric)
                   and (o.acc > r.acc or o.value(metric) < r.value(metric)) for o in points)

    return sorted((r for r in points if not dominated(r)), key=lambda r: (r.value(metric), -r.acc))


CSV_COLUMNS = ("name", "preset", "ratios", "seed", "status", "acc", "asr", "proxy_asr", "front_metric",
               "pareto", "kept", "seconds", "teacher_acc", "teacher_asr", "teacher_proxy_asr", "run_dir", "note")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def table_csv(rows: Sequence[SweepRow]) -> str:
    """``sweep.csv``: one row per setting; ``front_metric`` names what the Pareto front used (ASR or proxy ASR)."""
    metric = front_metric(rows)
    front = {r.name for r in pareto_front(rows, metric)}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r.name, r.preset, ";".join(f"{g}={v:g}" for g, v in r.ratios.items()), r.seed, r.status,
                         _num(r.acc), _num(r.asr), _num(r.proxy_asr), METRIC_LABEL.get(metric or "", ""),
                         "yes" if r.name in front else "no", r.kept,
                         "" if r.seconds is None else f"{r.seconds:.1f}", _num(r.teacher_acc), _num(r.teacher_asr),
                         _num(r.teacher_proxy_asr), r.run_dir, r.note])
    return out.getvalue()


def write_table(folder: str | Path, rows: Sequence[SweepRow]) -> Path:
    path = Path(folder) / TABLE_FILE
    atomic.write_text(path, table_csv(rows))
    return path


# ---------------------------------------------------------------------------------------- the folder


def shared_settings(base: CleanseConfig) -> dict:
    """The base config's settings every run shares (what a setting decides left out)."""
    return {k: v for k, v in settings_of(base.to_dict()).items() if k not in PER_SETTING}


def sweep_record(spec: SweepSpec, base: CleanseConfig) -> dict:
    return {"format": FORMAT, "spec": spec.to_dict(), "settings": shared_settings(base)}


def check_sweep_folder(folder: str | Path, spec: SweepSpec, base: CleanseConfig) -> bool:
    """May this sweep write into ``folder``? True when it continues the same sweep there.

    Refused (``ConfigError``, one line naming a free folder): another sweep's folder, or a folder that is not
    empty and holds no sweep.
    """
    path = Path(folder)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return False
    other = suggest_name(path)
    if not path.is_dir():
        raise ConfigError(f"{path} is a file, not a folder; choose a new folder, e.g. {other}")
    try:
        saved = untrusted.read_json(path, SWEEP_FILE, expect=None)
    except FileNotFoundError:
        raise ConfigError(f"{path} is not empty and holds no sweep ({SWEEP_FILE}); nothing in it is overwritten: "
                          f"choose a new folder, e.g. {other}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path / SWEEP_FILE}: {exc}") from None
    mine = json.loads(atomic.dumps(sweep_record(spec, base)))
    if not isinstance(saved, dict) or saved.get("spec") != mine["spec"]:
        raise ConfigError(f"{path} holds another sweep (its spec differs: "
                          f"{_differences(saved.get('spec') if isinstance(saved, dict) else None, mine['spec'])}); "
                          f"run it with its own settings to continue it, or choose a new folder, e.g. {other}")
    theirs = saved.get("settings")
    if isinstance(theirs, dict):  # trust is decided anew each time; a sweep begun before that recorded it
        theirs = {k: v for k, v in theirs.items() if k != "trust_checkpoint"}
    if theirs != mine["settings"]:
        raise ConfigError(f"{path} holds the same sweep with other shared settings "
                          f"({_differences(theirs, mine['settings'])}); "
                          f"choose a new folder, e.g. {other}")
    return True


def _differences(old: dict | None, new: dict) -> str:
    if not isinstance(old, dict):
        return "unreadable"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys[:3])


@dataclass(frozen=True)
class SweepFolder:
    """A sweep read back from disk (to show an earlier sweep, or to continue it)."""

    path: Path
    spec: SweepSpec
    settings: dict
    rows: list[SweepRow]


def load_sweep(folder: str | Path) -> SweepFolder:
    """The spec of the sweep in ``folder`` and one row per setting from its run folders."""
    path = Path(folder)
    try:
        data = untrusted.read_json(path, SWEEP_FILE, expect=None)
    except FileNotFoundError:
        raise ConfigError(f"{path} is not a sweep folder: it has no {SWEEP_FILE}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path / SWEEP_FILE}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "spec" not in data:
        raise ConfigError(f"{path / SWEEP_FILE} is not a sweep this version of BCU Studio can read")
    spec = SweepSpec.from_dict(data["spec"])
    rows = [row_of_folder(s, path / s.name) for s in spec.settings()]
    return SweepFolder(path=path, spec=spec, settings=dict(data.get("settings", {})), rows=rows)


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class SweepStarted:
    """The sweep's folder is checked and its settings known; ``rows`` is the table as it stands."""

    folder: str
    rows: tuple[SweepRow, ...]
    continuing: bool


@dataclass(frozen=True)
class RunBegins:
    """Setting ``index`` (0-based) of ``total`` starts (``resumed``: from its resume point)."""

    index: int
    total: int
    name: str
    label: str
    run_dir: str
    resumed: bool


@dataclass(frozen=True)
class RunEnds:
    """Setting ``index`` is done (or was already: ``skipped``); ``row`` is its line of the table."""

    index: int
    row: SweepRow
    skipped: bool = False


@dataclass(frozen=True)
class SweepFinished:
    """Every setting ran, or the sweep was stopped; ``front`` holds the Pareto front's names."""

    folder: str
    rows: tuple[SweepRow, ...]
    metric: str | None
    front: tuple[str, ...]
    cancelled: bool
    table: str = ""  # sweep.csv's path


SweepEvent = Union[SweepStarted, RunBegins, RunEnds, SweepFinished]


# ---------------------------------------------------------------------------------------------- the job


class SweepJob:
    """Run every setting of ``spec`` into ``folder`` with the shared settings of ``base``; see the module doc.

    ``events()`` yields ``SweepStarted``, then per setting ``RunBegins``, that run's own events (its ``Failed``
    turned into a warning ``Log``: one run failing does not end the sweep, unless its input is bad) and
    ``RunEnds``; and ``SweepFinished``. A sweep that cannot start ends with one ``Failed``.
    """

    def __init__(self, spec: SweepSpec, base: CleanseConfig, folder: str | Path, model: LoadedModel | None = None,
                 *, step_rate: float | None = None,
                 scan_progress: Callable[[str, object], None] | None = None) -> None:
        self.spec = spec
        self.base = base
        self.folder = Path(folder)
        self.rows: list[SweepRow] = []
        self.stop_reason: str | None = None
        self._model = model
        self._step_rate = step_rate
        self._scan_progress = scan_progress
        self._teacher_scan = None  # the teacher's ScanResult, once the first scanning run made it
        self._scan_images = None
        self._lock = threading.Lock()
        self._job: CleanseJob | None = None
        self._cancel = threading.Event()
        self._paused = False

    # -- control, safe from any thread -----------------------------------------------------------------
    def pause(self) -> None:
        with self._lock:
            self._paused = True
            if self._job is not None:
                self._job.pause()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            if self._job is not None:
                self._job.resume()

    def cancel(self, reason: str | None = None) -> None:
        """Stop the run in progress at its next batch (it saves its resume point) and start no other."""
        with self._lock:
            if reason and self.stop_reason is None:
                self.stop_reason = reason
            self._cancel.set()
            if self._job is not None:
                self._job.cancel(reason)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def current(self) -> CleanseJob | None:
        return self._job

    # -- the sweep -----------------------------------------------------------------------------------------
    def events(self) -> Iterator[Event | SweepEvent]:
        try:
            yield from self._run()
        except BcuError as exc:
            yield Failed(message=str(exc), kind="input")
        except OSError as exc:
            yield Failed(message=f"could not read or write {exc.filename or 'a file'}: {exc.strerror or exc}",
                         kind="input")
        except Exception as exc:  # a bug: report it, never kill the driver
            import traceback

            yield Failed(message=f"unexpected error: {type(exc).__name__}: {exc}", kind="internal",
                         detail=traceback.format_exc())

    def _run(self) -> Iterator[Event | SweepEvent]:
        spec, base = self.spec, self.base
        settings = spec.settings()  # validates the spec
        base.validate()
        if base.keep == "proxy" and not spec.scan:  # else every run would fail the same way, one after another
            raise ConfigError("keeping the lowest-proxy-ASR epoch needs the scan's proxy ASR: sweep with the scan "
                              "(bcu sweep --scan) or keep last, best or ema")
        continuing = check_sweep_folder(self.folder, spec, base)
        if self._model is None:
            yield Log(message=f"loading {base.checkpoint}")
            self._model = load_model(base.checkpoint, arch=base.arch, trust=base.trust_checkpoint,
                                     input_size=base.input_size, normalize=base.normalize)
            yield Log(message=f"model: {self._model.describe()}")
        model = self._model
        groups = layer_groups(model.module)
        for s in settings:  # every group name and ratio checked before the first run starts
            resolve_ratios(groups, s.preset, s.ratios)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.folder / SWEEP_FILE, sweep_record(spec, base))
        self.rows = [row_of_folder(s, self.folder / s.name) for s in settings]
        table = write_table(self.folder, self.rows)
        yield SweepStarted(folder=str(self.folder), rows=tuple(self.rows), continuing=continuing)

        for index, setting in enumerate(settings):
            if self._cancel.is_set():
                break
            run_dir = self.folder / setting.name
            if self.rows[index].status in ("finished", "failed"):
                yield RunEnds(index=index, row=self.rows[index], skipped=True)
                continue
            bad_input = yield from self._one(index, len(settings), setting, run_dir, model)
            table = write_table(self.folder, self.rows)
            yield RunEnds(index=index, row=self.rows[index])
            if bad_input is not None:  # the data or the folder is wrong: every other run would fail the same way
                yield Failed(message=f"{setting.name}: {bad_input.message}", kind=bad_input.kind)
                return
        metric = front_metric(self.rows)
        front = tuple(r.name for r in pareto_front(self.rows, metric))
        yield SweepFinished(folder=str(self.folder), rows=tuple(self.rows), metric=metric, front=front,
                            cancelled=self._cancel.is_set(), table=str(table))

    def _one(self, index: int, total: int, setting: Setting, run_dir: Path,
             model: LoadedModel) -> Iterator[Event | SweepEvent]:
        """Run (or resume) one setting; returns its ``Failed`` when the failure is the input's, else None."""
        cfg = dataclasses.replace(self.base, preset=setting.preset, ratios=dict(setting.ratios), seed=setting.seed,
                                  out=str(run_dir))
        resumed = folder_state(run_dir).status == "unfinished"
        hooks = [self._scan_hook(cfg, model)] if self.spec.scan else []
        kwargs = {} if self._step_rate is None else {"step_rate": self._step_rate}
        job = CleanseJob(cfg, model=model, hooks=hooks, resume=resumed, **kwargs)
        for hook in hooks:
            hook.cancel = lambda: job.cancelled
        with self._lock:
            self._job = job
            if self._cancel.is_set():
                job.cancel(self.stop_reason)
            if self._paused:
                job.pause()
        self.rows[index] = dataclasses.replace(self.rows[index], status="running")
        yield RunBegins(index=index, total=total, name=setting.name, label=setting.label(), run_dir=str(run_dir),
                        resumed=resumed)
        failure: Failed | None = None
        try:
            for event in job.events():
                if isinstance(event, Failed):
                    failure = event
                    yield Log(message=f"{setting.name} failed: {event.message}", level="warning")
                    continue
                if isinstance(event, Finished):
                    status = "stopped" if event.cancelled else "finished"
                    self.rows[index] = row_from_summary(setting, event.summary, status, run_dir)
                yield event
        finally:
            with self._lock:
                self._job = None
        for hook in hooks:
            if hook.teacher_result is not None:
                self._teacher_scan = hook.teacher_result
        if failure is not None:
            row = row_of_folder(setting, run_dir)
            status = "failed" if row.status in ("pending", "finished", "failed") else row.status
            self.rows[index] = dataclasses.replace(row, status=status, note=failure.message)
            if failure.kind in ("input", "disk"):
                return failure
        return None

    def _scan_hook(self, cfg: CleanseConfig, model: LoadedModel):
        """A ScanHook sharing the teacher's scan across runs; each cleansed model gets its proxy ASR, no rescan."""
        from .data import load_unlabeled
        from .scan import ProbeSettings, ScanConfig, ScanHook

        spec = self.spec

        def images():  # read once, in the job's thread
            if self._scan_images is None:
                loaded = load_unlabeled(cfg.unlabeled, model.input_size, limit=spec.scan_limit)
                if len(loaded) < 3:
                    raise ConfigError(f"a scan needs at least 3 readable images in {cfg.unlabeled}, "
                                      f"found {len(loaded)}")
                self._scan_images = loaded.images
            return self._scan_images

        settings = ProbeSettings(seed=self.base.seed, **({"steps": spec.scan_steps} if spec.scan_steps else {}))
        progress = self._scan_progress
        return ScanHook(images, model.normalization, model.num_classes,
                        ScanConfig(settings=settings, seed=self.base.seed), teacher_result=self._teacher_scan,
                        rescan=False, progress=progress)


__all__ = [
    "FORMAT", "METRIC_LABEL", "RunBegins", "RunEnds", "Setting", "SweepFinished", "SweepFolder", "SweepJob",
    "SweepRow", "SweepSpec", "SweepStarted", "check_sweep_folder", "front_metric", "load_sweep",
    "pareto_front", "parse_grid", "parse_presets", "parse_seeds", "row_of_folder", "table_csv", "write_table",
]
