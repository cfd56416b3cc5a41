"""`bcu watch RUN_DIR`: follow, in a terminal, a run that another process is writing.

For a run on a server or under torchrun, seen from a shell on the same shared folder: one line per new epoch,
then how it ended. Exit status: 0 finished, 1 failed or died, 3 stopped (resumable), 130 interrupted (the run
itself goes on: watching never touches it). Everything printed that the run folder supplied (``failed.json``'s
message, ``running.json``'s host, a row's fields) has its control characters escaped (core/printable.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, pct
from .core.printable import printable

EXIT_STOPPED = 3


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("watch", help="follow a run another process is writing, until it ends or dies")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (bcu cleanse --out), existing or about to be")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between looks (default 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per epoch, then one for the end")
    return p


def run(args: argparse.Namespace) -> int:
    from .core.watch import RunFollower

    folder = Path(args.run_dir)
    if folder.exists() and not folder.is_dir() or not folder.parent.is_dir():
        print(f"bcu: error: {printable(folder)} is not a folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.interval <= 0:
        print("bcu: error: the interval must be positive", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        for update in RunFollower(folder).follow(interval=args.interval):
            for row in update.new_rows:
                _epoch(row, update.epochs, args.json)
            if not args.json and not update.new_rows and not update.ended:
                print(f"{update.state}: {printable(update.message)}", file=sys.stderr)
            if update.ended:
                if args.json:
                    print(json.dumps({"event": "end", "state": update.state, "message": update.message}), flush=True)
                else:
                    print(f"{update.state}: {printable(update.message)}", flush=True)
                return {"finished": EXIT_OK, "stopped": EXIT_STOPPED}.get(update.state, EXIT_FAILED)
    except KeyboardInterrupt:
        print("bcu: stopped watching (the run goes on)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def _epoch(row: dict, epochs: int, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"event": "epoch", **row}), flush=True)
        return
    extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
    proxy = f"  proxy ASR {pct(extra['proxy_asr'])}" if extra.get("proxy_asr") is not None else ""
    loss = row.get("loss")
    line = (f"epoch {row.get('epoch')}/{epochs or '?'}  loss {loss:.4f}  ACC {pct(row.get('acc'))}  "
            f"ASR {pct(row.get('asr'))}{proxy}" if isinstance(loss, (int, float)) else
            f"epoch {row.get('epoch')}/{epochs or '?'}  ACC {pct(row.get('acc'))}  ASR {pct(row.get('asr'))}{proxy}")
    print(printable(line), flush=True)  # the row is the run folder's text: its strings print as escapes
