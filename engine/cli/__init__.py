"""`allblast-engine`: the headless command line, a thin layer over the engine library.

Every command is a function of parsed arguments; long steps drive the engine's generators and
show tqdm progress bars. Errors the user can fix are printed as one clear line (exit code 2);
nothing already saved is touched by a failing command. A command that writes labels (and one that
reads `--expert-labels`) holds the data set's folder while it runs, and refuses with one line
saying who holds it (exit code 1) while the app has it open. `-v` shows more on the terminal and
`--log-file` keeps every detail (tracebacks included) in a file.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from ..utils.logs import route_warnings_to_logging, setup_logging
from ..utils.text import printable
from .common import UserError

log = logging.getLogger(__name__)

DESCRIPTION = """\
allblast engine: scan folders of single-cell blood images, fine-tune an ImageNet EfficientNet on
them (patient-disjoint by default), predict and evaluate, and manage expert labels.

Typical use on C-NMC 2019:
  allblast-engine scan C-NMC/ --json scan.json
  allblast-engine train C-NMC/training_data --out runs/b3 --epochs 10
  allblast-engine evaluate runs/b3/model.pt C-NMC/validation_data --json eval.json
  allblast-engine predict runs/b3/model.pt my_slide/ --out predictions.csv --tta
  allblast-engine suggest runs/b3/model.pt my_slide/ --n 24 --strategy diverse --out next.csv
  allblast-engine report runs/b3 --out b3.pdf --data my_slide/
  allblast-engine cases list my_slide/     # per patient: reviewed, open disagreements, blast % (95% CI)
  allblast-engine cases sign my_slide/ 7 --annotator "Dr. A"   # a reviewed case becomes a signed report
  allblast-engine weights list      # where each backbone's ImageNet weights come from
"""

# Engine errors that carry a message for the user (matched by name: importing their modules here
# would load torch for every command).
_USER_ERRORS = {"WeightsNotFoundError", "StoreError", "LabelFileError", "ImageReadError", "BackendError"}


def build_parser() -> argparse.ArgumentParser:
    from .cases import add_cases_commands
    from .export import add_export_command
    from .labels import add_label_commands
    from .predict import add_predict_commands
    from .report import add_report_command
    from .scan import add_scan_command
    from .suggest import add_suggest_command
    from .train import add_train_command
    from .weights import add_weights_command

    parser = argparse.ArgumentParser(prog="allblast-engine", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more detail on the terminal (-v: info, -vv: debug)")
    parser.add_argument("--log-file", metavar="FILE", help="also write a detailed log (with tracebacks) to FILE")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_scan_command(sub)
    add_train_command(sub)
    add_predict_commands(sub)
    add_suggest_command(sub)
    add_export_command(sub)
    add_label_commands(sub)
    add_report_command(sub)
    add_cases_commands(sub)
    add_weights_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbosity=args.verbose, log_file=args.log_file)
    route_warnings_to_logging()
    log.debug("allblast-engine %s: %s", __version__, sys.argv if argv is None else argv)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    where = f"allblast-engine {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as exc:
        log.debug("%s failed", where, exc_info=exc)
        print(f"{where}: error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, traceback to the log
        if type(exc).__name__ == "FolderHeld":  # the app (or another command) has the folder open: not now
            log.debug("%s refused", where, exc_info=exc)
            print(f"{where}: error: {printable(str(exc))}", file=sys.stderr)
            return 1
        if type(exc).__name__ in _USER_ERRORS:
            log.debug("%s failed", where, exc_info=exc)
            print(f"{where}: error: {printable(str(exc))}", file=sys.stderr)
            return 2
        log.debug("%s: unexpected %s", where, type(exc).__name__, exc_info=exc)
        hint = f" (details in {args.log_file})" if args.log_file else " (rerun with --log-file FILE for details)"
        print(f"{where}: internal error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 1


__all__ = ["main", "build_parser", "UserError"]
