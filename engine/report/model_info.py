"""Which model a report speaks for: backbone, short sha256, how it was validated, whether leaky.

Read from the model file's run folder (model_card.json beside model.pt); a model file without a
card (copied elsewhere) still has its sha256 and whatever model.pt itself says.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.files import sha256_file

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    path: str
    name: str  # the run folder's name, or the file name
    sha256: str
    backbone: str | None = None
    img_size: int | None = None
    classes: list[str] = field(default_factory=list)
    split_protocol: str | None = None
    leaky: bool = False
    leaky_note: str | None = None
    best_epoch: int | None = None
    validation: dict = field(default_factory=dict)  # val_accuracy, val_weighted_f1, ... at the best epoch
    test: dict = field(default_factory=dict)  # accuracy, weighted_f1, n, ... on the held-out test split
    calibration: dict | None = None
    card: dict = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.sha256[:8]


def model_info(model_path: str | Path, sha256: str | None = None) -> ModelInfo:
    """Describe a model file (model.pt, or a run folder holding one). Raises FileNotFoundError."""
    path = Path(model_path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    card_path = path.parent / "model_card.json"
    card: dict = {}
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # a damaged card must not stop a report
            log.warning("could not read %s: %s", card_path, exc)
    split = card.get("split") or {}
    name = path.parent.name if card else path.name
    return ModelInfo(
        path=str(path), name=name, sha256=sha256 or sha256_file(path), backbone=card.get("backbone"),
        img_size=card.get("img_size"), classes=list(card.get("classes") or []),
        split_protocol=split.get("protocol"), leaky=bool(split.get("leaky")), leaky_note=split.get("leaky_note"),
        best_epoch=card.get("best_epoch"), validation=dict(card.get("best_metrics") or {}),
        test=dict(card.get("test_metrics") or {}), calibration=card.get("calibration"), card=card)


__all__ = ["ModelInfo", "model_info"]
