"""A model as ONNX: what `allblast-engine export --onnx` writes and what OpenVINO and ONNX Runtime
read. Input `image`: (batch, 3, S, S) float32, normalised with the model's mean and std; output
`logits`: (batch, classes), before the calibration temperature. The file's metadata carries the
model's description (allblast.spec, JSON), its temperature and the source model's sha256.
With `embedding=True` (the inference cache's export) a second output, `embedding`: (batch, D), the
pooled backbone feature a prediction keeps for each cell (engine.learn.embeddings)."""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch

from ...utils.files import atomic_path
from .base import INSTALL_FAST, BackendUnavailable, reason

log = logging.getLogger(__name__)

OPSET = 17


class _WithEmbedding(torch.nn.Module):
    """The classifier with both outputs: logits, then the pooled backbone feature."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.logits_and_embeddings(x)


EMBEDDING_OUTPUT = "embedding"


def has_embedding_output(path: str | os.PathLike) -> bool:
    """Whether an ONNX file (an earlier allblast's cached export may not) has the embedding output."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - a damaged file: exported again
        return False
    return any(o.name == EMBEDDING_OUTPUT for o in graph.output)


def export_onnx(model: torch.nn.Module, spec, out: str | os.PathLike, *, temperature: float = 1.0,
                sha256: str = "", embedding: bool = False) -> Path:
    """Write `model` (a CellClassifier) to `out` atomically. Raises BackendUnavailable when the onnx
    package is missing or the network has an operator ONNX lacks."""
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailable(f"exporting to ONNX needs the onnx package: {INSTALL_FAST}",
                                 "the onnx package is not installed, so torch predicts") from exc
    out = Path(out)
    was_training = model.training
    model.eval().cpu()
    dummy = torch.zeros(2, 3, spec.img_size, spec.img_size)
    try:
        with atomic_path(out) as tmp, warnings.catch_warnings():
            # The TorchScript exporter (dynamo=False) exports timm's EfficientNets in about a second
            # with no extra packages; torch marks it deprecated, which is no news for the user.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                both = embedding and hasattr(model, "logits_and_embeddings")
                outputs = ["logits", EMBEDDING_OUTPUT] if both else ["logits"]
                torch.onnx.export(_WithEmbedding(model) if both else model, (dummy,), str(tmp), dynamo=False,
                                  opset_version=OPSET, input_names=["image"], output_names=outputs,
                                  dynamic_axes={name: {0: "batch"} for name in ["image", *outputs]})
            except Exception as exc:  # noqa: BLE001 - an operator ONNX lacks, for an unusual backbone
                log.debug("ONNX export of %s failed", spec.backbone, exc_info=exc)
                why = reason(exc)
                raise BackendUnavailable(f"the {spec.backbone} model could not be exported to ONNX ({why}); "
                                         "use --backend torch",
                                         f"the {spec.backbone} model could not be exported to ONNX ({why}), so "
                                         "torch predicts") from exc
            proto = onnx.load(str(tmp))
            onnx.helper.set_model_props(proto, {"allblast.spec": json.dumps(spec.to_dict()),
                                                "allblast.temperature": repr(float(temperature)),
                                                "allblast.source_sha256": sha256})
            onnx.save(proto, str(tmp))
    finally:
        model.train(was_training)
    log.info("exported %s to %s", spec.backbone, out)
    return out


__all__ = ["EMBEDDING_OUTPUT", "export_onnx", "has_embedding_output", "OPSET"]
