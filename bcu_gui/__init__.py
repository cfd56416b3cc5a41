"""BCU Studio: backdoor cleansing with unlabelled data."""

import os as _os

# Before anything imports torch: OpenMP threads that wait sleep instead of spinning, so a run shares the CPUs
# with the user's other programs instead of fighting them (core/threads.py; benchmarks/contention.py). A policy
# the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
