"""Does one class need a much smaller trigger than the others? Statistics over per-class trigger sizes.

Neural Cleanse flags a class whose mask norm lies far below the others, measured by the median absolute
deviation (MAD). With only ten classes the MAD is itself noisy, so a clean model's naturally easy class can
stand out; the statistics here are all computed (the study script records every one) and the scan uses the
one chosen by measurement on clean and backdoored digits models (README, "Scanning without the trigger").
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

MAD_SCALE = 1.4826  # makes the MAD a consistent estimator of the standard deviation for normal data


def filled(sizes: Sequence[float | None], ceiling: float) -> list[float]:
    """Sizes with classes that never reached the target counted at the probe's ceiling (kept positive)."""
    floor = ceiling * 1e-6
    return [max(floor, ceiling if s is None else min(float(s), ceiling)) for s in sizes]


def smallest(sizes: Sequence[float | None], ceiling: float) -> int:
    """The class with the smallest trigger (ties: the lowest class index)."""
    values = filled(sizes, ceiling)
    return min(range(len(values)), key=values.__getitem__)


def mad_index(sizes: Sequence[float | None], ceiling: float, log: bool = False) -> float:
    """Neural Cleanse's anomaly index of the smallest class: ``(median - min) / (1.4826 * MAD)``.

    ``log`` compares log sizes, which treats "half the median" the same at every scale. Returns 0 when all
    sizes are equal, and caps the index at 1e3 when the MAD is zero but the minimum is not the median.
    """
    values = filled(sizes, ceiling)
    if log:
        values = [math.log(v) for v in values]
    med = statistics.median(values)
    mad = MAD_SCALE * statistics.median(abs(v - med) for v in values)
    gap = med - min(values)
    if gap <= 0:
        return 0.0
    return min(1e3, gap / mad) if mad > 0 else 1e3


def median_ratio(sizes: Sequence[float | None], ceiling: float) -> float:
    """How many times smaller than the median the smallest class's trigger is (>= 1)."""
    values = filled(sizes, ceiling)
    return statistics.median(values) / min(values)


def second_ratio(sizes: Sequence[float | None], ceiling: float) -> float:
    """How many times smaller than the second smallest the smallest class's trigger is (>= 1)."""
    values = sorted(filled(sizes, ceiling))
    return values[1] / values[0] if len(values) > 1 else 1.0


STATISTICS = {
    "mad": lambda s, c: mad_index(s, c),
    "log_mad": lambda s, c: mad_index(s, c, log=True),
    "median_ratio": median_ratio,
    "second_ratio": second_ratio,
}
