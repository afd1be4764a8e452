"""`allblast-engine train`: the terminal driver of the engine's `fit` generator."""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from ..learn.events import (AskContinue, BatchProgress, Continue, EpochEnd, Halt, Message, TrainingFailed,
                            TrainingFinished, TrainingStarted)
from ..utils.jobs import CancelToken
from .common import UserError, add_db_arg, add_scan_args, scan_with_progress, summarise_scan, with_expert_labels

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
    p.add_argument("--split", choices=["patient", "image", "folds", "predefined"], default=None, help=SPLIT_HELP)
    p.add_argument("--backbone", default="efficientnet_b3", help="any timm model name (default: %(default)s)")
    p.add_argument("--weights", metavar="FILE", help="ImageNet weights file for the backbone "
                   "(timm/torch checkpoint or .safetensors); default: timm's hub cache")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation (no ImageNet weights)")
    p.add_argument("--img-size", type=int, metavar="N", help="input size (default: the backbone's pretrained size)")
    p.add_argument("--epochs", type=int, default=10, metavar="N", help="epochs to train (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="default: %(default)s")
    p.add_argument("--lr", type=float, default=1e-3, help="Adamax learning rate (default: %(default)s, the paper's)")
    p.add_argument("--ask-every", type=int, default=5, metavar="N", help="ask 'halt or continue?' every N "
                   "epochs on a terminal, like the paper's notebook; 0 never asks (default: %(default)s)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: %(default)s")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes (default: automatic)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, augmentation and init (default: 0)")
    p.add_argument("--val-fraction", type=float, metavar="F", help="share of patients (or images) for "
                   "validation (default: 0.15 by patient, 0.05 by image)")
    p.add_argument("--test-fraction", type=float, metavar="F", help="share held out for a final test "
                   "(default: as --val-fraction)")
    p.add_argument("--monitor", choices=["val_loss", "val_accuracy", "val_weighted_f1"], default="val_loss",
                   help="metric that picks the best checkpoint and drives LR halving (default: %(default)s)")
    p.add_argument("--no-amp", action="store_true", help="full precision on CUDA (mixed precision is the default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
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


def cmd_train(args: argparse.Namespace) -> int:
    from ..learn.fit import TrainConfig, fit

    data = with_expert_labels(scan_with_progress(args.dir, args.labels, args.patient_regex, args.quiet), args)
    print(summarise_scan(data))
    val = scan_with_progress(args.val, args.val_labels, args.patient_regex, args.quiet) if args.val else None
    split = args.split or ("predefined" if args.val else "patient")
    if split == "predefined" and val is None:
        raise UserError("--split predefined needs --val DIR")
    config = TrainConfig(backbone=args.backbone, weights=args.weights, pretrained=not args.no_pretrained,
                         img_size=args.img_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         ask_every=args.ask_every, device=args.device, workers=args.workers, seed=args.seed,
                         split=split, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                         monitor=args.monitor, amp=not args.no_amp)
    if config.ask_every > 0 and not sys.stdin.isatty():
        # Nobody can answer: --epochs is the end (a pipe or a scheduler must not train forever).
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
