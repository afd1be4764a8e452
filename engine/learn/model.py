"""The classifier network and its self-describing checkpoint format.

A timm backbone gives a feature map; the head is the paper's: global max pooling, BatchNorm1d,
Linear 256, ReLU, Dropout 0.45, Linear n_classes. Where the backbone's ImageNet weights come from
is `engine.learn.weights`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .checkpoints import check_format, load_checkpoint, save_checkpoint
from .config import check_backbone_name, check_img_size
from .device import resolve_device

if TYPE_CHECKING:
    from .weights import WeightsInfo

# timm (and the torchvision it loads) is imported where a network is built, not at import time:
# reading a model file's description, or predicting through OpenVINO, must not pay for it.

FORMAT = "allblast.model/1"


@dataclass(frozen=True)
class ModelSpec:
    backbone: str
    classes: tuple[str, ...]
    img_size: int
    mean: tuple
    std: tuple
    interpolation: str
    hidden: int = 256
    dropout: float = 0.45

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(classes=list(self.classes), mean=list(self.mean), std=list(self.std))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        """A spec read from a file, checked: a model file is input like any other (an absurd image
        size would allocate gigabytes before anything else could complain). Raises ValueError."""
        try:
            d = dict(d)
            for key in ("classes", "mean", "std"):
                d[key] = tuple(d[key])
            spec = cls(**d)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"the model's description is incomplete or malformed ({exc})") from exc
        spec.validate()
        return spec

    def validate(self) -> None:
        problems = []
        for check, value in ((check_backbone_name, self.backbone), (check_img_size, self.img_size)):
            try:  # a backbone "hf-hub:..." would make timm reach the network; an image size of 1 crash
                check(value)
            except ValueError as exc:
                problems.append(str(exc))
        if not (len(self.classes) >= 2 and all(isinstance(c, str) and c for c in self.classes)
                and len(set(self.classes)) == len(self.classes)):
            problems.append(f"classes {list(self.classes)!r} (need 2 or more distinct names)")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(isinstance(v, (int, float)) and 0 < v < 10
                                                                  for v in self.std):
            problems.append("normalisation mean/std")
        if not (isinstance(self.hidden, int) and 1 <= self.hidden <= 65536):
            problems.append(f"hidden size {self.hidden!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            problems.append(f"dropout {self.dropout!r}")
        if problems:
            raise ValueError("the model's description is not valid: " + "; ".join(problems))


class CellClassifier(nn.Module):
    def __init__(self, backbone: str, n_classes: int, *, hidden: int = 256, dropout: float = 0.45):
        import timm

        super().__init__()
        # num_classes=0 + global_pool='' leaves the backbone returning its last feature map.
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="")
        n = self.backbone.num_features
        # Max (not average) pooling: the paper's choice; a blast's salient nucleus texture is local.
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Sequential(
            nn.BatchNorm1d(n),
            nn.Linear(n, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone feature of each image (B, num_features): the head's input, and the
        cell's embedding (engine.learn.embeddings) that sampling and similarity use."""
        return self.pool(self.backbone(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def logits_and_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass, both outputs: what a prediction pass keeps."""
        e = self.embed(x)
        return self.head(e), e


def build_model(
    backbone: str = "efficientnet_b3",
    classes=(),
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    img_size: int | None = None,
) -> tuple[CellClassifier, ModelSpec, WeightsInfo]:
    import timm

    from .weights import PACKAGE_SOURCES, WeightsInfo, load_backbone_file, load_pretrained

    classes = tuple(classes)
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {list(classes)}")
    try:
        model = CellClassifier(backbone, len(classes))
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ValueError(f"unknown backbone {backbone!r}: {exc}") from exc
    cfg = timm.data.resolve_data_config({}, model=model.backbone)
    info = WeightsInfo("none")
    if weights is not None:
        info = load_backbone_file(model.backbone, Path(weights).expanduser())
    elif pretrained:
        info = load_pretrained(model.backbone, backbone)
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if info.source in PACKAGE_SOURCES:
        mean = std = (0.5, 0.5, 0.5)  # the TF EfficientNet-Lite checkpoints expect inputs in [-1, 1]
    spec = ModelSpec(backbone, classes, int(img_size or cfg["input_size"][-1]), mean, std,
                     str(cfg.get("interpolation", "bicubic")))
    return model, spec, info


# ---- checkpoints ---------------------------------------------------------------------------
def save_model(path: str | os.PathLike, model: CellClassifier, spec: ModelSpec, **extra) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint({"format": FORMAT, "spec": spec.to_dict(), "state_dict": state, **extra}, path)


def save_state(path: str | os.PathLike, state_dict: dict, spec: ModelSpec, **extra) -> None:
    """A model file from weights alone (no network built): a Keep Learning round that keeps the
    backbone writes its parent's backbone weights with the head it trained."""
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    save_checkpoint({"format": FORMAT, "spec": spec.to_dict(), "state_dict": state, **extra}, path)


def temperature_of(extras: dict) -> float:
    """The calibration temperature saved with a model (1.0 for models saved before calibration)."""
    value = extras.get("calibration", {}).get("temperature") if isinstance(extras.get("calibration"), dict) else None
    return float(value) if value else 1.0


def read_checkpoint(path: str | os.PathLike) -> tuple[ModelSpec, dict, dict]:
    """A model file's checked description, weights (state dict) and extras, without building the
    network (no timm). Raises ValueError with one line for a file that is no allblast model."""
    ckpt = load_checkpoint(path)  # weights_only: a model file from someone else must not run code
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not an allblast model file (format {FORMAT})")
    check_format(ckpt.get("format"), FORMAT, path)
    try:
        spec = ModelSpec.from_dict(ckpt.get("spec") or {})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; it cannot be used: choose another model file") from exc
    extras = {k: v for k, v in ckpt.items() if k not in ("format", "spec", "state_dict")}
    return spec, ckpt.get("state_dict") or {}, extras


def load_model(path: str | os.PathLike, device="cpu") -> tuple[CellClassifier, ModelSpec, dict]:
    spec, state_dict, extras = read_checkpoint(path)
    # The architecture comes from the spec alone; the state dict replaces every weight.
    model = CellClassifier(spec.backbone, len(spec.classes), hidden=spec.hidden, dropout=spec.dropout)
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: its weights do not match its description (damaged or edited); it cannot "
                         "be used: choose another model file") from exc
    model.to(resolve_device(device) if isinstance(device, str) else device).eval()
    return model, spec, extras
