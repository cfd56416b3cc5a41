"""``bcu``: the headless front end. It drives the same core job API as the desktop app.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (one line on stderr), 128 + the signal's number when
stopped by a signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP: each stops at the next batch, saves and keeps the
run folder resumable; a second signal exits at once), 141 when stdout's reader went away (``| head``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from .common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, OneLineParser, pct
from .core.atomic import dumps
from .core.printable import printable
from .core.errors import BcuError, ConfigError
from .core.events import Failed, Finished
from .core.groups import DEFAULT_PRESET, PRESET_NAMES, parse_ratios
from .core.outcome import EXIT_RUINED
from .core.runfolder.layout import CONFIG_FILE
from .core.keep import KEEP_CHOICES, KEEP_HELP
from .stop_signals import Abort, SaveThenAbort, handling


def _model_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument("checkpoint", nargs="?" if optional else None, help="suspicious model: .pt/.pth/.bin/.ckpt, .safetensors, TorchScript, "
                   "or BackdoorBench's attack_result.pt")
    p.add_argument("--arch", help="architecture name when it cannot be inferred (see `bcu archs`)")
    p.add_argument("--input-size", type=int, help="input image size in pixels (square)")
    p.add_argument("--normalize", help="none | cifar10 | gtsrb | imagenet | mean,std | m1,m2,m3,s1,s2,s3")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a pickled model (runs code from the file: trusted files only)")


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-clean", metavar="DIR", help="labelled clean images (one sub-folder per class) for ACC")
    p.add_argument("--eval-poisoned", metavar="DIR", help="triggered images for ASR")
    p.add_argument("--target-class", type=int, metavar="K", help="the attack's target class (for ASR)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bcu", description="Backdoor cleansing with unlabelled data (BCU, CVPR 2023).")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"bcu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("inspect", help="architecture, classes, input size and layer groups of a checkpoint")
    _model_args(p)
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESET_NAMES, help="ratios to show per group")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")

    p = sub.add_parser("evaluate", help="clean accuracy (ACC) and attack success rate (ASR) of a checkpoint")
    _model_args(p)
    _eval_args(p)

    p = sub.add_parser("cleanse", help="remove a backdoor by distilling a re-initialised student")
    _model_args(p, optional=True)
    p.add_argument("--unlabeled", metavar="DIR", help="unlabelled images to distil on (required for a new run)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an unfinished run (stopped, killed, crashed) from its last completed epoch "
                        "(a pickled checkpoint needs --trust-checkpoint again: trust is never read from the folder)")
    p.add_argument("--config", metavar="FILE",
                   help="repeat a run: the settings of a run's config.json (or its folder) into a new --out")
    _cleanse_args(p)

    p = sub.add_parser("demo", help="cleanse the built-in backdoored digits model (no data needed)",
                       description=_demo_description())
    p.add_argument("--ood", action="store_true", help="distil on out-of-distribution photo crops instead of digits")
    _cleanse_args(p, demo=True)

    sub.add_parser("archs", help="list the architectures BCU Studio knows")
    from .scan_command import add_parser as add_scan_parser

    add_scan_parser(sub, _model_args)
    from .sweep_command import add_parser as add_sweep_parser

    add_sweep_parser(sub, _model_args, _cleanse_args)
    from .report_command import add_parser as add_report_parser

    add_report_parser(sub)
    from .watch_command import add_parser as add_watch_parser

    add_watch_parser(sub)
    return parser


def _demo_description() -> str:
    """What the demo cleanses and where its files are, for `bcu demo --help`."""
    from .demo import demo_dir

    try:
        where = str(demo_dir())
    except Exception as exc:  # a broken install still gets its help text
        where = f"(not found: {exc})"
    return ("Cleanse the built-in backdoored digits model: a CIFAR-style ResNet-18 trained on scikit-learn's digits "
            f"with a 3x3 patch trigger to class 0. Its files (model.pt, the unlabelled, clean and triggered image "
            f"folders) are in {where}. The run folder is printed at the end (`saved ...`).")


def _cleanse_args(p: argparse.ArgumentParser, demo: bool = False, sweep: bool = False) -> None:
    """The training options; ``sweep``: without those a sweep sets per run (preset, ratios, seed, out)."""
    from .core.job import CleanseConfig
    from .demo.config import DEMO_EPOCHS, DEMO_PRESET

    if not demo:
        _eval_args(p)
    else:
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
        p.add_argument("--json", action="store_true", help="one JSON object per epoch, then a summary")
    if not sweep:
        p.add_argument("--preset", choices=PRESET_NAMES, default=None,
                       help="re-initialisation ratios (default: "
                            + (f"{DEMO_PRESET} for the demo)" if demo else "paper)"))
        p.add_argument("--ratios", help="per-group ratios on top of the preset, e.g. stem=0.01,layer4=0.27")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"distillation epochs (default {DEMO_EPOCHS if demo else CleanseConfig.epochs})")
    p.add_argument("--batch-size", type=_batch_size, default=None, metavar="N|auto",
                   help="batch size (default auto: about 10 steps an epoch, between 16 and 256)")
    p.add_argument("--lr", type=float, default=None, help="SGD learning rate (default 0.01)")
    if not sweep:
        p.add_argument("--seed", type=int, default=0, help="seed for the re-initialisation masks and training")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (auto: bf16 where supported)")
    p.add_argument("--keep", choices=KEEP_CHOICES, default="last",
                   help="which student to save: " + "; ".join(f"{k}: {v}" for k, v in KEEP_HELP.items()).replace("%", "%%"))
    p.add_argument("--hard-labels", action="store_true", default=None,
                   help="distil on the teacher's argmax with cross-entropy (the paper's Table 5 ablation) "
                        "instead of its softened probabilities")
    p.add_argument("--cosine-period", type=int, metavar="EPOCHS", default=None,
                   help="period of the cosine learning-rate schedule (default: the run's epochs, reaching 0 at "
                        "the end; the BCU authors' code uses 100 whatever the epochs)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help=f"random horizontal flips while distilling (default {'off for the demo' if demo else 'on'}): "
                        "right for natural photos, "
                        "wrong for digits and traffic signs, whose mirror image is another symbol")
    p.add_argument("--temperature-start", type=float, metavar="T", default=None,
                   help="distillation temperature before the first epoch (default 1)")
    rise = p.add_mutually_exclusive_group()
    rise.add_argument("--temperature-rise", type=float, metavar="R", default=None,
                      help="how much the temperature rises over the run, linearly (default 3: 1 -> 4)")
    rise.add_argument("--temperature-end", type=float, metavar="T", default=None,
                      help="the temperature at the last epoch (instead of --temperature-rise)")
    p.add_argument("--ema-decay", type=float, metavar="D", default=None,
                   help="per-step decay of the moving average of the student's weights (default 0.99; 0 turns "
                        "it off)")
    if not sweep:
        p.add_argument("--out", metavar="RUN_DIR", help="run folder (default: a new folder in the user data dir)")
        p.add_argument("--nproc", type=int, default=None, metavar="N",
                       help="train as N processes with DistributedDataParallel (one per GPU, or gloo on the CPU), "
                            "started through torchrun; the batch size stays global (README: more than one GPU)")
    p.add_argument("--adversarial", type=float, metavar="LAMBDA", default=None,
                   help="weight of the adversarial consistency term (label-free unlearning, core/unlearning.py): "
                        "the student must give the teacher's clean-image answer on images moved by universal "
                        "perturbations it is most sensitive to; 0 turns it off (default: 1 with the unlearn preset, "
                        "the default; 0 with the others)")
    p.add_argument("--adv-eps", type=float, metavar="E", default=None,
                   help="L_inf budget of those perturbations in pixel units, 0..1 (default 0.2)")
    p.add_argument("--adv-mode", choices=("targeted", "untargeted", "focused", "top"), default=None,
                   help="focused (default): one perturbation per class, pushed towards it, and only a class "
                        "whose shortcut stands out from the others carries the term; top (an experiment): only "
                        "the class standing highest, by its lead over the runner-up; targeted: every class "
                        "carries it; untargeted: one perturbation, pushed away from the teacher's answer")
    p.add_argument("--adv-step", type=float, metavar="F", default=None,
                   help="the perturbations' ascent step per optimiser step, a fraction of the budget (default 0.25)")
    p.add_argument("--adv-restart", type=int, metavar="EPOCHS", default=None,
                   help="restart the perturbations at random every EPOCHS epochs (default 10; 0: never)")
    p.add_argument("--adv-until", type=float, metavar="F", default=None,
                   help="the share of the epochs that carry the term, (0, 1] (default 1): plain distillation "
                        "after it lets the accuracy recover")
    p.add_argument("--feature-space", action="store_true", default=None,
                   help="record where a fixed sample of clean and triggered images sits in the penultimate layer "
                        "every epoch (features.npz, shown in the app's Feature space tab)")
    p.add_argument("--feature-sample", type=int, metavar="N", default=None,
                   help="clean (and triggered) images in each feature-space frame (default 200)")
    from .bigdata_args import add_bigdata_args

    add_bigdata_args(p)
    from .scan_command import add_cleanse_args as add_scan_args

    add_scan_args(p)


def _batch_size(text: str) -> int | str:
    """``--batch-size``: a whole number, or 'auto' (chosen from the unlabelled set's size)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got '{text}'") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `bcu inspect X | head -3`: the reader left; say nothing more, least of all a trace
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not raise again
        return 128 + getattr(signal, "SIGPIPE", 13)


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "archs":
            return _archs()
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "scan":
            from .scan_command import run as run_scan_command

            return run_scan_command(args, _load)
        if args.command == "sweep":
            from .sweep_command import run as run_sweep_command

            return run_sweep_command(args, _config)
        if args.command == "report":
            from .report_command import run as run_report_command

            return run_report_command(args)
        if args.command == "watch":
            from .watch_command import run as run_watch_command

            return run_watch_command(args)
        if args.nproc is not None and args.nproc != 1:
            return _launch(args, list(sys.argv[1:] if argv is None else argv))
        return _cleanse(args)
    except BcuError as exc:
        print(f"bcu: error: {printable(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("bcu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Abort as stop:
        print(f"bcu: {signal.Signals(stop.signum).name} again: aborted without saving; the run folder keeps its "
              "last completed epoch (continue it with `bcu cleanse --resume RUN_DIR`)", file=sys.stderr)
        return 128 + stop.signum
    except BrokenPipeError:
        raise
    except Exception as exc:  # inspect/evaluate: never a traceback, whatever a hostile file does
        print(f"bcu: error: {printable(_failure_line(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _failure_line(exc: BaseException) -> str:
    """One line for a failure that is not a BcuError (memory, files, torch internals)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "not enough memory to load or run this model; the file may claim sizes it does not hold"
    if isinstance(exc, OSError):
        return f"could not read or write {exc.filename or 'a file'}: {exc.strerror or exc}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"unexpected error: {type(exc).__name__}: {(lines[0] if lines else '')[:200]}"


def _archs() -> int:
    from .core.archs import REGISTRY, torchvision_available

    tv = torchvision_available()
    for spec in REGISTRY.values():
        note = " (needs torchvision: not available in this build)" if spec.needs_torchvision and not tv else ""
        print(f"{spec.name:20s} {spec.title}, default input {spec.input_size}, {spec.normalization}{note}")
    return EXIT_OK


def _load(args: argparse.Namespace):
    from .core.models import load_model

    return load_model(args.checkpoint, arch=args.arch, trust=args.trust_checkpoint,
                      input_size=args.input_size, normalize=args.normalize)


def _inspect(args: argparse.Namespace) -> int:
    from .core.groups import layer_groups, preset_ratios

    model = _load(args)
    groups = layer_groups(model.module)
    ratios = preset_ratios(args.preset, groups)
    if args.json:
        print(dumps({
            "checkpoint": str(model.path), "format": model.source_format, **model.metadata(),
            "parameters": model.parameter_count, "notes": model.notes, "sources": model.sources,
            "fresh_weights": model.init_rule,
            "groups": [{"name": g.name, "weights": g.weight_count, "ratio": ratios[g.name],
                        "reinitialised": g.reinit_estimate(ratios[g.name])} for g in groups],
        }, indent=2))
        return EXIT_OK
    width = f", width {model.width}" if model.width else ""
    print(f"checkpoint     {printable(model.path)} ({model.source_format})")
    print(f"architecture   {model.arch.title if model.arch else model.arch_name}{width}")
    print(f"classes        {model.num_classes}")
    print(f"input          {model.input_size}x{model.input_size}, "
          f"normalisation {printable(model.normalization.describe())}")
    print(f"parameters     {model.parameter_count:,}")
    for note in model.notes:
        print(f"note           {printable(note)}")  # notes quote the file's metadata
    print(f"\nlayer groups (ratios of preset '{args.preset}'):")
    print(f"  {'group':24s} {'weights':>12s} {'ratio':>7s} {'re-initialised':>15s}")
    for g in groups:
        print(f"  {printable(g.name):24s} {g.weight_count:12,d} {ratios[g.name]:7.3f} "
              f"{g.reinit_estimate(ratios[g.name]):15,d}")
    total = sum(g.weight_count for g in groups)
    chosen = sum(g.reinit_estimate(ratios[g.name]) for g in groups)
    print(f"  {'total':24s} {total:12,d} {chosen / max(1, total):7.3f} {chosen:15,d}")
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from .core.bundled import resolve_eval_sets
    from .core.devices import plan_compute
    from .core.evaluation import Evaluator

    model = _load(args)
    sets, bundled_note = resolve_eval_sets(args.eval_clean, args.eval_poisoned, args.target_class, model)
    if bundled_note:
        print(f"bcu: {printable(bundled_note)}", file=sys.stderr)
    if sets.clean is None and sets.triggered is None:
        raise ConfigError("give --eval-clean DIR (for ACC) and/or --eval-poisoned DIR --target-class K (for ASR)")
    for s in (sets.clean, sets.triggered):
        if s is not None and s.skipped_summary():
            print(f"bcu: warning: {printable(s.skipped_summary())}", file=sys.stderr)
    plan = plan_compute(args.device)
    result = Evaluator(sets, model.normalization, plan).measure(model.module.to(plan.device))
    result = {"acc": result["acc"], "asr": result["asr"],
              "clean_images": len(sets.clean) if sets.clean else 0,
              "triggered_images": len(sets.triggered) if sets.triggered else 0}
    if args.json:
        print(dumps(result))
    else:
        if result["acc"] is not None:
            print(f"ACC  {pct(result['acc'])}  ({result['clean_images']} clean images)")
        if result["asr"] is not None:
            print(f"ASR  {pct(result['asr'])}  ({result['triggered_images']} triggered non-target images, "
                  f"target class {sets.target})")
    return EXIT_OK


def _config(args: argparse.Namespace):
    from .bigdata_args import bigdata_settings
    from .core.job import CleanseConfig

    if args.command == "cleanse" and (args.resume or args.config):
        return _config_of_run(args)
    if args.command == "cleanse" and not (args.checkpoint and args.unlabeled):
        raise ConfigError("cleanse needs a checkpoint and --unlabeled DIR (or --resume RUN_DIR, or --config FILE)")
    overrides = {k: v for k, v in {"preset": args.preset, "epochs": args.epochs, "batch_size": args.batch_size,
                                   "lr": args.lr, "hard_labels": args.hard_labels,
                                   "cosine_period": args.cosine_period, "flip": args.flip,
                                   "temperature_start": args.temperature_start,
                                   "temperature_rise": args.temperature_rise, "feature_space": args.feature_space,
                                   "feature_sample": args.feature_sample, "adversarial": args.adversarial,
                                   "adv_eps": args.adv_eps, "adv_mode": args.adv_mode, "adv_step": args.adv_step,
                                   "adv_restart": args.adv_restart, "adv_until": args.adv_until}.items() if v is not None}
    if overrides.get("adv_restart") == 0:
        overrides["adv_restart"] = None
    if args.temperature_end is not None:
        start = args.temperature_start if args.temperature_start is not None else 1.0
        if args.temperature_end < start:
            raise ConfigError(f"the end temperature ({args.temperature_end:g}) must not be below the start "
                              f"({start:g})")
        overrides["temperature_rise"] = args.temperature_end - start
    if overrides.get("batch_size") == "auto":
        overrides["batch_size"] = None  # explicit auto: also overrides a demo's own batch size
    if args.ema_decay is not None:
        overrides["ema_decay"] = args.ema_decay or None
    common = dict(device=args.device, seed=args.seed, precision=args.precision, keep=args.keep, out=args.out,
                  ratios=parse_ratios(args.ratios) if args.ratios else {}, **bigdata_settings(args))
    if args.command == "demo":
        from .demo.config import demo_config

        cfg = demo_config(ood=args.ood, **common)
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return cfg
    return CleanseConfig(checkpoint=args.checkpoint, unlabeled=args.unlabeled, eval_clean=args.eval_clean,
                         eval_poisoned=args.eval_poisoned, target_class=args.target_class, arch=args.arch,
                         input_size=args.input_size, normalize=args.normalize,
                         trust_checkpoint=args.trust_checkpoint, **common, **overrides)


def _config_of_run(args: argparse.Namespace):
    """``--resume RUN_DIR``: that run's settings, into that folder; ``--config FILE``: a file's, into a new one."""
    from .bigdata_args import bigdata_settings
    from .core.job import CleanseConfig

    if args.resume and args.config:
        raise ConfigError("give --resume RUN_DIR (continue a run) or --config FILE (repeat one), not both")
    if args.checkpoint or args.unlabeled:
        raise ConfigError(f"{'--resume' if args.resume else '--config'} takes the checkpoint and images from the "
                          "run's settings; leave out the checkpoint and --unlabeled")
    if args.resume:
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise ConfigError("--resume continues the run in its own folder; leave out --out")
        cfg = CleanseConfig.from_run(args.resume, out=args.resume)
        changed = [flag for flag, value in (("--preset", args.preset), ("--epochs", args.epochs),
                                            ("--batch-size", args.batch_size), ("--lr", args.lr),
                                            ("--ratios", args.ratios), ("--feature-space", args.feature_space),
                                            ("--feature-sample", args.feature_sample),
                                            ("--adversarial", args.adversarial), ("--adv-eps", args.adv_eps),
                                            ("--adv-mode", args.adv_mode), ("--adv-step", args.adv_step),
                                            ("--adv-restart", args.adv_restart),
                                            ("--adv-until", args.adv_until)) if value is not None]
        if changed:
            raise ConfigError(f"a resumed run keeps its settings; {', '.join(changed)} cannot change them "
                              "(repeat it with --config RUN_DIR/config.json to change settings)")
        return _trust_from_command_line(cfg, args)
    source = Path(args.config)
    cfg = CleanseConfig.from_run(source if source.is_dir() else source.parent, out=args.out) \
        if source.is_dir() or source.name == CONFIG_FILE else CleanseConfig.from_file(source, args.out)
    _trust_from_command_line(cfg, args)
    for key, value in {"preset": args.preset, "epochs": args.epochs, "batch_size": args.batch_size,
                       "lr": args.lr, "feature_space": args.feature_space,
                       "feature_sample": args.feature_sample, "adversarial": args.adversarial,
                       "adv_eps": args.adv_eps, "adv_mode": args.adv_mode, "adv_step": args.adv_step,
                       "adv_until": args.adv_until}.items():
        if value is not None:
            setattr(cfg, key, None if value == "auto" else value)  # --batch-size auto: chosen from the set
    if args.adv_restart is not None:
        cfg.adv_restart = args.adv_restart or None  # 0: never
    if args.ratios:
        cfg.ratios = parse_ratios(args.ratios)
    if args.device != "auto":
        cfg.device = args.device
    for key, value in bigdata_settings(args).items():
        setattr(cfg, key, value)
    return cfg


def _trust_from_command_line(cfg, args: argparse.Namespace):
    """Trust in the checkpoint comes from this command line only, never from a config file (which anyone who
    can write the run folder wrote): a saved ``trust_checkpoint`` was dropped on reading (CleanseConfig.from_file)."""
    cfg.trust_checkpoint = bool(args.trust_checkpoint)
    return cfg


def _launch(args: argparse.Namespace, argv: list[str]) -> int:
    """``--nproc N``: check the settings here (one line, exit 2), then run the same command under torchrun."""
    from . import launcher
    from .core import distributed
    from .core.resume import check_out_folder

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    if distributed.placement() is not None:
        raise ConfigError("--nproc starts torchrun itself; under torchrun, leave it out")
    cfg = _config(args)
    cfg.validate()
    if cfg.out:
        check_out_folder(cfg.out, cfg.to_dict(), bool(getattr(args, "resume", None)))
    distributed.choose_device(cfg.device, args.nproc - 1)  # enough GPUs for one a process, when on GPUs
    return launcher.run(argv, args.nproc)


def _cleanse(args: argparse.Namespace) -> int:
    from .core import distributed
    from .console import ConsoleReporter, JsonReporter, SilentReporter

    cfg = _config(args)
    if args.command == "cleanse" and args.resume and args.scan:
        raise ConfigError("--scan cannot be added when resuming a run; resume it as it started")
    ctx = distributed.setup(cfg.device)  # under torchrun with several processes: join them (else None)
    try:
        quiet = ctx is not None and not ctx.is_main  # ranks other than 0 print their own errors only
        return _cleanse_in(args, cfg, ctx, SilentReporter() if quiet else
                           JsonReporter() if args.json else ConsoleReporter())
    finally:
        if ctx is not None:
            ctx.close()


def _cleanse_in(args: argparse.Namespace, cfg, ctx, reporter) -> int:
    """Run the job in this process (one of several under torchrun when ``ctx`` is set) and report it."""
    from .core.job import CleanseJob

    model, hooks = None, []
    who = "bcu" if ctx is None or ctx.is_main else f"bcu (process {ctx.rank})"
    if args.scan and (ctx is None or ctx.is_main):  # scan before and after (rank 0 alone scans)
        from .scan_command import cleanse_hook

        model, hook = cleanse_hook(args, cfg)
        hooks.append(hook)
    resume = args.command == "cleanse" and bool(args.resume)
    job = CleanseJob(cfg, model=model, hooks=hooks, resume=resume, dist=ctx)
    for hook in hooks:
        hook.cancel = lambda: job.cancelled  # a stop signal during a scan stops it too
    speaks = ctx is None or ctx.is_main
    rule = SaveThenAbort(lambda: job.cancelled, job.cancel,
                         lambda name: (f"\nbcu: {name}: stopping after this batch and saving ({name} again to "
                                       "abort)...") if speaks else None,
                         abortable=ctx is None)  # under torchrun, never abort a save (it kills 30 s later)
    stopped_by = rule.stopped_by
    try:
        with handling(rule):
            for event in job.events():
                reporter.handle(event)
                if isinstance(event, Failed):
                    print(f"{who}: error: {printable(event.message)}", file=sys.stderr)
                    return EXIT_BAD_INPUT if event.kind == "input" else EXIT_FAILED
                if isinstance(event, Finished):
                    if hooks and not args.json:
                        from .scan_command import verdict_lines

                        print("\n".join(verdict_lines(event.summary)))
                    if event.cancelled:
                        if ctx is None or ctx.is_main:
                            again = f" --nproc {ctx.world_size}" if ctx is not None else ""
                            print(f"bcu: stopped; continue with "
                                  f"`bcu cleanse --resume {printable(event.run_dir)}{again}`", file=sys.stderr)
                        return 128 + stopped_by[0] if stopped_by else EXIT_INTERRUPTED
                    if event.summary.outcome().kind == "ruined":
                        if ctx is not None and not ctx.is_main:  # rank 0 says the verdict and carries its exit code
                            return EXIT_OK
                        print(f"bcu: {event.summary.outcome().headline}", file=sys.stderr)
                        return EXIT_RUINED
                    return EXIT_OK
    finally:
        reporter.close()
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
