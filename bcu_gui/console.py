"""How the CLI shows a job's events: a progress bar with per-epoch lines, or JSON lines for machines."""

from __future__ import annotations

import sys

from .common import pct as _pct
from .core.atomic import dumps
from .core.printable import printable
from .core.eval_schedule import describe_scope
from .core.events import EpochEnd, Event, Failed, Finished, Log, Paused, Resumed, Started, Step, to_record


def pct(value: float | None) -> str:
    """Percentages in aligned columns."""
    return _pct(value, 6)


class _Preamble:
    """Log lines from before training starts: shown once it starts, dropped if the input turns out bad.

    A run that fails on bad input then prints exactly one line (the error), as the CLI promises.
    """

    def __init__(self) -> None:
        self.lines: list[str] | None = []

    def add(self, line: str) -> bool:
        if self.lines is None:
            return False
        self.lines.append(line)
        return True

    def flush(self) -> None:
        for line in self.lines or []:
            print(line, file=sys.stderr)
        self.lines = None


def _extra_text(extra: dict) -> str:
    """Hooks' numbers on an epoch line: the moving average's ACC / ASR, a scan's proxy ASR."""
    parts = []
    if extra.get("ema_acc") is not None or extra.get("ema_asr") is not None:
        parts.append(f"EMA ACC {pct(extra.get('ema_acc'))} ASR {pct(extra.get('ema_asr'))}")
    if extra.get("proxy_asr") is not None:
        parts.append(f"proxy ASR {pct(extra['proxy_asr'])}")
    return "".join(f"  {p}" for p in parts)


def eval_note(event: EpochEnd) -> str:
    """'' for a full-set point; else what the epoch's numbers are: an estimate on n images, or not measured."""
    return describe_scope(event.eval_scope, event.eval_clean, event.eval_triggered)


def _log_line(event: Log) -> str:
    """A log event as one line: its message names files and folders, so control characters are escaped."""
    return ("warning: " if event.level == "warning" else "") + printable(event.message)


class ConsoleReporter:
    """tqdm bar over all steps; one line per epoch; a summary at the end (stderr for chatter, stdout for results)."""

    def __init__(self) -> None:
        self._bar = None
        self._preamble = _Preamble()

    def handle(self, event: Event) -> None:
        from tqdm import tqdm

        if isinstance(event, Log):
            line = _log_line(event)
            if not self._preamble.add(line):
                self._write(line)
        elif isinstance(event, Started):
            self._preamble.flush()
            print(f"teacher: ACC {pct(event.teacher_acc)}  ASR {pct(event.teacher_asr)}", file=sys.stderr)
            self._bar = tqdm(total=event.epochs * event.steps_per_epoch, unit="step", file=sys.stderr,
                             dynamic_ncols=True, desc="cleansing")
        elif isinstance(event, Step) and self._bar is not None:
            self._bar.update(event.step - self._bar.n)  # steps arrive throttled: move to the step reached
            self._bar.set_postfix(epoch=event.epoch + 1, loss=f"{event.loss:.4f}", refresh=False)
        elif isinstance(event, (Paused, Resumed)) and self._bar is not None:
            self._write(f"{'paused' if isinstance(event, Paused) else 'resumed'} at step {event.step}")
        elif isinstance(event, EpochEnd) and self._bar is not None:
            note = eval_note(event)
            scores = (f"ACC {pct(event.acc)}  ASR {pct(event.asr)}  agreement {pct(event.agreement)}"
                      if event.eval_scope != "none" else f"({note})")
            self._write(f"epoch {event.epoch:3d}/{event.epochs}  loss {event.loss:.4f}  {scores}  "
                        f"T {event.temperature:.2f}  {event.seconds:.1f} s{_extra_text(event.extra)}"
                        + (f"  ({note})" if event.eval_scope == "subset" else ""))
        elif isinstance(event, Finished):
            self.close()
            s = event.summary
            print(f"{'cancelled' if s.cancelled else 'done'} in {s.seconds:.1f} s "
                  f"({s.images_per_second:.1f} images/s on {s.device}); kept {s.kept_text()}")
            print(f"teacher   ACC {pct(s.teacher.acc)}  ASR {pct(s.teacher.asr)}")
            print(f"cleansed  ACC {pct(s.cleansed.acc)}  ASR {pct(s.cleansed.asr)}")
            print(f"verdict   {s.outcome().headline}")
            if s.ema is not None and s.kept != "ema":
                print(f"EMA       ACC {pct(s.ema.acc)}  ASR {pct(s.ema.asr)}  (saved as ema.pt beside the model)")
            if s.kept_reason:
                print(f"kept      {s.kept}: {printable(s.kept_reason)}")
            print(f"saved     {printable(s.run_dir)}")
        elif isinstance(event, Failed):
            self.close()

    def _write(self, line: str) -> None:
        """A line above the bar, on stderr: tqdm's ``write`` defaults to stdout, which is for results only."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class JsonReporter:
    """One JSON object per epoch and a final summary object on stdout; steps are not printed."""

    def __init__(self) -> None:
        self._preamble = _Preamble()

    def handle(self, event: Event) -> None:
        if isinstance(event, Started):
            self._preamble.flush()
        if isinstance(event, (EpochEnd, Finished, Started)):
            print(dumps(to_record(event)), flush=True)  # null, never bare NaN
        elif isinstance(event, Log) and not self._preamble.add(_log_line(event)):
            print(_log_line(event), file=sys.stderr)

    def close(self) -> None:
        pass


class SilentReporter:
    """Prints nothing: the reporter of torchrun processes other than rank 0 (which speaks for the run)."""

    def handle(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass
