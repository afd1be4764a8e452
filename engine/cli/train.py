"""`allblast-engine train`: the terminal driver of the engine's `fit` generator."""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

from tqdm import tqdm

from ..learn.events import (AskContinue, BatchProgress, Continue, EpochEnd, Halt, Message, TrainingFailed,
                            TrainingFinished, TrainingStarted)
from ..utils.jobs import CancelToken
from ..learn.recipes import RECIPES as RECIPE_CHOICES
from .common import (UserError, add_db_arg, add_scan_args, expert_labels_if_asked, scan_with_progress,
                     summarise_scan)

SPLIT_HELP = ("patient: no patient in two splits (default, honest); image: the paper's random "
              "image-level 90/5/5 split (LEAKY: the same patient's cells in train and test); "
              "folds: C-NMC's fold_0..2 as given; predefined: validation from --val")


def add_train_command(sub) -> None:
    p = sub.add_parser("train", help="fine-tune an ImageNet EfficientNet on a labelled folder",
                       description="Fine-tune a timm backbone with the paper's head (global max pool, "
                       "BatchNorm, Dense 256 ReLU, Dropout 0.45, softmax) using Adamax. Writes a run "
                       "folder: model.pt (best), last.pt, config.json, split.json, metrics.jsonl, "
                       "model_card.json. Ctrl+C stops after the current batch and keeps checkpoints.")
    p.add_argument("dir", metavar="DIR", help="labelled data folder")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to create (or resume)")
    add_scan_args(p)
    p.add_argument("--expert-labels", action="store_true", help="train on the expert's current labels from the "
                   "label store (the app's corrections) instead of the data set's own labels")
    add_db_arg(p)
    p.add_argument("--val", metavar="DIR", help="separate validation folder (implies --split predefined)")
    p.add_argument("--val-labels", metavar="CSV", help="labels CSV for --val")
    p.add_argument("--test", metavar="DIR", help="separate labelled test folder: the final test pass runs on it, "
                   "and every other cell but the validation split trains (--test-fraction defaults to 0)")
    p.add_argument("--recipe", choices=list(RECIPE_CHOICES), default="allblast", help="paper: the paper's notebook "
                   "exactly (Adamax 1e-3, batch 32, flips, plateau halving); allblast (default): the recipe of "
                   "measured improvements: batch 16, an EMA of the weights, TTA on the test pass (README, Recipes)")
    p.add_argument("--split", choices=["patient", "image", "folds", "predefined"], default=None, help=SPLIT_HELP)
    p.add_argument("--backbone", default="efficientnet_b3", help="any timm model name (default: %(default)s)")
    p.add_argument("--weights", metavar="FILE", help="ImageNet weights file for the backbone "
                   "(timm/torch checkpoint or .safetensors); default: timm's hub cache")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation (no ImageNet weights)")
    p.add_argument("--img-size", type=int, metavar="N", help="input size (default: the backbone's pretrained size)")
    p.add_argument("--epochs", type=int, default=10, metavar="N", help="epochs to train (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="default: the recipe's (allblast 16, paper 32)")
    p.add_argument("--lr", type=float, default=None, help="Adamax learning rate (default: the recipe's, 1e-3)")
    p.add_argument("--ask-every", type=int, default=5, metavar="N", help="ask 'halt or continue?' every N "
                   "epochs on a terminal, like the paper's notebook; 0 never asks (default: %(default)s)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: %(default)s")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes (default: automatic)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, augmentation and init (default: 0)")
    p.add_argument("--val-fraction", type=float, metavar="F", help="share of patients (or images) for "
                   "validation (default: 0.15 by patient, 0.05 by image)")
    p.add_argument("--test-fraction", type=float, metavar="F", help="share held out for a final test "
                   "(default: as --val-fraction; 0 with --test)")
    p.add_argument("--monitor", choices=["val_loss", "val_accuracy", "val_weighted_f1"], default="val_loss",
                   help="metric that picks the best checkpoint and drives LR halving (default: %(default)s)")
    p.add_argument("--no-amp", action="store_true", help="full precision on CUDA (mixed precision is the default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--ddp", action="store_true", help="train with DistributedDataParallel, one process per GPU "
                   "(runs this command under torchrun; see docs/scaling.md)")
    p.add_argument("--nproc-per-node", type=int, metavar="N", help="with --ddp: processes to start (default: "
                   "one per visible GPU)")
    p.add_argument("--sync-bn", action="store_true", help="with DDP: BatchNorm statistics over all GPUs' batches")
    p.set_defaults(func=cmd_train)


def _ask(event: AskContinue) -> Continue | Halt:
    while True:
        try:
            answer = input(f"\nEpoch {event.epoch} done (best: epoch {event.best_epoch}, "
                           f"{event.best_metric:.4f}). Enter H to halt, or a number of epochs to "
                           f"continue [{event.suggested_epochs}]: ").strip().lower()
        except EOFError:
            return Halt()
        if answer in ("h", "halt", "q"):
            return Halt()
        if answer == "":
            return Continue(event.suggested_epochs)
        if answer.isdigit() and int(answer) > 0:
            return Continue(int(answer))
        print("please type H or a positive number")


def launch_torchrun(args: argparse.Namespace, argv: list[str]) -> int:
    """`train --ddp`: this same command under torchrun, one process per GPU (on this machine)."""
    import torch

    n = args.nproc_per_node or torch.cuda.device_count()
    if n < 1:
        raise UserError("--ddp found no GPU: give --nproc-per-node N (on the CPU, N gloo processes)")
    rest, skip = [], False
    for a in argv:  # the command line without --ddp / --nproc-per-node
        if skip:
            skip = False
        elif a == "--ddp" or a.startswith("--nproc-per-node="):
            continue
        elif a == "--nproc-per-node":
            skip = True
        else:
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "engine.cli", *rest]
    tqdm.write(f"starting {n} training processes: {' '.join(cmd)}")
    return subprocess.call(cmd)


def cmd_train(args: argparse.Namespace) -> int:
    from ..learn.distributed import is_main_process, launched_by_torchrun, shutdown

    if args.ddp and not launched_by_torchrun():
        return launch_torchrun(args, sys.argv[1:])
    main = is_main_process()  # torchrun's other ranks train silently: rank 0 speaks for them
    quiet = args.quiet or not main
    if not main:  # their warnings are rank 0's too; a --log-file still gets everything
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL)
    try:
        return _train(args, main, quiet)
    finally:
        shutdown()


def _train(args: argparse.Namespace, main: bool, quiet: bool) -> int:
    from ..learn.fit import fit

    config = config_from_args(args)  # refused settings are said before minutes of scanning
    if main and not args.resume:
        check_new_run_folder(args.out)
    # torchrun's other ranks read the labels too: rank 0 holds the folder for them
    data = scan_with_progress(args.dir, args.labels, args.patient_regex, quiet)
    data = expert_labels_if_asked(data, args, hold=main)
    if main:
        print(summarise_scan(data))
    val = scan_with_progress(args.val, args.val_labels, args.patient_regex, quiet) if args.val else None
    if config.ask_every > 0 and main and not sys.stdin.isatty():
        # Nobody can answer: --epochs is the end (a pipe or a scheduler must not train forever).
        # Under torchrun rank 0's config (and so this) is what every rank uses.
        tqdm.write(f"not on a terminal: training {config.epochs} epochs without asking to continue")
        config.ask_every = 0
    token = CancelToken()
    gen = fit(data, args.out, config, val_scan=val, cancel=token, resume=args.resume)
    bar: tqdm | None = None
    decision = None
    status = 0
    while True:
        try:
            event = gen.send(decision)
            if not main and not isinstance(event, TrainingFailed):
                continue  # rank 0 reports (a failure is told by the rank it happened on)
        except StopIteration:
            break
        except KeyboardInterrupt:
            if token.cancelled:
                raise
            token.cancel()  # the engine stops after this batch and keeps its checkpoints
            tqdm.write("cancelling after the current batch (Ctrl+C again to abort at once)")
            decision = None
            continue
        decision = None
        if isinstance(event, TrainingStarted):
            tqdm.write(f"training {event.n_train} cells, validating on {event.n_val}, testing on {event.n_test} "
                       f"({event.split_protocol} split) on {event.device}; weights: {event.weights_source}")
        elif isinstance(event, BatchProgress) and event.phase == "train":
            if bar is None or bar.total != event.n_batches or event.batch == 1 and bar.n > 0:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=event.n_batches, desc=f"epoch {event.epoch}", unit="batch",
                           disable=args.quiet, leave=False)
            bar.n = event.batch
            bar.set_postfix(loss=f"{event.loss:.4f}" if event.loss is not None else "-",
                            acc=f"{event.accuracy:.3f}" if event.accuracy is not None else "-",
                            refresh=False)
            bar.refresh()
        elif isinstance(event, EpochEnd):
            if bar is not None:
                bar.close()
                bar = None
            tqdm.write(_epoch_line(event))
        elif isinstance(event, AskContinue):
            decision = _ask(event)
        elif isinstance(event, Message):
            tqdm.write(event.text)
        elif isinstance(event, TrainingFinished):
            tqdm.write(f"finished ({event.reason}) after {event.epochs_run} epochs; best epoch {event.best_epoch}: "
                       + ", ".join(f"{k} {v:.4f}" for k, v in event.best_metrics.items() if isinstance(v, float)))
            if event.test_metrics:
                tm = event.test_metrics
                tqdm.write(f"test: accuracy {tm.get('accuracy', float('nan')):.4f}, weighted F1 "
                           f"{tm.get('weighted_f1', float('nan')):.4f} on {tm.get('n', '?')} cells"
                           + _leaky_label(tm))
            tqdm.write(f"run folder: {event.run_dir}")
            status = 130 if event.reason == "cancelled" else 0
        elif isinstance(event, TrainingFailed):
            tqdm.write(f"error ({event.kind}): {event.message}")
            status = 1
    if bar is not None:
        bar.close()
    return status


def config_from_args(args: argparse.Namespace):
    """The run's TrainConfig: the recipe's hyper-parameters, then what the command line gives;
    checked (TrainConfig.validate: the image size range, ...) before anything starts."""
    from ..learn.recipes import recipe_config

    split = args.split or ("predefined" if args.val else "patient")
    if split == "predefined" and not args.val:
        raise UserError("--split predefined needs --val DIR")
    explicit = {k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size)) if v is not None}
    config = recipe_config(args.recipe, backbone=args.backbone, weights=args.weights,
                           pretrained=not args.no_pretrained, img_size=args.img_size, epochs=args.epochs,
                           ask_every=args.ask_every, device=args.device, workers=args.workers, seed=args.seed,
                           split=split, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           monitor=args.monitor, amp=not args.no_amp, sync_bn=args.sync_bn,
                           test_dir=os.path.abspath(args.test) if args.test else None, **explicit)
    try:
        config.validate()
    except ValueError as exc:
        raise UserError(f"refused: {exc}") from None
    return config


def check_new_run_folder(out: str) -> None:
    """A new run goes neither into allblast's .allblast/ folder nor among images (the rule every
    writer follows, engine.labels.outputs), nor over another run (refused without a change)."""
    from ..labels.outputs import OutputRefused, check_output
    from ..learn.run_folder import RunDir

    try:
        check_output(out, what="training run", folder=True)
    except OutputRefused as exc:
        raise UserError(str(exc)) from None
    if RunDir(out).has_run():
        raise UserError(f"{out} already holds a training run; choose a new output folder, or add --resume "
                        "to continue it")


def _leaky_label(test_metrics: dict) -> str:
    """The README's promise: a leaky split is labelled in every output, the final test line too."""
    if not test_metrics.get("leaky"):
        return ""
    protocol = test_metrics.get("split_protocol")
    return (" (leaky: image-level split)" if protocol in (None, "image")
            else f" (leaky: the {protocol} split shares patients between splits)")


def _epoch_line(e: EpochEnd) -> str:
    def fmt(d: dict) -> str:
        return " ".join(f"{k} {v:.4f}" for k, v in d.items() if isinstance(v, (int, float)) and k in
                        ("loss", "accuracy", "weighted_f1"))
    best = " *best*" if e.is_best else ""
    return f"epoch {e.epoch}: train [{fmt(e.train)}] val [{fmt(e.val)}] lr {e.lr:.2e} {e.seconds:.0f}s{best}"
