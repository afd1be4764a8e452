"""`allblast-engine suggest`: the next cells an expert should label, from a model's predictions.

The model's stored predictions and cell embeddings (kept in the folder's label database by every
prediction pass of the app, `suggest` and Keep Learning) are used as they are; only cells they lack
are predicted, and stored for the next time."""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from ..labels.outputs import check_output
from ..utils.files import check_writable_dir
from ..utils.text import printable
from .common import UserError, add_db_arg, add_scan_args, open_project


def add_suggest_command(sub) -> None:
    from ..learn.backends.base import BACKENDS
    from ..learn.suggest import DEFAULT_BATCH, STRATEGIES

    p = sub.add_parser(
        "suggest", help="the next cells to label: the ones the model needs most",
        description="Pick the next N cells an expert should label, in the order to label them, from MODEL's "
        "predictions of DIR: margin (the model hesitates between two classes), entropy (between many), "
        "diverse (doubtful cells that do not look alike, over the predicted classes; needs the cells' "
        "embeddings, which every prediction of this version keeps) or random. Only cells without an expert "
        "label are picked (--among unreviewed: cells not yet reviewed; all: any cell). Stored predictions "
        "are reused; cells without them are predicted and stored. --out writes a CSV with the `predict` "
        "columns plus rank and strategy; without it the batch is printed.")
    p.add_argument("model", metavar="MODEL", help="model.pt")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--n", type=int, default=DEFAULT_BATCH, metavar="N", help="cells to suggest (default: %(default)s)")
    p.add_argument("--strategy", choices=STRATEGIES, default="margin", help="default: %(default)s")
    p.add_argument("--among", choices=("unlabelled", "unreviewed", "all"), default="unlabelled",
                   help="which cells may be suggested (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="for random (default: %(default)s)")
    p.add_argument("--out", metavar="CSV")
    p.add_argument("--force", action="store_true", help="replace CSV if it exists")
    p.add_argument("--tta", action="store_true", help="predict the missing cells with test-time augmentation")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="what predicts missing cells")
    p.add_argument("--batch-size", type=int, default=64, metavar="N")
    add_db_arg(p)
    add_scan_args(p)
    p.set_defaults(func=cmd_suggest)


def cmd_suggest(args: argparse.Namespace) -> int:
    from ..utils.csvsafe import write_csv
    from ..workspace import suggestions as sg

    if args.n < 1:
        raise UserError("--n must be at least 1")
    if args.out:
        check_writable_dir(check_output(args.out, force=args.force, what="suggestions CSV").parent)
    project = open_project(args)
    try:
        store = project.store
        sha = sg.model_sha(args.model)
        paths = [c.path for c in project.scan.cells]
        missing = sg.needs_prediction(store, sha, paths, embeddings=args.strategy == "diverse")
        if missing:
            _predict_missing(args, project, missing, sha)
        states = store.states()
        candidates = _candidates(args.among, store, states, sha)
        try:
            batch = sg.suggest_stored(store, sha, n=args.n, strategy=args.strategy, candidates=candidates,
                                      among=args.among, seed=args.seed)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        patients = {c.path: c.patient for c in project.scan.cells}
        header, rows = batch.rows(patients)
        if args.out:
            write_csv(args.out, header, rows)
            print(f"wrote {len(batch)} suggested cells ({args.strategy}, of {batch.candidates} {args.among}) to "
                  f"{printable(args.out)}")
        else:
            print(f"{len(batch)} cells to label next ({args.strategy}, of {batch.candidates} {args.among}; model "
                  f"{batch.model.name} {batch.model.short}):")
            for row, pred in zip(rows, batch.predicted):
                print(f"  {row[-2]:>3}. {printable(row[0])}  predicted {printable(pred)}  margin {float(row[-4]):.3f}")
        return 0
    finally:
        project.close()


def _candidates(among: str, store, states, sha: str):
    from ..workspace import suggestions as sg

    if among == "all":
        return None
    if among == "unlabelled":
        return sg.unlabelled_paths(states)
    from ..labels.errors import StoreError

    try:  # what "reviewed" means is the sign-off's (engine.cases.review)
        from ..cases.review import snapshot

        snap = snapshot(store, None)
    except (ImportError, StoreError) as exc:
        raise UserError(f"--among unreviewed cannot tell reviewed cells here ({exc}); use --among unlabelled") from None
    return {p for p in snap.current if not snap.reviewed(p)}


def _predict_missing(args: argparse.Namespace, project, missing: list[str], sha: str) -> None:
    """Predict the cells the model has no stored results for, storing them (a read-only store:
    refused with what to do)."""
    from ..learn.events import Message, PredictProgress
    from ..utils.jobs import CancelToken
    from ..workspace.predict_store import run_prediction

    if project.store.read_only:
        raise UserError(f"{len(missing)} cells have no stored predictions of this model and this folder's label "
                        "database is read-only: give --db a writable file")
    cells = [c for c in project.scan.cells if c.path in set(missing)]
    gen = run_prediction(project.store, project.root, cells, args.model, tta=args.tta, batch_size=args.batch_size,
                         device="auto", cancel=CancelToken(), backend=args.backend, keep=True)
    with tqdm(total=len(cells), unit="img", desc="predict", disable=args.quiet) as bar:
        for event in gen:
            if isinstance(event, PredictProgress):
                bar.n = event.done
                bar.refresh()
            elif isinstance(event, Message):
                tqdm.write(f"info: {event.text}", file=sys.stderr)
