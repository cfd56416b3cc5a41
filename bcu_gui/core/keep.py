"""Which student a run saves: the one definition of the choices the engine, the CLI and the app share.

Plain Python (no torch), so the CLI can build its parser and the app its panel without loading the engine.
"""

from __future__ import annotations

KEEP_CHOICES = ("last", "best", "ema", "proxy")
KEEP_HELP = {
    "last": "the student as the last epoch left it",
    "best": "the lowest-ASR epoch with ACC within 3 points of the teacher's (needs a triggered set)",
    "ema": "a moving average of the student's weights (label-free)",
    "proxy": "the lowest proxy-ASR epoch (trigger scan) agreeing with the teacher on >= 97% (label-free)",
}
