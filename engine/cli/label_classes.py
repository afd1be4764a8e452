"""`allblast-engine labels classes DIR`: list and edit the data set's class set (the same one the
app's Label ▸ Classes… edits). Each edit is one transaction; rename and delete are undoable steps."""
from __future__ import annotations

import argparse
from contextlib import nullcontext

from ..utils.text import printable
from .common import UserError, add_db_arg, add_scan_args, hold_folder, open_project


def add_classes_command(lsub) -> None:
    s = lsub.add_parser(
        "classes", help="list or edit the class set (names, number keys, colours, positive class)",
        description="Without options: list the classes with their number keys, colours and cell counts. "
        "Edits are kept in the label database with their history; a new class takes the lowest free "
        "number key and never moves another class's key. Options are applied in the order listed here.",
        epilog="Presets: cnmc (all, hem), pbc (8 PBC classes), wbc (neutrophil, lymphocyte, monocyte, eosinophil, "
        "basophil, blast, other).")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--preset", choices=["cnmc", "pbc", "wbc"], help="add the preset's classes the set lacks")
    s.add_argument("--add", action="append", default=[], metavar="NAME", help="add a class (repeatable)")
    s.add_argument("--rename", nargs=2, metavar=("OLD", "NEW"),
                   help="rename a class; its cells are relabelled in the same undoable step")
    s.add_argument("--color", nargs=2, metavar=("NAME", "#RRGGBB"), help="recolour a class")
    s.add_argument("--key", nargs=2, metavar=("NAME", "N"),
                   help="give a class number key N (1-9, or 'none'); the class holding N gets NAME's old key")
    s.add_argument("--order", metavar="NAME,NAME,...", help="the display order (every class once)")
    s.add_argument("--positive", metavar="NAME", help="the positive class (blasts) reports count; 'none' for no class")
    s.add_argument("--delete", metavar="NAME", help="delete a class; one still in use needs --relabel-to or --unlabel")
    s.add_argument("--relabel-to", metavar="LABEL", help="with --delete: relabel its cells as LABEL (a class or 'unsure')")
    s.add_argument("--unlabel", action="store_true", help="with --delete: leave its cells unlabeled")
    s.add_argument("--history", action="store_true", help="also print every class edit")
    s.add_argument("--annotator", metavar="NAME", help="who is editing (default: your OS user name)")
    add_scan_args(s)
    add_db_arg(s)
    s.set_defaults(func=cmd_classes)


def _edits(args: argparse.Namespace, store) -> list[str]:
    from ..labels import classes as C

    who = args.annotator
    done: list[str] = []
    if args.preset:
        added = C.apply_preset(store, args.preset, annotator=who)
        done.append(f"preset {args.preset}: added {', '.join(added) if added else 'nothing (all there)'}")
    for name in args.add:
        d = C.add_class(store, name, annotator=who)
        done.append(f"added {d.name}" + (f" (key {d.key})" if d.key else " (no number key left)"))
    if args.rename:
        _, changed = C.rename_class(store, *args.rename, annotator=who)
        done.append(f"renamed {args.rename[0]} to {args.rename[1]} ({len(changed)} cells relabelled; undo: Ctrl+Z in the app)")
    if args.color:
        C.recolor(store, *args.color, annotator=who)
        done.append(f"recoloured {args.color[0]}")
    if args.key:
        name, key = args.key
        if key.lower() != "none" and not key.isdigit():
            raise UserError(f"--key {name} {key}: N is a number from 1 to {C.MAX_KEYS}, or 'none'")
        C.set_key(store, name, None if key.lower() == "none" else int(key), annotator=who)
        done.append(f"key of {name}: {key}")
    if args.order:
        C.reorder(store, [n.strip() for n in args.order.split(",") if n.strip()], annotator=who)
        done.append("new order")
    if args.positive:
        C.set_positive(store, None if args.positive.lower() == "none" else args.positive, annotator=who)
        done.append(f"positive class: {args.positive}")
    if args.delete:
        target = C.KEEP_LABELS
        if args.unlabel:
            target = None
        elif args.relabel_to:
            target = args.relabel_to
        _, changed = C.delete_class(store, args.delete, relabel_to=target, annotator=who)
        done.append(f"deleted {args.delete}" + (f" ({len(changed)} cells relabelled)" if changed else ""))
    return done


def cmd_classes(args: argparse.Namespace) -> int:
    if (args.relabel_to or args.unlabel) and not args.delete:
        raise UserError("--relabel-to and --unlabel go with --delete NAME")
    if args.relabel_to and args.unlabel:
        raise UserError("choose one of --relabel-to and --unlabel")
    edits = (args.preset, args.add, args.rename, args.color, args.key, args.order, args.positive, args.delete)
    with hold_folder(args) if any(edits) else nullcontext():  # a listing writes no labels
        return _classes(args)


def _classes(args: argparse.Namespace) -> int:
    from ..labels import classes as C

    project = open_project(args)
    try:
        store = project.store
        cs = C.class_set(store, project.scan.classes)
        try:
            done = _edits(args, store)
        except C.ClassSetError as exc:
            raise UserError(str(exc)) from exc
        cs = C.load(store) if done else cs
        counts = C.cells_per_label(store)
        for line in done:
            print(printable(line))
        print(f"{len(cs)} classes in {printable(str(project.root))}:" if cs else
              f"{printable(str(project.root))} has no classes yet: add some with --add NAME or --preset")
        for d in cs.defs:
            key = str(d.key) if d.key else "-"
            flag = "  (positive)" if d.positive else ""
            print(f"  [{key}] {printable(d.name):<20} {d.color}  {counts.get(d.name, 0):>7} cells{flag}")
        if args.history:
            for h in C.class_history(store):
                print(f"  {h['changed_at']}  {printable(h['annotator'])}: {h['kind']} {printable(h['name'])}"
                      + (f" -> {printable(h['new']['name'])}" if h["new"] and h["new"]["name"] != h["name"] else ""))
    finally:
        store.close()
    return 0
