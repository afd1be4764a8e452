"""`allblast-engine predict` and `evaluate`: a trained model over a folder of cells."""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from ..labels.outputs import check_output
from ..utils.logs import warn
from ..utils.text import printable
from .common import UserError, add_db_arg, add_scan_args, expert_labels_if_asked, scan_with_progress, write_json


def add_predict_commands(sub) -> None:
    p = sub.add_parser("predict", help="per-cell class probabilities for a folder",
                       description="Predict every cell in DIR with a trained model.pt. Writes a CSV with "
                       "columns path,patient,predicted,p_<class>...,margin,entropy,duplicate_of (paths relative to DIR; "
                       "a file with the same content as another gets a copy of its row, duplicate_of naming it), "
                       "and beside it CSV.model.json: the model (name, sha256, backbone, classes, split "
                       "protocol, whether that split was leaky, calibration temperature) and how it ran "
                       "(backend, precision, device, tta).")
    p.add_argument("model", metavar="MODEL", help="model.pt from a run folder")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--out", required=True, metavar="CSV")
    p.add_argument("--force", action="store_true",
                   help="replace CSV and CSV.model.json if they exist (never an image or the label database)")
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
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--expert-labels", action="store_true", help="score against the expert's current labels "
                   "from the label store instead of the data set's own labels")
    add_db_arg(p)
    add_scan_args(p)
    _add_infer_args(p)
    p.set_defaults(func=cmd_evaluate)


MODEL_SIDECAR = ".model.json"  # predictions.csv -> predictions.csv.model.json


def model_facts(model_path: str, spec, extras: dict) -> dict:
    """Which model made the numbers, and whether its split was leaky (the README promises the label
    in every output): from the run folder's model card when there is one, else from model.pt."""
    from ..data.splits import LEAKY_NOTE
    from ..learn.model import temperature_of
    from ..report.model_info import model_info

    info = model_info(model_path)
    protocol = info.split_protocol or extras.get("split_protocol")
    leaky = bool(info.leaky or extras.get("leaky"))
    return {"model": str(info.path), "name": info.name, "sha256": info.sha256, "backbone": spec.backbone,
            "img_size": spec.img_size, "classes": list(spec.classes), "split_protocol": protocol,
            "leaky": leaky, "leaky_note": (info.leaky_note or LEAKY_NOTE) if leaky else None,
            "calibration_temperature": temperature_of(extras)}


def _leaky_label(facts: dict) -> str:
    if not facts["leaky"]:
        return ""
    protocol = facts["split_protocol"]
    return (" (leaky: image-level split)" if protocol in (None, "image")
            else f" (leaky: the {protocol} split shares patients between splits)")


def _how(inference: dict) -> str:
    """'openvino f32 on cpu': which backend and precision made the numbers."""
    return f"{inference['backend']} {inference['precision']} on {inference['device']}"


def _add_infer_args(p: argparse.ArgumentParser) -> None:
    from ..learn.backends.base import BACKENDS, PRECISIONS

    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="default: %(default)s")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--workers", type=int, default=0, metavar="N")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="what runs the network: auto (OpenVINO on the CPU when installed, torch on a CUDA GPU, "
                   "else torch), torch, openvino, onnxruntime (the last two: pip install \"allblast[fast]\"; the "
                   "model is exported and compiled once, cached beside the model file). Default: %(default)s")
    p.add_argument("--precision", choices=PRECISIONS, default="f32",
                   help="f32 (default; agrees with training), or bf16 / f16 where the CPU or GPU has them (faster, "
                   "probabilities differ by about 0.01); stated in the output")


def _run_predict(args: argparse.Namespace, *, copy_duplicates: bool = False):
    """Scan DIR and predict its cells. `copy_duplicates`: duplicate files get their original's row
    (`Predictions.with_duplicates`) instead of being skipped."""
    from ..utils.jobs import WORKER_PRELOAD, set_worker_start_method, start_worker_server, worker_start_method

    if args.workers == 0 or worker_start_method() is not None:
        return _predict_cells(args, copy_duplicates)
    # Workers cannot be forked once OpenVINO's threads run here. From a fork server started now,
    # which imports torch and OpenCV on another core while this process imports its own, each
    # starts at once, instead of importing torch itself before its first batch (whole process,
    # 1,200 cells on 2 cores: 14.5 s -> 10.8 s).
    set_worker_start_method("forkserver", preload=WORKER_PRELOAD)
    try:
        start_worker_server()
        return _predict_cells(args, copy_duplicates)
    finally:
        set_worker_start_method(None)  # a caller in this process (a script, a test) keeps its default


def _predict_cells(args: argparse.Namespace, copy_duplicates: bool):
    from ..learn.backends.loader import open_predictor
    from ..learn.events import PredictProgress
    from ..learn.inference import predict_iter
    from ..learn.model import temperature_of

    predictor = open_predictor(args.model, backend=args.backend, device=args.device, precision=args.precision,
                               data_root=args.dir)
    if predictor.note:
        print(f"info: {predictor.note}", file=sys.stderr)
    spec, extras = predictor.spec, predictor.extras
    args.inference = {"backend": predictor.backend.name, "precision": predictor.backend.precision,
                      "device": str(predictor.backend.device)}
    data = expert_labels_if_asked(scan_with_progress(args.dir, args.labels, args.patient_regex, args.quiet), args)
    gen = predict_iter(predictor.backend, spec, data.root, data.cells, batch_size=args.batch_size,
                       tta=args.tta, workers=args.workers, temperature=temperature_of(extras))
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
    args.model_extras = extras  # what the model file says of itself (split protocol, calibration)
    if copy_duplicates:
        preds = preds.with_duplicates(data.duplicates)
    copied = set(preds.paths)
    for p in data.problems + list(preds.problems):
        if p.path in data.duplicates and p.path in copied:
            tqdm.write(f"duplicate {printable(p.path)}: same content as {printable(data.duplicates[p.path])}, "
                       "its prediction copied")
        else:
            tqdm.write(f"skipped {printable(p.path)}: {printable(p.reason)}")
    return data, spec, preds


def cmd_predict(args: argparse.Namespace) -> int:
    from ..utils.files import check_writable_dir

    check_writable_dir(check_output(args.out, force=args.force, what="predictions CSV").parent)
    sidecar = check_output(f"{args.out}{MODEL_SIDECAR}", force=args.force, what="model description")
    _, spec, preds = _run_predict(args, copy_duplicates=True)
    preds.write_csv(args.out)
    facts = model_facts(args.model, spec, args.model_extras)
    write_json(str(sidecar), {**facts, "tta": bool(args.tta), **args.inference})
    copies = sum(1 for of in preds.duplicate_of or [] if of)
    print(f"wrote {len(preds.paths)} predictions to {printable(args.out)}"
          + (f" ({copies} of them duplicate files with their original's prediction)" if copies else "")
          + f" ({_how(args.inference)})" + _leaky_label(facts))
    print(f"wrote the model's description to {printable(str(sidecar))}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..learn.metrics import score_predictions

    check_output(args.json, force=args.force, what="evaluation JSON")  # before minutes of prediction
    data, spec, preds = _run_predict(args)
    truth = {c.path: c.label for c in data.cells}
    try:
        report = score_predictions(preds.paths, preds.patients, preds.predicted, preds.probs, truth, spec.classes)
    except ValueError as exc:
        raise UserError(f"{exc} in {printable(args.dir)}") from exc
    report["skipped"]["problems"] = len(data.problems) + len(preds.problems)
    unknown = report["skipped"]["unknown_class_cells"]
    if unknown:  # not scored: said here, not only in the JSON
        warn(f"{sum(unknown.values())} cells not scored: their labels are not classes of the model "
             f"({', '.join(f'{printable(k)}: {n}' for k, n in unknown.items())})")
    report["by_patient"] = data.by_patient
    report["tta"] = bool(args.tta)
    report.update(args.inference)
    facts = model_facts(args.model, spec, args.model_extras)
    report["model"] = {k: facts[k] for k in ("name", "sha256", "backbone", "classes")}
    report["split_protocol"], report["leaky"] = facts["split_protocol"], facts["leaky"]
    if facts["leaky"]:
        report["leaky_note"] = facts["leaky_note"]
    write_json(args.json, report)
    print(f"n {report['n']}  accuracy {report['accuracy']:.4f}  weighted F1 {report['weighted_f1']:.4f}  "
          f"macro F1 {report['macro_f1']:.4f}  balanced accuracy {report['balanced_accuracy']:.4f}"
          + (f"  ROC AUC {report['roc_auc']:.4f}" if report.get("roc_auc") is not None else "")
          + f"  ({_how(args.inference)})" + _leaky_label(facts))
    print(f"wrote {printable(args.json)}")
    return 0
