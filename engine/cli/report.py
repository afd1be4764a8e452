"""`allblast-engine report`: a run's model report, and with --data a case report for a folder.

The numbers come from engine.report; the pages are drawn by the GUI side's renderer
(allblast_gui.report), loaded only here, with an offscreen Qt application: no display needed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import UserError


def add_report_command(sub) -> None:
    p = sub.add_parser("report", help="a printable model report of a run (PDF or HTML), and a case report",
                       description="Write the model report of RUN (data per split, curves, confusion matrix, "
                       "per-class and per-patient metrics, model card) to OUT (.pdf: A4; .html: one "
                       "self-contained file). With --data, also write a case report of that folder (its "
                       "expert labels and this model's stored predictions) beside it.")
    p.add_argument("run", metavar="RUN", help="a training run folder (with config.json and model.pt)")
    p.add_argument("--out", required=True, metavar="FILE", help="FILE.pdf or FILE.html")
    p.add_argument("--data", metavar="DIR", help="also write a case report for this folder of cells")
    p.add_argument("--case-out", metavar="FILE", help="where the case report goes (default: OUT's name + '-case')")
    p.add_argument("--reviewer", metavar="NAME", help="the reviewer named on the case report "
                   "(default: the last annotator of the folder's labels)")
    p.add_argument("--positive", metavar="CLASS", help="the class whose fraction the case report states "
                   "(default: the folder's positive class, as set in the app or with `labels classes --positive`; "
                   "a folder without one: 'all', e.g. C-NMC blasts, or 'blast')")
    p.add_argument("--force", action="store_true", help="replace existing report files")
    p.add_argument("--per-class", type=int, default=8, metavar="K", help="cells per class in the montage "
                   "(default: %(default)s)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..labels.outputs import check_output as guard
    from ..report.case import build_case_report
    from ..report.model_info import model_info
    from ..report.model_report import build_model_report
    from ..labels.classes import positive_class
    from ..report.sources import folder_cells, folder_class_set

    # The one place the engine reaches the GUI side (an import-linter exception names it): the
    # page renderer needs Qt, and only this command loads it.
    from allblast_gui.report.render import check_output, ensure_gui_application, write_report

    out = check_output(guard(args.out, force=args.force, what="model report"))
    case_out = None
    if args.data:
        case_out = check_output(guard(args.case_out or out.with_name(f"{out.stem}-case{out.suffix}"),
                                      force=args.force, what="case report"))
    report = build_model_report(args.run)
    ensure_gui_application()
    write_report(out, report)
    print(f"model report: {out}")
    if args.data:
        info = model_info(Path(args.run) / "model.pt")
        cells, classes, reviewer = folder_cells(args.data, info.sha256)
        if not cells:
            raise UserError(f"{args.data} holds no cell images: no case report written")
        class_set = folder_class_set(args.data, classes)
        classes = [c for c in class_set if c in classes] + [c for c in classes if c not in class_set]  # its order
        positive = args.positive or positive_class(class_set)
        if args.positive and args.positive not in classes:
            raise UserError(f"--positive {args.positive}: not a class of {args.data} ({', '.join(classes)})")
        case = build_case_report(cells, classes, data_root=Path(args.data).resolve(), scope="folder",
                                 reviewer=args.reviewer or reviewer, positive=positive,
                                 model=info if any(c.predicted for c in cells) else None, per_class=args.per_class)
        write_report(case_out, case)
        print(f"case report: {case_out}")
    return 0
