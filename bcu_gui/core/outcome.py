"""What a finished run achieved, in one word and one sentence: removed, remains, ruined, unverified, stopped.

A low ASR only means something while the model still classifies. ``bcu demo --epochs 1`` once saved a student at
ACC 11.6% (teacher 99%) and announced it like any other result, its ASR of 0% reading like a win. The verdict is
therefore judged in order: a student whose agreement with the teacher (label-free) or whose ACC collapsed is
*ruined*, whatever its ASR; only then do the ASR on a triggered set and the student's own rescan speak. Every face
(console, JSON, the app's result box, ``summary.json``, the report) shows this one verdict, and the CLI's exit
code follows it (:data:`EXIT_RUINED`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .numbers import pct

if TYPE_CHECKING:
    from .summary import ScanRecord, Scores

Kind = Literal["removed", "remains", "ruined", "unverified", "stopped"]

# Below this agreement with the teacher on the unlabelled images, the student no longer does the teacher's job.
RUINED_AGREEMENT = 0.5
# An ACC drop (teacher minus student, fraction of the clean test set) beyond which the model no longer classifies.
RUINED_ACC_DROP = 0.20
# At or below this ASR on the triggered set the backdoor counts as removed.
REMOVED_ASR = 0.10
# An ACC drop worth saying beside an otherwise good result.
NOTABLE_ACC_DROP = 0.03

EXIT_RUINED = 3  # `bcu cleanse`/`bcu demo`: the saved model no longer classifies (see the README's exit codes)


@dataclass(frozen=True)
class Outcome:
    """The run's verdict: ``kind`` for programs, ``headline`` for people."""

    kind: Kind
    headline: str

    @property
    def ok(self) -> bool:
        """False when the saved model must not be used as the cleansed model."""
        return self.kind not in ("ruined", "remains")


def _ruin(teacher: "Scores", cleansed: "Scores") -> str | None:
    """Why the student no longer classifies, or None while it does."""
    if cleansed.agreement is not None and cleansed.agreement < RUINED_AGREEMENT:
        return f"it agrees with the teacher on only {pct(cleansed.agreement)} of the unlabelled images"
    if cleansed.acc is not None and teacher.acc is not None and teacher.acc - cleansed.acc > RUINED_ACC_DROP:
        return f"its ACC fell to {pct(cleansed.acc)} from the teacher's {pct(teacher.acc)}"
    return None


def judge(teacher: "Scores", cleansed: "Scores", *, cancelled: bool = False,
          cleansed_scan: "ScanRecord | None" = None) -> Outcome:
    """The verdict on the saved student, from what the run measured (nothing is re-measured here)."""
    ruin = _ruin(teacher, cleansed)
    if ruin is not None:
        return Outcome("ruined", f"ruined: the model no longer classifies ({ruin}); its backdoor test is "
                                 "meaningless. Train longer (more epochs or a smaller batch) or re-initialise less.")
    if cancelled:
        return Outcome("stopped", "stopped before the end: the saved student is unfinished")
    flagged = cleansed_scan is not None and cleansed_scan.verdict == "backdoor"
    drop = (teacher.acc - cleansed.acc) if teacher.acc is not None and cleansed.acc is not None else None
    cost = f"; ACC fell {100 * drop:.1f} points" if drop is not None and drop > NOTABLE_ACC_DROP else ""
    if cleansed.asr is not None:
        if cleansed.asr > REMOVED_ASR:
            return Outcome("remains", f"the backdoor remains: ASR {pct(cleansed.asr)} on the triggered set"
                                      f"{cost}")
        if flagged:
            return Outcome("remains", f"ASR {pct(cleansed.asr)} on the given trigger, but the rescan still flags "
                                      f"class {cleansed_scan.suspected_class}: another trigger may remain{cost}")
        return Outcome("removed", f"backdoor removed: ASR {pct(cleansed.asr)}"
                                  + (f" (teacher {pct(teacher.asr)})" if teacher.asr is not None else "") + cost)
    if flagged:
        return Outcome("remains", f"the backdoor remains: the rescan still flags class "
                                  f"{cleansed_scan.suspected_class}{cost}")
    if cleansed_scan is not None and cleansed_scan.verdict == "clean":
        return Outcome("removed", f"no class stands out in the rescan (no triggered set to measure ASR){cost}")
    return Outcome("unverified", "not verified: no triggered set and no rescan; scan the saved model "
                                 f"(`bcu scan`, or Scan in the app) to check it{cost}")
