"""The cleanse options for big image sets: the memory budget, the decoded-image cache, and evaluation pacing.

Kept beside ``cli.py`` so the parser and the settings they become are defined in one place; parsing errors are
argparse errors, i.e. one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse

from .core.errors import ConfigError


def _budget(text: str) -> int | str:
    from .core.memory_budget import parse_budget

    try:
        value = parse_budget(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return "auto" if value is None else value


def _subset(text: str) -> int | str:
    from .core.eval_schedule import parse_eval_subset

    try:
        return parse_eval_subset(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _every(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--eval-every takes a whole number of epochs or 'auto', got '{text}'") \
            from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--eval-every must be at least 1, got {value}")
    return value


def add_bigdata_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-budget", type=_budget, default=None, metavar="SIZE|auto",
                   help="memory the unlabelled images may take, e.g. 2GB or 512MiB (default auto: a quarter of RAM, "
                        "or of GPU memory for the copy on the GPU); a bigger set is decoded once into a disk cache "
                        "and streamed")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="where a set over the budget is cached decoded (default: the user cache directory)")
    p.add_argument("--eval-every", type=_every, default=None, metavar="K|auto",
                   help="measure ACC / ASR every K epochs (default auto: from the set sizes); the last epoch always")
    p.add_argument("--eval-subset", type=_subset, default=None, metavar="N|auto|all",
                   help="images per evaluation set measured between epochs (default auto: a fixed random subset "
                        "when the sets would cost more than ~20%% of an epoch); the end is always on the full sets")


def bigdata_settings(args: argparse.Namespace) -> dict:
    """The ``CleanseConfig`` fields the user gave on the command line (absent ones keep the config's own)."""
    out: dict = {}
    budget = getattr(args, "memory_budget", None)
    if budget is not None:
        out["memory_budget"] = None if budget == "auto" else budget
    if getattr(args, "cache_dir", None):
        out["cache_dir"] = args.cache_dir
    every = getattr(args, "eval_every", None)
    if every is not None:
        out["eval_every"] = None if every == "auto" else every
    if getattr(args, "eval_subset", None) is not None:
        out["eval_subset"] = args.eval_subset
    return out
