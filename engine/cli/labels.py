"""`allblast-engine labels ...`: the label store from scripts and other tools."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..utils.text import printable
from .common import UserError, add_db_arg, add_scan_args, hold_folder, open_project
from .label_classes import add_classes_command


def add_label_commands(sub) -> None:
    p = sub.add_parser("labels", help="set, import and export expert labels (the same store the app uses)",
                       description="Expert labels live in a SQLite store beside the data set "
                       "(DIR/.allblast/project.sqlite) or, when DIR is read-only, in your user data folder. "
                       "Images are never modified. Every change is kept in the history.")
    lsub = p.add_subparsers(dest="labels_command", required=True, metavar="ACTION")

    s = lsub.add_parser("set", help="set (or confirm) the label of one cell", description="Set the current label "
                        "of one cell. LABEL is a class name, 'unsure' (or '?'), or 'none' (or 'unlabeled') to "
                        "clear it; these words mean the same in an imported CSV and can never name a class. "
                        "The label the cell has already records a confirmation ('the label shown is right'), "
                        "which counts as reviewed for sign-off (`cases sign`). A cell of a signed case is "
                        "changed only with --reason (an amendment).")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("path", metavar="PATH", help="cell image path relative to DIR")
    s.add_argument("label", metavar="LABEL")
    s.add_argument("--annotator", metavar="NAME", help="who is labelling (default: your OS user name)")
    s.add_argument("--reason", metavar="TEXT", help="why: needed to change a cell of a signed case (recorded as "
                   "an amendment); given with a label the active model disagrees with, keeps that label "
                   "against the model (resolves the disagreement)")
    s.add_argument("--note", metavar="TEXT", help="with 'unsure': what you saw (an unsure cell counts as "
                   "reviewed with a note)")
    add_scan_args(s)
    add_db_arg(s)
    s.set_defaults(func=cmd_set)

    s = lsub.add_parser("import", help="apply a labels CSV in one transaction (one undoable step)",
                        description="Import labels from a generic (path,label[,patient]) or C-NMC "
                        "(Patient_ID,new_names,labels) CSV. Rows naming missing images are reported. "
                        "A file that gives one image different labels imports nothing unless --last-wins.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("csv", metavar="CSV")
    s.add_argument("--annotator", metavar="NAME")
    s.add_argument("--last-wins", action="store_true",
                   help="when rows give one image different labels, keep the last row's (default: import nothing)")
    s.add_argument("--add-classes", action="store_true",
                   help="labels that are not classes of the data set become new classes (default: import nothing "
                   "and name them)")
    s.add_argument("--reason", metavar="TEXT", help="why, when the file changes cells of a signed case "
                   "(each is recorded as an amendment; without it nothing is imported)")
    add_scan_args(s)
    add_db_arg(s)
    s.set_defaults(func=cmd_import)

    s = lsub.add_parser("export", help="write current labels (or the full history) as CSV",
                        description="Generic columns: path,patient,original,label,annotator,changed_at "
                        "(paths relative to DIR). --format cnmc writes Patient_ID,new_names,labels "
                        "(1 = all, 0 = hem). --history writes every change instead, with the confirmations, "
                        "disagreements kept against a model, sign-offs and amendments (columns event, reason).")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--out", required=True, metavar="CSV")
    s.add_argument("--force", action="store_true", help="replace OUT if it exists (never an image or the label database)")
    s.add_argument("--format", choices=["generic", "cnmc"], default="generic")
    s.add_argument("--history", action="store_true", help="export the full change history")
    add_scan_args(s)
    add_db_arg(s)
    s.set_defaults(func=cmd_export)
    add_classes_command(lsub)


def _annotator(args: argparse.Namespace) -> str:
    from ..labels.store import default_annotator

    return args.annotator or default_annotator()


_SEARCH_DEPTH = 3  # how deep below DIR a path written relative to a subfolder is looked for


def _where(args: argparse.Namespace) -> tuple[str, str]:
    """(data folder, cell path relative to it) that `labels set DIR PATH` means.

    PATH may be written relative to DIR, to a folder above it, or to one subfolder of it (the
    README's `fold_0/all/...` from the C-NMC root: `training_data/fold_0/all/...`); the labels go to
    the store that already holds that cell's folder (DIR's own, or the nearest folder around the
    cell that has one), so a second, empty store never appears beside the one the app uses.
    Anything else is one line that says what to do.
    """
    rel = Path(args.path).as_posix().removeprefix("./")
    root = Path(args.dir).expanduser()
    if not root.is_dir():
        return args.dir, rel  # opening it says what is wrong
    root = root.resolve()
    target = _find_file(root, rel, args.path)
    if target is None:
        raise UserError(f"{args.path} is not a cell of {root}: there is no such file (PATH is relative to DIR)")
    if getattr(args, "db", None):
        return str(root), target.relative_to(root).as_posix()
    from ..labels.location import find_db

    folder = root
    if find_db(root) is None:  # DIR has no label store yet: is the cell kept in another one?
        folder = next((f for f in target.parents if find_db(f) is not None), root)
    if folder != root:
        print(f"note: the labels of {printable(str(target.relative_to(folder)))} are kept in the label store of "
              f"{printable(str(folder))}: using it")
    return str(folder), target.relative_to(folder).as_posix()


def _find_file(root: Path, rel: str, given: str) -> Path | None:
    """The cell file PATH names: relative to DIR, else to a folder above it (must lead into DIR),
    else to one subfolder of DIR (a few levels down); None when it is nowhere."""
    if Path(rel).is_absolute():
        found = [_norm(Path(rel))] if Path(rel).is_file() else []
    else:
        found = [_norm(root / rel)] if (root / rel).is_file() else []
        if not found:
            base = next((a for a in root.parents if (a / rel).is_file()), None)
            if base is not None:
                if root not in _norm(base / rel).parents:
                    raise UserError(f"{given} is not in {root}; it is in {base}: run with that folder as DIR")
                found = [_norm(base / rel)]
        if not found:
            found = _below(root, rel)
    for f in found:
        if f != root and root not in f.parents:
            raise UserError(f"{given} is not in {root}; it is {f}: run with a folder that holds it as DIR")
    if len(found) > 1:
        shown = ", ".join(f.relative_to(root).as_posix() for f in found[:2])
        raise UserError(f"{given} is not in {root} itself but in several of its folders ({shown}); "
                        "give the path relative to DIR")
    return found[0] if found else None


def _norm(path: Path) -> Path:
    """`..` worked out, links kept: a cell may be a link to a file elsewhere (never resolved away)."""
    return Path(os.path.normpath(path))


def _below(root: Path, rel: str) -> list[Path]:
    found: list[Path] = []
    level = [root]
    for _ in range(_SEARCH_DEPTH):
        nxt = []
        for folder in level:
            try:
                subs = sorted(e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
            except OSError:
                continue
            for sub in map(Path, subs):
                if (sub / rel).is_file():
                    found.append(_norm(sub / rel))
                nxt.append(sub)
        if found:
            return found
        level = nxt
    return found


def cmd_set(args: argparse.Namespace) -> int:
    from ..data.cells import parse_label

    label = parse_label(args.label)  # the reserved words mean what they mean in `labels import`
    args.dir, rel = _where(args)
    with hold_folder(args):
        project = open_project(args)
        try:
            if rel not in project.store.states():
                raise UserError(f"{args.path} is not a cell of {project.root} (paths are relative to DIR)")
            if label is not None and project.classes.unknown([label]):
                why = project.classes.explain_unknown(label)
                raise UserError(f"{why}{' ' if why.endswith('?') else '. '}Nothing was changed (add a class with "
                                f"`allblast-engine labels classes {args.dir} --add NAME`)")
            said = _set_and_review(project.store, rel, label, args)
            print(f"{printable(rel)}: {printable(label or 'unlabeled')}{said}")
        finally:
            project.store.close()
    return 0


def _set_and_review(store, rel: str, label: str | None, args: argparse.Namespace) -> str:
    """Set the label (an amendment with --reason), or confirm the one the cell has; keep it against
    the active model with --reason. Returns what to say after the label."""
    from ..data.cells import UNSURE
    from ..labels import reviews
    from ..labels.signed import ReasonRequired

    who = _annotator(args)
    try:
        action = store.set_label(rel, label, annotator=who, source="cli", reason=args.reason)
    except ReasonRequired as exc:
        raise UserError(f"{exc}; give the reason with --reason TEXT") from exc
    notes = []
    if action is None and label is not None and (label != UNSURE or args.note):
        reviews.confirm(store, [rel], annotator=who, note=args.note, source="cli")
        notes.append("confirmed" + (" with a note" if args.note else ""))
    elif action is None:
        notes.append("unchanged" + ("; an unsure cell counts as reviewed with --note TEXT" if label == UNSURE else ""))
    elif label == UNSURE and args.note:
        reviews.confirm(store, [rel], annotator=who, note=args.note, source="cli")
        notes.append("with a note")
    if action is not None and store.query("SELECT 1 FROM amendments WHERE action_id = ? LIMIT 1", (action,)):
        notes.append("amendment of a signed case recorded")
    if args.reason and label is not None and label != UNSURE:
        from ..cases.summary import model_for
        from ..labels.predictions import disagrees

        model = model_for(store)
        predicted = model.predicted.get(rel) if model is not None else None
        if model is not None and disagrees(label, predicted, model.classes):
            reviews.keep(store, rel, model=model.sha256, predicted=predicted, reason=args.reason, annotator=who)
            notes.append(f"kept against the model's {predicted}")
    return f" ({'; '.join(notes)})" if notes else ""


def cmd_import(args: argparse.Namespace) -> int:
    from ..data.labelfiles import LabelConflictError
    from ..labels.csv_io import import_csv
    from ..labels.signed import ReasonRequired

    with hold_folder(args):
        project = open_project(args)
        try:
            report = import_csv(project.store, args.csv, annotator=_annotator(args), last_wins=args.last_wins,
                                add_classes=args.add_classes, reason=args.reason)
        except ReasonRequired as exc:
            raise UserError(f"{exc}; give the reason with --reason TEXT") from exc
        except LabelConflictError as exc:
            raise UserError(f"{exc} (or rerun with --last-wins to keep the last row of each)") from exc
        finally:
            project.store.close()
    print(f"applied {report.applied}, unchanged {report.unchanged}, missing images {len(report.missing)}, "
          f"problems {len(report.problems)}" + (f", conflicts {len(report.conflicts)} (last row used)"
                                                if report.conflicts else ""))
    if report.added_classes:
        print(f"new classes: {', '.join(printable(c) for c in report.added_classes)}")
    for path, reason in report.problems[:20]:
        print(f"  {printable(path)}: {printable(reason)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..labels.csv_io import export_csv
    from ..utils.files import check_writable_dir

    from ..labels.outputs import check_output

    check_output(args.out, force=args.force, what="labels CSV")
    check_writable_dir(Path(args.out).expanduser().resolve().parent)
    project = open_project(args)
    try:
        n = export_csv(project.store, args.out, format=args.format, history=args.history)
    finally:
        project.store.close()
    print(f"wrote {n} rows to {printable(args.out)}")
    return 0
