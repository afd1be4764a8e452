"""`allblast-engine export`: a trained model as ONNX, for other tools (or to check what the
OpenVINO and ONNX Runtime backends run)."""
from __future__ import annotations

import argparse

from ..labels.outputs import check_output
from ..utils.text import printable


def add_export_command(sub) -> None:
    p = sub.add_parser("export", help="a trained model as ONNX",
                       description="Export MODEL (a model.pt) to ONNX (opset 17). Input 'image': "
                       "(batch, 3, S, S) float32 RGB, scaled to 0-1 then normalised with the model's mean and std; "
                       "output 'logits': (batch, classes), before the calibration temperature (divide the logits "
                       "by it, then softmax). The file's metadata holds allblast.spec (backbone, classes in "
                       "output order, S, mean, std), allblast.temperature and allblast.source_sha256.")
    p.add_argument("model", metavar="MODEL", help="model.pt from a run folder")
    p.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..learn.backends.onnx_export import export_onnx
    from ..learn.model import load_model, temperature_of
    from ..utils.files import check_writable_dir, sha256_file

    out = check_output(args.onnx, force=args.force, what="ONNX model")
    check_writable_dir(out.parent)
    model, spec, extras = load_model(args.model, "cpu")
    export_onnx(model, spec, out, temperature=temperature_of(extras), sha256=sha256_file(args.model))
    print(f"wrote {printable(str(out))} ({spec.backbone}, {spec.img_size} px, classes {', '.join(spec.classes)}, "
          f"temperature {temperature_of(extras):g})")
    return 0
