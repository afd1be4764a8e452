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


class BackendUnavailable(BackendError):
    """A fast backend that cannot start on this computer: not installed, an install that does not
    load, no CPU plugin (a bundle without it), a graph it cannot compile, a first run that fails.
    `auto` then predicts with torch and says `fallback`, one line naming the reason; a backend
    asked for by name fails with the message itself."""

    def __init__(self, message: str, fallback: str) -> None:
        super().__init__(message)
        self.fallback = fallback

    def __reduce__(self):  # raised in the export's child process, pickled back whole
        return type(self), (str(self), self.fallback)


def reason(exc: BaseException, limit: int = 200) -> str:
    """One line saying why a native library failed. OpenVINO puts the source location first
    ("Exception from src/inference/src/cpp/core.cpp:268:"); the line after it is the news."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not (line.startswith("Exception from ") and line.endswith(":"))]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cannot_run(what: str, exc: BaseException) -> BackendUnavailable:
    """The BackendUnavailable for `what` ("OpenVINO") failing with `exc`."""
    why = reason(exc)
    return BackendUnavailable(f"{what} cannot run on this computer ({why}); use --backend torch",
                              f"{what} cannot run on this computer ({why}), so torch predicts")


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

    def check(self, img_size: int) -> None:
        """Run one blank image: a backend that loads but cannot run (a CPU its kernels do not
        support, a broken install) fails here, before any cell is predicted."""
        import torch

        out = self.logits(torch.zeros(1, 3, img_size, img_size))
        if out.ndim != 2 or out.shape[0] != 1:
            raise RuntimeError(f"it returned logits of shape {tuple(out.shape)} for one image")

    @abstractmethod
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised float32 -> (B, C) float32 logits (each backend's own)."""

    def logits_and_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, pooled backbone features (B, D) float32 or None) in one pass: a prediction
        keeps both (engine.learn.embeddings). A backend that cannot give the features gives None."""
        return self.logits(x), None


__all__ = ["BACKENDS", "PRECISIONS", "INSTALL_FAST", "BackendError", "BackendUnavailable", "Backend", "cannot_run",
           "reason"]
