"""What a Keep Learning round that keeps the backbone is set up with: the head's training settings
and the round's train / validation split. Plain Python (no torch), so the window can read and
offer them without importing torch; the fit itself is engine.learn.headfit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class HeadSettings:
    updates: int = 400  # minibatch updates (a small set: many epochs; a large one: a few)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    class_weights: bool = True
    seed: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


VAL_FRACTION = 0.15  # a round's validation share of the labelled cells (the patient protocol's default)


def round_split(cells, seed: int = 0, val_fraction: float = VAL_FRACTION):
    """A round's train / validation split of the labelled `cells` (Cell records): the patient
    protocol (patient-disjoint where patients exist, each cell its own group otherwise), no test
    part (the loop's cells are all the expert's; a held-out test is the caller's own)."""
    from ..data.cells import ScanResult
    from ..data.splits import make_split

    return make_split(ScanResult(Path("."), list(cells)), "patient", seed=seed, val_fraction=val_fraction,
                      test_fraction=0.0)
