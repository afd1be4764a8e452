"""`allblast-engine cases ...`: a folder's cases, signing one, and verifying the signatures.

    cases list DIR             the Cases panel's table (cells, reviewed, open disagreements, the
                               differential, the blast fraction with its 95% interval, status)
    cases sign DIR CASE        refused, with what is missing, while a cell is unreviewed or a
                               disagreement with the active model is open; else the signed case
                               report (PDF) goes to the label store's signed/ folder
    cases verify DIR [CASE]    intact, amended or tampered, per signed case (exit status 3 when
                               one is tampered)
    cases settings DIR         the two-person rule (a second signature by another person)

The signed report is drawn by the GUI side's renderer, loaded only by `cases sign` (like
`allblast-engine report`), with an offscreen Qt application.
"""
from __future__ import annotations

import argparse
import sys

from ..utils.text import printable
from .common import UserError, add_db_arg, add_scan_args, hold_folder, open_project

TAMPERED_EXIT = 3


def add_cases_commands(sub) -> None:
    p = sub.add_parser("cases", help="cases (patients): list, sign off, verify signed results",
                       description="A case is a patient (C-NMC names, --patient-regex, a slide folder) or, "
                       "without patient ids, the whole folder ('.') or a sub-folder. A case is signed once "
                       "every cell is reviewed and no disagreement with the active model is open; a label "
                       "changed afterwards is an amendment (`labels set ... --reason TEXT`) and needs a new "
                       "signature.")
    csub = p.add_subparsers(dest="cases_command", required=True, metavar="ACTION")

    s = csub.add_parser("list", help="the cases with their review state, differential and status",
                        description="One row per case: cells, reviewed cells, open disagreements with the "
                        "active model, the differential (the class set's order), the positive (blast) "
                        "fraction with its 95%% Wilson interval and the cells it rests on, and the status: "
                        "open, ready, signed, awaiting 2nd signature, amended, tampered.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    add_scan_args(s)
    add_db_arg(s)
    s.set_defaults(func=cmd_list)

    s = csub.add_parser("sign", help="sign a reviewed case (writes the signed case report)",
                        description="Sign CASE as NAME: refused, with the list of what is missing, while a "
                        "cell is not reviewed or a disagreement with the active model is open. The signature "
                        "keeps the signer, the time, a sha256 digest of the case's cells and labels, the "
                        "active model's sha256, and the case report (PDF, with the signature block) in the "
                        "signed/ folder beside the label database, with the report's own sha256.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("case", metavar="CASE", help="a patient id, '.' for the whole folder, or a sub-folder of DIR")
    s.add_argument("--annotator", required=True, metavar="NAME", help="who signs")
    s.add_argument("--per-class", type=int, default=8, metavar="K", help="cells per class in the report's montage")
    add_scan_args(s)
    add_db_arg(s)
    s.set_defaults(func=cmd_sign)

    s = csub.add_parser("verify", help="recompute each signed case's digest and report sha256",
                        description="Per signed case: intact (labels and report as signed), amended (changed "
                        "in allblast since, with the amendments), or tampered (labels or report changed "
                        "outside allblast: an edited database row, an edited or missing PDF). Exit status "
                        f"{TAMPERED_EXIT} when a case is tampered.")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("case", metavar="CASE", nargs="?", help="only this case")
    add_scan_args(s)
    add_db_arg(s)
    s.set_defaults(func=cmd_verify)

    s = csub.add_parser("settings", help="sign-off settings of the folder (two-person rule)")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--two-person", choices=["on", "off"],
                   help="on: a signing is complete only with a second signature by another person")
    add_scan_args(s)
    add_db_arg(s)
    s.set_defaults(func=cmd_settings)


def _summaries(project, *, files: bool = True):
    from ..cases.summary import model_for, summarize

    model = model_for(project.store)
    return model, summarize(project.store, list(project.classes), model=model, positive=project.classes.positive,
                            files=files)


def cmd_list(args: argparse.Namespace) -> int:
    from ..cases.summary import format_table
    from .common import write_json

    project = open_project(args)
    try:
        model, rows = _summaries(project)
    finally:
        project.store.close()
    if not rows:
        raise UserError(f"{args.dir} holds no cell images: no cases")
    for line in format_table(rows, project.classes.positive).splitlines():
        print(printable(line))
    print(f"model: {model.name or model.short} (sha256 {model.short})" if model else "model: none active "
          "(no disagreements to resolve)")
    if args.json:
        write_json(args.json, {"cases": [_row_json(s) for s in rows], "model_sha256": model.sha256 if model else None})
    return 0


def _row_json(s) -> dict:
    f = s.fraction
    return {"case": s.key, "title": s.title, "cells": s.cells, "reviewed": s.reviewed,
            "open_disagreements": s.open_disagreements, "differential": dict(s.differential), "unsure": s.unsure,
            "unlabeled": s.unlabeled, "positive": s.positive,
            "positive_fraction": None if f is None else {"k": f.k, "n": f.n, "value": f.value, "ci95": f.interval},
            "status": s.status}


def _case(project, spec: str):
    from ..cases.cases import CaseError, resolve_case

    cells = [(c.path, c.patient) for c in project.scan.cells]
    try:
        return resolve_case(spec, cells, project.root)
    except CaseError as exc:
        raise UserError(str(exc)) from exc


def cmd_sign(args: argparse.Namespace) -> int:
    from ..cases.review import snapshot
    from ..cases.signoff import SignOffRefused, sign
    from ..cases.summary import model_for
    from ..labels import predictions as stored
    from ..report.model_info import model_info
    from ..report.signed import signed_case_report, store_case_cells
    from ..workspace.catalog import RunsCatalog

    with hold_folder(args):
        project = open_project(args)
        store = project.store
        try:
            case = _case(project, args.case)
            model = model_for(store)
            snap = snapshot(store, model)
            preds = stored.load(store, model.sha256) if model else None
            info = None
            if model is not None:
                path = RunsCatalog(store).active_model_file()
                info = model_info(path, model.sha256) if path is not None else None

            def write(path, draft):
                # The one other place the engine reaches the GUI side (an import-linter exception
                # names it): the page renderer needs Qt, and only this command loads it.
                from allblast_gui.report.render import ensure_gui_application, write_report

                cells = store_case_cells(store, case.paths, preds)
                report = signed_case_report(draft, cells, list(project.classes), data_root=project.root,
                                            positive=project.classes.positive,
                                            model=info if any(c.predicted for c in cells) else None,
                                            per_class=args.per_class)
                ensure_gui_application()
                write_report(path, report)

            try:
                sig = sign(store, case, signer=args.annotator, model=model, write_report=write, snap=snap)
            except SignOffRefused as exc:
                print(f"allblast-engine cases sign: error: {printable(str(exc))}", file=sys.stderr)
                for line in exc.missing:
                    print(f"  {printable(line)}", file=sys.stderr)
                return 2
            report = store.db_path.parent / sig.report
        finally:
            store.close()
    done = "signed" if sig.seq >= sig.required else f"signature {sig.seq} of {sig.required} given"
    print(f"{printable(case.title)}: {done} by {printable(sig.signer)} at {sig.when}")
    print(f"  cells {sig.n_cells}, labels digest {sig.digest}")
    print(f"  model {sig.model or 'none'}")
    print(f"  report {printable(str(report))} (sha256 {sig.report_sha256})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..cases.cases import list_cases
    from ..cases.records import signed_case_keys
    from ..cases.verify import TAMPERED, verify_case

    project = open_project(args)
    try:
        cells = [(c.path, c.patient) for c in project.scan.cells]
        if args.case:
            cases = [_case(project, args.case)]
        else:
            keys = signed_case_keys(project.store)
            cases = [c for c in list_cases(cells, keys) if c.key in keys]
        verdicts = [verify_case(project.store, c.key, c.paths) for c in cases]
    finally:
        project.store.close()
    if not verdicts:
        print(f"{printable(str(project.root))}: no signed case")
        return 0
    for c, v in zip(cases, verdicts):
        print(f"{printable(c.title)}: {v.state}")
        for line in v.lines():
            print(f"  {printable(line)}")
    return TAMPERED_EXIT if any(v.state == TAMPERED for v in verdicts) else 0


def cmd_settings(args: argparse.Namespace) -> int:
    from ..cases.records import set_two_person, two_person

    with hold_folder(args):
        project = open_project(args)
        try:
            if args.two_person:
                set_two_person(project.store, args.two_person == "on")
            on = two_person(project.store)
        finally:
            project.store.close()
    print(f"two-person rule: {'on (a second signature by another person)' if on else 'off (one signature)'}")
    return 0


__all__ = ["add_cases_commands"]
