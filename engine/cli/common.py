"""What every `allblast-engine` command shares: user errors, scanning with a progress bar, the
scan summary, opening a data set's label store (and holding its folder while labels are written
or read), and writing JSON next to the user's files."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm import tqdm

from ..data.cells import ScanResult
from ..data.scan import scan
from ..utils.files import atomic_write_json, check_writable_dir
from ..utils.text import printable
from ..utils.logs import warn

log = logging.getLogger(__name__)


class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


def add_scan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", metavar="CSV", help="labels CSV: C-NMC (Patient_ID,new_names,labels) "
                   "or generic (path,label[,patient]); C-NMC label files inside DIR are found by themselves")
    p.add_argument("--patient-regex", metavar="RE", help="regex on the relative path whose group "
                   "'patient' (or group 1) is the patient id, for data sets not named like C-NMC")


def add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", help="the label database to use instead of DIR/.allblast/project.sqlite "
                   "(or the user data folder's); a new file starts as a copy of the folder's own database, "
                   "e.g. to go on labelling a read-only folder")


def _progress_bar(desc: str, quiet: bool):
    bar = tqdm(total=0, unit="img", desc=desc, disable=quiet, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    return bar, progress


def scan_with_progress(root: str | Path, labels: str | None = None, patient_regex: str | None = None,
                       quiet: bool = False) -> ScanResult:
    bar, progress = _progress_bar(f"scan {printable(Path(root).name)}", quiet)
    try:
        return scan(root, labels, patient_regex=patient_regex, progress=progress)
    finally:
        bar.close()


def open_project(args: argparse.Namespace):
    """The data set DIR with its label store (engine.labels.project.Project); close it after use."""
    from ..labels.project import open_dataset

    bar, progress = _progress_bar("index", args.quiet)
    try:
        project = open_dataset(args.dir, args.labels, patient_regex=args.patient_regex, progress=progress,
                               db_path=getattr(args, "db", None))
    finally:
        bar.close()
    for note in project.store.notes:  # e.g. a read-only folder: its labels, but nothing can be saved
        warn(note)
    return project


def hold_folder(args: argparse.Namespace, root: str | Path | None = None):
    """Hold the data set's folder while this command works on its labels (engine.workspace.lock):
    refused with one line naming who has it open while the app does (the app sees this command)."""
    from ..workspace.lock import held

    what = " ".join(str(w) for w in (args.command, getattr(args, "labels_command", None)) if w)
    return held(args.dir if root is None else root, program=f"allblast-engine {what}",
                db_path=getattr(args, "db", None))


def expert_labels_if_asked(data: ScanResult, args: argparse.Namespace, *, hold: bool = True) -> ScanResult:
    """Swap in the expert's labels from the label store when `--expert-labels` asks for them
    (engine.labels.project.with_expert_labels), holding the folder while they are read. `hold`
    False: another process of this command holds it (torchrun's ranks other than 0)."""
    if not getattr(args, "expert_labels", False):
        return data
    from contextlib import nullcontext

    from ..labels.project import with_expert_labels

    with hold_folder(args, data.root) if hold else nullcontext():
        data, changed = with_expert_labels(data, db_path=getattr(args, "db", None))
    tqdm.write(f"expert labels: {changed} of {len(data.cells)} cells differ from the data set's labels")
    return data


def summarise_scan(result: ScanResult) -> str:
    """The scan for a terminal; names from the user's files are escaped (`printable`)."""
    lines = [f"{printable(result.root)}: {len(result.cells)} cells"]
    for cls, n in result.class_counts().items():
        lines.append(f"  {printable(cls):>14}: {n}")
    if result.unlabeled:
        lines.append(f"  {'unlabeled':>14}: {result.unlabeled}")
    lines.append(f"  patients: {len(result.patients)}" + ("" if result.by_patient else " (not every cell has one)"))
    if result.problems:
        lines.append(f"  problems: {len(result.problems)} file(s) skipped or flagged:")
        lines += [f"    {printable(p.path)}: {printable(p.reason)}" for p in result.problems[:20]]
        if len(result.problems) > 20:
            lines.append(f"    ... and {len(result.problems) - 20} more (see --json)")
    if result.missing:
        lines.append(f"  label-file rows whose image is absent: {len(result.missing)}")
    lines += [f"  note: {printable(n)}" for n in result.notes]
    return "\n".join(lines)


def write_json(path: str, data: dict) -> None:
    check_writable_dir(Path(path).expanduser().resolve().parent)
    atomic_write_json(path, data)
