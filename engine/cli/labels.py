"""`allblast-engine labels ...`: the label store from scripts and other tools."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import UserError, add_scan_args, open_project


def add_label_commands(sub) -> None:
    p = sub.add_parser("labels", help="set, import and export expert labels (the same store the app uses)",
                       description="Expert labels live in a SQLite store beside the data set "
                       "(DIR/.allblast/project.sqlite) or, when DIR is read-only, in your user data folder. "
                       "Images are never modified. Every change is kept in the history.")
    lsub = p.add_subparsers(dest="labels_command", required=True, metavar="ACTION")

    s = lsub.add_parser("set", help="set the label of one cell", description="Set the current label of "
                        "one cell. LABEL is a class name, 'unsure', or 'none' to clear it.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("path", metavar="PATH", help="cell image path relative to DIR")
    s.add_argument("label", metavar="LABEL")
    s.add_argument("--annotator", metavar="NAME", help="who is labelling (default: your OS user name)")
    add_scan_args(s)
    s.set_defaults(func=cmd_set)

    s = lsub.add_parser("import", help="apply a labels CSV in one transaction (one undoable step)",
                        description="Import labels from a generic (path,label[,patient]) or C-NMC "
                        "(Patient_ID,new_names,labels) CSV. Rows naming missing images are reported.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("csv", metavar="CSV")
    s.add_argument("--annotator", metavar="NAME")
    add_scan_args(s)
    s.set_defaults(func=cmd_import)

    s = lsub.add_parser("export", help="write current labels (or the full history) as CSV",
                        description="Generic columns: path,patient,original,label,annotator,changed_at "
                        "(paths relative to DIR). --format cnmc writes Patient_ID,new_names,labels "
                        "(1 = all, 0 = hem). --history writes every change instead.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--out", required=True, metavar="CSV")
    s.add_argument("--format", choices=["generic", "cnmc"], default="generic")
    s.add_argument("--history", action="store_true", help="export the full change history")
    add_scan_args(s)
    s.set_defaults(func=cmd_export)


def _annotator(args: argparse.Namespace) -> str:
    from ..labels.store import default_annotator

    return args.annotator or default_annotator()


def cmd_set(args: argparse.Namespace) -> int:
    label = None if args.label.lower() in ("none", "") else args.label
    project = open_project(args)
    try:
        rel = Path(args.path).as_posix().removeprefix("./")
        if rel not in project.store.states():
            raise UserError(f"{args.path} is not a cell of {project.root} (paths are relative to DIR)")
        action = project.store.set_label(rel, label, annotator=_annotator(args), source="cli")
        print(f"{rel}: {label or 'unlabeled'}" + ("" if action is not None else " (unchanged)"))
    finally:
        project.store.close()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..labels.csv_io import import_csv

    project = open_project(args)
    try:
        report = import_csv(project.store, args.csv, annotator=_annotator(args))
    finally:
        project.store.close()
    print(f"applied {report.applied}, unchanged {report.unchanged}, missing images {len(report.missing)}, "
          f"problems {len(report.problems)}")
    for path, reason in report.problems[:20]:
        print(f"  {path}: {reason}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..labels.csv_io import export_csv
    from ..utils.files import check_writable_dir

    check_writable_dir(Path(args.out).expanduser().resolve().parent)
    project = open_project(args)
    try:
        n = export_csv(project.store, args.out, format=args.format, history=args.history)
    finally:
        project.store.close()
    print(f"wrote {n} rows to {args.out}")
    return 0
