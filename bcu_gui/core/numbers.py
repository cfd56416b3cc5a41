"""Numbers as people read them: one percentage format for the console, the log, the report and the app.

Why one module: the same "98.0%" / "n/a" rule was written four times (the CLI, the report, the training log,
the verdict), and a value read from a file someone else wrote may be a string, a boolean or NaN, which must
print as "n/a", never crash a report or read as a score. Standard library only, so the CLI can import it before
torch.
"""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    """A JSON number as a float; None for anything else: text, booleans, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def pct(value: Any, width: int = 0) -> str:
    """A fraction as a percentage with one decimal ('98.0%'), 'n/a' when unknown; right-aligned to ``width``."""
    v = finite(value)
    text = "n/a" if v is None else f"{v * 100:.1f}%"
    return text.rjust(width)
