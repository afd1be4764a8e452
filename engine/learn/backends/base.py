"""What every inference backend is: normalised float images in, float32 logits out.

A backend runs the network only. Decoding, resizing, normalisation, test-time views, the
calibration temperature and the softmax stay in `engine.learn.inference`, shared by all of them,
so switching backends changes the arithmetic of the network and nothing else.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # the CLI reads BACKENDS and PRECISIONS for its help without loading torch
    import torch

BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
PRECISIONS = ("f32", "bf16", "f16")
INSTALL_FAST = 'pip install "allblast[fast]"'


class BackendError(ValueError):
    """A backend that cannot run as asked (not installed, a precision the CPU lacks); the message
    says what to do. A ValueError, so the CLI prints it as one line."""


class Backend(ABC):
    name = ""
    channels_last = False  # the memory layout `logits` prefers its input in

    def __init__(self, precision: str, device: "torch.device") -> None:
        if precision not in PRECISIONS:
            raise BackendError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.device = device  # where inputs are normalised before `logits`

    def describe(self) -> str:
        """'openvino f32 on cpu': what the output and the sidecar state."""
        return f"{self.name} {self.precision} on {self.device}"

    @contextmanager
    def running(self) -> Iterator[None]:
        """Around a whole prediction (the torch backend switches to eval mode and back)."""
        yield

    @abstractmethod
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised float32 -> (B, C) float32 logits (each backend's own)."""


__all__ = ["BACKENDS", "PRECISIONS", "INSTALL_FAST", "BackendError", "Backend"]
