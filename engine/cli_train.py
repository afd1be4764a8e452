"""`train`, `predict` and `evaluate`: the CLI drivers of the engine's generators."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from .events import (AskContinue, BatchProgress, CancelToken, Continue, EpochEnd, Halt, Message,
                     PredictProgress, TrainingFailed, TrainingFinished, TrainingStarted)

SPLIT_HELP = ("patient: no patient in two splits (default, honest); image: the paper's random "
              "image-level 90/5/5 split (LEAKY: the same patient's cells in train and test); "
              "folds: C-NMC's fold_0..2 as given; predefined: validation from --val")


def add_train_commands(sub, add_scan_args) -> None:
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

    p = sub.add_parser("predict", help="per-cell class probabilities for a folder",
                       description="Predict every cell in DIR with a trained model.pt. Writes a CSV with "
                       "columns path,patient,predicted,p_<class>...,margin,entropy (paths relative to DIR).")
    p.add_argument("model", metavar="MODEL", help="model.pt from a run folder")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--out", required=True, metavar="CSV")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over flips and rotations")
    add_scan_args(p)
    _add_infer_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="accuracy, per-class F1, weighted F1, ROC AUC on a labelled folder",
                       description="Evaluate a model on a labelled folder (class folders or --labels CSV): "
                       "accuracy, per-class precision/recall/F1/support, weighted F1 (the C-NMC metric), "
                       "macro F1, balanced accuracy, ROC AUC (two classes), confusion matrix, per-patient rows.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--json", required=True, metavar="OUT")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--expert-labels", action="store_true", help="score against the expert's current labels "
                   "from the label store instead of the data set's own labels")
    add_scan_args(p)
    _add_infer_args(p)
    p.set_defaults(func=cmd_evaluate)


def _add_infer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="default: %(default)s")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--workers", type=int, default=0, metavar="N")


def _ask(event: AskContinue, default: int) -> Continue | Halt:
    if not sys.stdin.isatty():
        tqdm.write(f"epoch {event.epoch}: not on a terminal, continuing without asking "
                   "(use --ask-every 0 to silence this)")
        return Continue(default)
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
    from .cli import UserError, scan_with_progress, summarise_scan
    from .training import TrainConfig, fit

    data = _expert(scan_with_progress(args.dir, args.labels, args.patient_regex, args.quiet), args)
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
            decision = _ask(event, max(1, args.ask_every))
        elif isinstance(event, Message):
            tqdm.write(("warning: " if event.level == "warning" else "") + event.text)
        elif isinstance(event, TrainingFinished):
            tqdm.write(f"finished ({event.reason}) after {event.epochs_run} epochs; best epoch {event.best_epoch}: "
                       + ", ".join(f"{k} {v:.4f}" for k, v in event.best_metrics.items() if isinstance(v, float)))
            if event.test_metrics:
                tm = event.test_metrics
                tqdm.write(f"test: accuracy {tm.get('accuracy', float('nan')):.4f}, weighted F1 "
                           f"{tm.get('weighted_f1', float('nan')):.4f} on {tm.get('n', '?')} cells")
            tqdm.write(f"run folder: {event.run_dir}")
            status = 130 if event.reason == "cancelled" else 0
        elif isinstance(event, TrainingFailed):
            tqdm.write(f"error ({event.kind}): {event.message}")
            status = 1
    if bar is not None:
        bar.close()
    return status


def _expert(data, args: argparse.Namespace):
    """Swap in the expert's labels from the label store when asked to."""
    if not getattr(args, "expert_labels", False):
        return data
    from .index import with_expert_labels

    data, changed = with_expert_labels(data)
    tqdm.write(f"expert labels: {changed} of {len(data.cells)} cells differ from the data set's labels")
    return data


def _epoch_line(e: EpochEnd) -> str:
    def fmt(d: dict) -> str:
        return " ".join(f"{k} {v:.4f}" for k, v in d.items() if isinstance(v, (int, float)) and k in
                        ("loss", "accuracy", "weighted_f1"))
    best = " *best*" if e.is_best else ""
    return f"epoch {e.epoch}: train [{fmt(e.train)}] val [{fmt(e.val)}] lr {e.lr:.2e} {e.seconds:.0f}s{best}"


def _run_predict(args: argparse.Namespace):
    from .cli import scan_with_progress
    from .inference import predict_iter
    from .model import load_model, resolve_device

    device = resolve_device(args.device)
    model, spec, _ = load_model(args.model, device)
    data = _expert(scan_with_progress(args.dir, args.labels, args.patient_regex, args.quiet), args)
    gen = predict_iter(model, spec, data.root, data.cells, device=device, batch_size=args.batch_size,
                       tta=args.tta, workers=args.workers)
    with tqdm(total=len(data.cells), unit="img", desc="predict", disable=args.quiet) as bar:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                preds = stop.value
                break
            if isinstance(event, PredictProgress):
                bar.n = event.done
                bar.refresh()
    for p in data.problems + list(preds.problems):
        tqdm.write(f"skipped {p.path}: {p.reason}")
    return data, spec, preds


def cmd_predict(args: argparse.Namespace) -> int:
    from .fsutil import check_writable_dir

    check_writable_dir(Path(args.out).expanduser().resolve().parent)
    _, _, preds = _run_predict(args)
    preds.write_csv(args.out)
    print(f"wrote {len(preds.paths)} predictions to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .cli import UserError, write_json
    from .metrics import classification_metrics, per_patient

    data, spec, preds = _run_predict(args)
    truth = {c.path: c.label for c in data.cells}
    keep = [i for i, p in enumerate(preds.paths) if truth.get(p) in spec.classes]
    unknown = sorted({truth.get(p) for p in preds.paths if truth.get(p) not in spec.classes} - {None})
    if not keep:
        raise UserError(f"no cells in {args.dir} carry one of the model's classes {list(spec.classes)}")
    y_true = [truth[preds.paths[i]] for i in keep]
    y_pred = [preds.predicted[i] for i in keep]
    report = classification_metrics(y_true, y_pred, list(spec.classes), probs=preds.probs[keep])
    report["per_patient"] = per_patient([preds.patients[i] for i in keep], y_true, y_pred, list(spec.classes))
    report["skipped"] = {"unlabeled": sum(1 for p in preds.paths if truth.get(p) is None),
                         "unknown_classes": unknown, "problems": len(data.problems) + len(preds.problems)}
    report["by_patient"] = data.by_patient
    report["tta"] = bool(args.tta)
    write_json(args.json, report)
    print(f"n {report['n']}  accuracy {report['accuracy']:.4f}  weighted F1 {report['weighted_f1']:.4f}  "
          f"macro F1 {report['macro_f1']:.4f}  balanced accuracy {report['balanced_accuracy']:.4f}"
          + (f"  ROC AUC {report['roc_auc']:.4f}" if report.get("roc_auc") is not None else ""))
    print(f"wrote {args.json}")
    return 0
