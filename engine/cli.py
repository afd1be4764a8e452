"""`allblast-engine`: the headless command line, a thin layer over the engine library.

Every command is a function of parsed arguments; long steps drive the engine's generators and
show tqdm progress bars. Errors the user can fix are printed as one clear line (exit code 2);
nothing already saved is touched by a failing command.
"""
from __future__ import annotations

import argparse

import sys
from pathlib import Path

from tqdm import tqdm

from . import __version__
from .cells import ScanResult, scan
from .cli_labels import add_label_commands
from .fsutil import atomic_write_json, check_writable_dir

DESCRIPTION = """\
allblast engine: scan folders of single-cell blood images, fine-tune an ImageNet EfficientNet on
them (patient-disjoint by default), predict and evaluate, and manage expert labels.

Typical use on C-NMC 2019:
  allblast-engine scan C-NMC/ --json scan.json
  allblast-engine train C-NMC/training_data --out runs/b3 --epochs 10
  allblast-engine evaluate runs/b3/model.pt C-NMC/validation_data --json eval.json
  allblast-engine predict runs/b3/model.pt my_slide/ --out predictions.csv --tta
"""


class UserError(Exception):
    """A problem the user can fix; printed without a traceback."""


def scan_with_progress(root: str | Path, labels: str | None = None, patient_regex: str | None = None,
                       quiet: bool = False) -> ScanResult:
    bar = tqdm(total=0, unit="img", desc=f"scan {Path(root).name}", disable=quiet, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        return scan(root, labels, patient_regex=patient_regex, progress=progress)
    finally:
        bar.close()


def summarise_scan(result: ScanResult) -> str:
    lines = [f"{result.root}: {len(result.cells)} cells"]
    for cls, n in result.class_counts().items():
        lines.append(f"  {cls:>14}: {n}")
    if result.unlabeled:
        lines.append(f"  {'unlabeled':>14}: {result.unlabeled}")
    lines.append(f"  patients: {len(result.patients)}" + ("" if result.by_patient else " (not every cell has one)"))
    if result.problems:
        lines.append(f"  problems: {len(result.problems)} file(s) skipped or flagged:")
        lines += [f"    {p.path}: {p.reason}" for p in result.problems[:20]]
        if len(result.problems) > 20:
            lines.append(f"    ... and {len(result.problems) - 20} more (see --json)")
    if result.missing:
        lines.append(f"  label-file rows whose image is absent: {len(result.missing)}")
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def cmd_scan(args: argparse.Namespace) -> int:
    result = scan_with_progress(args.dir, args.labels, args.patient_regex, args.quiet)
    print(summarise_scan(result))
    if args.json:
        atomic_write_json(args.json, result.to_json())
        print(f"wrote {args.json}")
    return 0


def add_scan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", metavar="CSV", help="labels CSV: C-NMC (Patient_ID,new_names,labels) "
                   "or generic (path,label[,patient]); C-NMC label files inside DIR are found by themselves")
    p.add_argument("--patient-regex", metavar="RE", help="regex on the relative path whose group "
                   "'patient' (or group 1) is the patient id, for data sets not named like C-NMC")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allblast-engine", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("scan", help="list the cells, classes, patients and bad files of a folder",
                       description="Scan a folder of cell images. Nothing is modified. Bad files "
                       "(empty, truncated, corrupt, not images, duplicates) are reported, the rest loads.")
    p.add_argument("dir", metavar="DIR", help="data folder (e.g. the C-NMC root or a folder of class folders)")
    add_scan_args(p)
    p.add_argument("--json", metavar="OUT", help="write the scan summary as JSON")
    p.set_defaults(func=cmd_scan)

    from .cli_train import add_train_commands  # torch is imported only for commands that need it

    add_train_commands(sub, add_scan_args)
    add_label_commands(sub, add_scan_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as exc:
        print(f"allblast-engine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - known engine errors are subclasses handled by name
        if type(exc).__name__ in {"WeightsNotFoundError", "StoreError", "LabelFileError"}:
            print(f"allblast-engine {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


def write_json(path: str, data: dict) -> None:
    check_writable_dir(Path(path).expanduser().resolve().parent)
    atomic_write_json(path, data)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_parser", "scan_with_progress", "summarise_scan", "UserError", "write_json"]
