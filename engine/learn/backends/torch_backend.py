"""The network in torch: the reference every other backend is checked against, the one that runs
on a CUDA GPU, and the one Grad-CAM needs (gradients)."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from .base import Backend

_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


class TorchBackend(Backend):
    name = "torch"
    channels_last = True  # what timm's convolutions run fastest on, CPU and GPU

    def __init__(self, model: torch.nn.Module, device, precision: str = "f32") -> None:
        super().__init__(precision, torch.device(device))
        self.model = model

    @contextmanager
    def running(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        self.model.to(device=self.device, memory_format=torch.channels_last)
        try:
            yield
        finally:
            self.model.train(was_training)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, False)[0]

    def logits_and_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._run(x, hasattr(self.model, "logits_and_embeddings"))

    def _run(self, x: torch.Tensor, embeddings: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = _DTYPES.get(self.precision)
        amp = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        x = x.contiguous(memory_format=torch.channels_last)
        # inference mode only around the forward: it is thread-local, and must not stay on in the
        # driver's thread while the prediction generator waits at a yield.
        with torch.inference_mode(), amp:
            if embeddings:
                out, emb = self.model.logits_and_embeddings(x)
                return out.float(), emb.float()
            out = self.model(x)
        return out.float(), None


__all__ = ["TorchBackend"]
