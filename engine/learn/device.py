"""Where tensors run, and what to do when the device runs out of memory.

One home for the device notions every job shares: choosing a device (`auto` = CUDA when usable),
mixed precision per device, and recognising an out-of-memory error (CUDA's, or the CPU
allocator's) so every job can answer it with the same clear advice.
"""
from __future__ import annotations

import os
from contextlib import nullcontext

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "device 'cuda' was requested but no CUDA GPU is usable here (no NVIDIA driver, or a "
                "CPU-only torch build); use --device cpu or --device auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")


def device_name(device: torch.device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def fixed_batch_shapes(device: torch.device) -> bool:
    """Whether training keeps to fixed batch shapes: on a GPU, the first batch of every new shape
    (and of eval mode) selects, and for bf16 compiles, its kernels again, which made a first epoch
    take a minute. There, training drops the short last batch, evaluation pads it, and the shapes
    are warmed up once before the first epoch. The CPU path stays as it was."""
    return device.type == "cuda"


# Off: measured on an H200 (torch 2.11, cuDNN 9.19), autotuning made the kernel warm-up 4.7x (Lite0)
# and 2.7x (B3) longer, for a steady rate 13% lower (Lite0, host-bound) or 11% higher (B3).
CUDNN_BENCHMARK_DEFAULT = False


def cudnn_benchmark() -> bool:
    """cuDNN autotuning per new convolution shape (torch.backends.cudnn.benchmark). The environment
    variable ALLBLAST_CUDNN_BENCHMARK=0/1 overrides the default (benchmarks/bench_train.py)."""
    value = os.environ.get("ALLBLAST_CUDNN_BENCHMARK", "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return CUDNN_BENCHMARK_DEFAULT


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU has it (no scaler needed), else fp16 with a GradScaler; CPU: fp32."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in `dtype`, or a no-op context when `dtype` is None (full precision)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))  # CPU allocator


def oom_message(batch_size: int, img_size) -> str:
    return (f"out of memory with batch size {batch_size} at image size {img_size or 'default'}: try "
            f"--batch-size {max(1, batch_size // 2)} or a smaller --img-size.")


def release_memory(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error, so the next attempt can start."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_choices() -> list[tuple[str, str]]:
    """(value for TrainConfig.device, what a dialog shows): auto, CPU, and each usable GPU with its
    name and free memory."""
    choices = [("auto", "Auto (a CUDA GPU when there is one)"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            try:
                free, total = torch.cuda.mem_get_info(i)
                memory = f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
            except RuntimeError:
                memory = "memory unknown"
            choices.append((f"cuda:{i}", f"CUDA {i}: {torch.cuda.get_device_name(i)}, {memory}"))
    return choices
