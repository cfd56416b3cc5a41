"""`bcu demo --nproc 2` listens on 127.0.0.1 only (issue 19, point 8).

torchrun's agent hosts two TCP stores that take anyone's keys; on today's torch they listen on ``*:port``
unless handed a socket (bcu_gui/loopback.py). A real two-process gloo run (1 epoch of the demo) is watched
with ``ss -ltnp`` while it runs: every socket the launcher's process tree listens on must be on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bcu_gui.core.outcome import EXIT_RUINED
from bcu_gui.launcher import torchrun_env

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")]

_LISTEN = re.compile(r"^LISTEN\s+\d+\s+\d+\s+(\S+):(\d+)\s+.*pid=(\d+)")


def _tree(root: int) -> set[int]:
    """``root`` and every process descended from it, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def test_a_two_process_run_listens_on_loopback_only(tmp_path):
    env = torchrun_env(2, {**os.environ, "OMP_NUM_THREADS": "1", "XDG_DATA_HOME": str(tmp_path / "data")})
    proc = subprocess.Popen([sys.executable, "-m", "bcu_gui.cli", "demo", "--nproc", "2", "--device", "cpu",
                             "--epochs", "1", "--ema-decay", "0", "--json", "--out", str(tmp_path / "run")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, int, int]] = set()
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            tree = _tree(proc.pid)
            listing = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
            for line in listing.splitlines():
                match = _LISTEN.match(line)
                if match and int(match.group(3)) in tree:
                    seen.add((match.group(1), int(match.group(2)), int(match.group(3))))
            time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, EXIT_RUINED), err[-2000:]  # 1 epoch of the demo is judged ruined: exit 3
    # the agent's rendezvous store and the store it shares with the workers, and gloo's listeners in the workers
    assert len(seen) >= 3, seen
    assert {host for host, _, _ in seen} == {"127.0.0.1"}, seen
