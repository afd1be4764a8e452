"""`allblast-engine scan`: what is in a folder, without changing anything."""
from __future__ import annotations

import argparse

from ..utils.text import printable
from .common import add_scan_args, scan_with_progress, summarise_scan, write_json


def add_scan_command(sub) -> None:
    p = sub.add_parser("scan", help="list the cells, classes, patients and bad files of a folder",
                       description="Scan a folder of cell images. Nothing is modified. Bad files "
                       "(empty, truncated, corrupt, not images, duplicates) are reported, the rest loads.")
    p.add_argument("dir", metavar="DIR", help="data folder (e.g. the C-NMC root or a folder of class folders)")
    add_scan_args(p)
    p.add_argument("--json", metavar="OUT", help="write the scan summary as JSON")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_scan)


def cmd_scan(args: argparse.Namespace) -> int:
    from ..labels.outputs import check_output

    if args.json:
        check_output(args.json, force=args.force, what="scan JSON")
    result = scan_with_progress(args.dir, args.labels, args.patient_regex, args.quiet)
    print(summarise_scan(result))
    if args.json:
        write_json(args.json, result.to_json())
        print(f"wrote {printable(args.json)}")
    return 0
