"""The network in ONNX Runtime on the CPU (f32 only: its CPU kernels have no faster precision).
Building a session from the cached ONNX export takes a fraction of a second, so there is nothing
further to cache."""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from .base import INSTALL_FAST, Backend, BackendError, BackendUnavailable, cannot_run

log = logging.getLogger(__name__)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, precision: str) -> None:
        super().__init__(precision, torch.device("cpu"))
        if precision != "f32":
            raise BackendError(f"ONNX Runtime predicts in f32 only; use --precision f32, or --backend openvino "
                               f"for {precision}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            if getattr(exc, "name", None) in (None, "onnxruntime"):
                raise BackendUnavailable(f"ONNX Runtime is not installed: {INSTALL_FAST}, or use --backend torch",
                                         "ONNX Runtime is not installed, so torch predicts") from exc
            raise cannot_run("ONNX Runtime", exc) from exc
        except Exception as exc:  # noqa: BLE001 - a broken install (a native library that does not load)
            raise cannot_run("ONNX Runtime", exc) from exc
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3  # its warnings are about graph details, not for the user
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own exception types, for a graph or a CPU it cannot run
            log.debug("ONNX Runtime could not load %s", onnx_path, exc_info=exc)
            raise cannot_run("ONNX Runtime", exc) from exc
        log.info("ONNX Runtime %s session ready", ort.__version__)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_embeddings(x)[0]

    def logits_and_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # the first output is the logits; an export with the `embedding` output has a second
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(x.numpy())})
        emb = torch.from_numpy(np.asarray(outs[1], dtype=np.float32)) if len(outs) > 1 else None
        return torch.from_numpy(np.asarray(outs[0], dtype=np.float32)), emb


__all__ = ["OnnxRuntimeBackend"]
