"""``bcu cleanse --nproc N``: the same command again, under torchrun, as N processes on this machine.

Nothing here trains: it builds the ``python -m torch.distributed.run --standalone --nproc-per-node N -m
bcu_gui.cli <the same arguments, minus --nproc>`` command, starts it in a session of its own (so a Ctrl-C in
the terminal reaches torchrun once, through us, and not twice), forwards SIGINT / SIGTERM / SIGHUP to it (torchrun
forwards them to every worker, and each stops at the same step; core/distributed.py), and returns its exit
code, or 128 + the signal's number when a signal stopped it, as a one-process ``bcu cleanse`` does.
The app starts a multi-GPU run with the same command (``torchrun_command``). Every socket the run listens on is
bound to 127.0.0.1 (``loopback.py``): torchrun's stores take anyone's keys, and one machine needs no one else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from .core.outcome import EXIT_RUINED
from .stop_signals import handling
from .loopback import LOOPBACK, bind_agent_stores_to_loopback, loopback_interface

NPROC = "--nproc"


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each worker is given)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == NPROC:
            skip = True
        elif not arg.startswith(NPROC + "="):
            out.append(arg)
    return out


def torchrun_command(argv: Sequence[str], nproc: int, python: str | None = None) -> list[str]:
    """The command that runs ``bcu <argv>`` as ``nproc`` DDP processes on this machine.

    It is torch's own launcher (``torch.distributed.run``), entered through :func:`torchrun_main` below so that
    its way of ending (a traceback when stopped by a signal) becomes an exit code and one line.
    """
    return [python or sys.executable, "-m", "bcu_gui.launcher", "--standalone", f"--local-addr={LOOPBACK}",
            f"--nproc-per-node={nproc}", "-m", "bcu_gui.cli", *argv]


def torchrun_main(argv: Sequence[str]) -> int:
    """``torch.distributed.run`` with its arguments ``argv``, ending with an exit code instead of a traceback.

    torchrun raises ``SignalException`` after forwarding a stop signal to its workers (which then save and
    stop), and ``ChildFailedError`` with a table when a worker failed; each worker has printed its own one-line
    reason already, so here only the exit code and which process failed are said.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run as torchrun

    if "--standalone" in argv:  # one machine: nothing but this machine needs to reach the agent's stores
        bind_agent_stores_to_loopback()
    try:
        torchrun(parse_args(list(argv)))
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        if ran_to_a_ruined_verdict({rank: f.exitcode for rank, f in exc.failures.items()}):
            return EXIT_RUINED
        failed = ", ".join(f"process {rank} (exit code {f.exitcode})" for rank, f in sorted(exc.failures.items()))
        print(f"bcu: the run ended because {failed} failed", file=sys.stderr)
        return 2 if codes and all(c == 2 for c in codes) else 1
    return 0


def ran_to_a_ruined_verdict(codes: Mapping[int, int]) -> bool:
    """Whether torchrun's failure table only says that the run finished and rank 0 judged the model ruined.

    Rank 0 exits :data:`EXIT_RUINED` after saying the verdict; torchrun then sends SIGTERM to any process
    still tearing down, which is no failure of the run. (Other ranks exit 0 on a ruined verdict.)
    """
    if codes.get(0) != EXIT_RUINED:
        return False
    return all(code in (EXIT_RUINED, -signal.SIGTERM) for rank, code in codes.items() if rank != 0)


def torchrun_env(nproc: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The workers' environment: this package importable, and the CPU's threads shared out between them.

    torchrun would set ``OMP_NUM_THREADS=1`` (with a warning) when it is unset; a gloo run on the CPU wants
    the cores divided between its processes instead. A value the user set is kept.
    """
    env = dict(os.environ if environ is None else environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("LOGLEVEL", "ERROR")  # torchrun's agent: no warning for each signal it forwards
    interface = loopback_interface()
    if interface:  # gloo's connections between the processes of this one machine stay on it (bcu_gui/loopback.py)
        env.setdefault("GLOO_SOCKET_IFNAME", interface)
    return env


def run(argv: Sequence[str], nproc: int) -> int:
    """Run ``bcu <argv>`` (``--nproc`` removed) under torchrun; forward stop signals; return its exit code."""
    proc = subprocess.Popen(torchrun_command(strip_nproc(argv), nproc), env=torchrun_env(nproc),
                            start_new_session=True)
    stopped: list[int] = []

    def forward(signum, frame) -> None:
        if not stopped:  # once: torchrun shuts its workers down after the first, and kills them 30 s later
            stopped.append(signum)
            name = signal.Signals(signum).name
            print(f"\nbcu: {name}: stopping every process after this step and saving...", file=sys.stderr)
            proc.send_signal(signum)

    with handling(forward):
        rc = proc.wait()
    if stopped:
        return 128 + stopped[0]
    return 128 - rc if rc < 0 else rc


# ------------------------------------------------------------------------------------ the app's launched run

def _event(record: dict):
    """A job event back from its ``--json`` line (the CLI's JsonReporter prints Started, EpochEnd, Finished)."""
    from .core.events import EpochEnd, Finished, Started
    from .core.summary import RunSummary

    kind = record.pop("event", None)
    if kind == "finished":
        return Finished(summary=RunSummary.from_dict(record["summary"]))
    if kind == "started":
        return Started(**record)
    if kind == "epochend":
        return EpochEnd(**record)
    return None


class LaunchedRun:
    """A run of several processes started as ``bcu cleanse ... --nproc N --json``, followed as job events.

    The app drives it like a ``CleanseJob`` (``events()`` in its worker thread, ``cancel()`` from the GUI): the
    events are read from rank 0's JSON lines on stdout (Started, one EpochEnd per epoch, Finished with the
    summary); the CLI's one-line errors and warnings on stderr become ``Log`` events; a cancel sends SIGTERM,
    which stops every process at the same step and saves, as in a terminal. Pausing is not offered: the other
    processes would wait in their next collective. The JSON stream has no steps: the loss plot gets one point
    an epoch (the epoch's mean loss at its last step).
    """

    pausable = False

    def __init__(self, config, processes: int, *, scan: bool = False, resume: bool = False) -> None:
        self.config, self.processes, self.scan, self._resume = config, processes, scan, resume
        self.trained = None  # the model lives in the other processes: nothing to save from here
        self.run_dir: Path | None = Path(config.out) if config.out else None
        self._proc: subprocess.Popen | None = None
        self._cancelled = False

    def arguments(self, settings_file: Path) -> list[str]:
        """The CLI arguments of this run (``settings_file`` holds the config when it is not a resume)."""
        if self._resume:
            args = ["cleanse", "--resume", str(self.config.out)]
        else:
            args = ["cleanse", "--config", str(settings_file), "--out", str(self.config.out)]
            if self.scan:
                args.append("--scan")
        if self.config.trust_checkpoint:  # the person trusted it in the app; a settings file cannot say so
            args.append("--trust-checkpoint")
        return [*args, "--json", NPROC, str(self.processes)]

    def events(self):
        import json
        import queue
        import tempfile
        import threading

        from .core.events import EpochEnd, Failed, Finished, Log, Started, Step

        with tempfile.TemporaryDirectory(prefix="bcu-launch-") as tmp:
            settings = Path(tmp) / "settings.json"
            settings.write_text(json.dumps({**self.config.with_absolute_paths().to_dict(), "out": None}),
                                encoding="utf-8")  # absolute: a settings file names no path relative to anywhere
            self._proc = proc = subprocess.Popen(
                [sys.executable, "-m", "bcu_gui.cli", *self.arguments(settings)], env=torchrun_env(self.processes),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                start_new_session=True)
            lines: queue.Queue = queue.Queue()

            def pump(stream, name: str) -> None:
                for line in stream:
                    lines.put((name, line.rstrip("\n")))
                lines.put((name, None))

            for stream, name in ((proc.stdout, "out"), (proc.stderr, "err")):
                threading.Thread(target=pump, args=(stream, name), daemon=True).start()
            if self._cancelled:
                self.cancel()
            open_streams, errors, finished, steps_per_epoch = 2, [], False, 0
            while open_streams:
                name, line = lines.get()
                if line is None:
                    open_streams -= 1
                elif name == "out":
                    try:
                        event = _event(json.loads(line))
                    except (ValueError, TypeError, KeyError):
                        event = None
                    if isinstance(event, Started):
                        steps_per_epoch = event.steps_per_epoch
                    if isinstance(event, EpochEnd) and steps_per_epoch:  # the loss plot gets a point an epoch
                        step = event.epoch * steps_per_epoch
                        yield Step(epoch=event.epoch - 1, step=step, total_steps=event.epochs * steps_per_epoch,
                                   loss=event.loss, lr=event.lr, temperature=event.temperature, losses=(event.loss,))
                    if event is not None:
                        finished = finished or isinstance(event, Finished)
                        yield event
                elif line.startswith("bcu"):  # the CLI's own lines: errors, warnings, how to resume
                    errors.append(line)
                    yield Log(message=line, level="warning")
            rc = proc.wait()
        if not finished:
            said = [e for e in errors if ": error: " in e]
            reason = said[0].split(": error: ", 1)[1] if said else f"the processes ended with exit code {rc}"
            yield Failed(message=f"the {self.processes}-process run failed: {reason}",
                         kind="input" if rc == 2 else "internal")

    def cancel(self, reason: str | None = None) -> None:
        """Stop every process after the current step; rank 0 saves and the stream ends with ``Finished``."""
        self._cancelled = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def pause(self) -> None:
        """Not offered for a run of several processes (see the class's note)."""

    def resume(self) -> None:
        """Nothing to resume: it never pauses."""


if __name__ == "__main__":
    sys.exit(torchrun_main(sys.argv[1:]))
