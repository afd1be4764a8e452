"""What a training run would use, and what would stop it, said before anything starts.

The app's Train dialog shows this while the user chooses settings: cells and patients per class,
how many unsure and unlabeled cells are left out, and the problems that block the start (fewer than
two classes, a class with too few patients for a patient split, missing weights, a run folder that
cannot be written). Nothing is written or built here.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..data.cells import UNSURE, ScanResult, is_trainable
from ..data.splits import LEAKY_NOTE, make_split
from ..utils.files import folder_writable
from .config import TrainConfig

# A patient split needs a patient for training and one for validation in every class.
MIN_PATIENTS_PER_CLASS = 2


@dataclass(frozen=True)
class ClassCount:
    name: str
    cells: int
    patients: int | None  # None: the cells carry no patient ids


@dataclass
class Preflight:
    classes: list[ClassCount]
    unsure: int
    unlabeled: int
    by_patient: bool
    problems: list[str] = field(default_factory=list)  # each one blocks the start
    warnings: list[str] = field(default_factory=list)  # worth reading, not blocking

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_cells(self) -> int:
        return sum(c.cells for c in self.classes)


def count_classes(scan: ScanResult) -> Preflight:
    cells = Counter(c.label for c in scan.cells if is_trainable(c.label))
    patients: dict[str, set] = defaultdict(set)
    for c in scan.cells:
        if is_trainable(c.label) and c.patient is not None:
            patients[c.label].add(c.patient)
    by_patient = bool(cells) and all(c.patient is not None for c in scan.cells if is_trainable(c.label))
    return Preflight(
        classes=[ClassCount(n, cells[n], len(patients[n]) if by_patient else None) for n in sorted(cells)],
        unsure=sum(1 for c in scan.cells if c.label == UNSURE),
        unlabeled=sum(1 for c in scan.cells if c.label is None),
        by_patient=by_patient,
    )


def check_training(scan: ScanResult, config: TrainConfig, run_dir: str | os.PathLike | None = None, *,
                   weights_found: bool | None = None, device_ok: bool = True) -> Preflight:
    """Counts and problems for training `scan` (labels as they are in it) with `config`.

    `weights_found`: whether ImageNet weights for the backbone are on this computer (None: not
    checked, e.g. when the caller names a weights file).
    """
    report = count_classes(scan)
    problems, warnings = report.problems, report.warnings
    trainable = [c for c in report.classes if c.cells]
    if len(trainable) < 2:
        have = ", ".join(f"{c.name} ({c.cells})" for c in trainable) or "none"
        problems.append(f"training needs at least 2 classes with labelled cells; this folder has {have}. "
                        "Label cells of another class first.")
    if config.split == "patient" and report.by_patient:
        few = [c for c in trainable if (c.patients or 0) < MIN_PATIENTS_PER_CLASS]
        for c in few:
            problems.append(f"class {c.name} has cells of only {c.patients} patient: a patient split needs at "
                            f"least {MIN_PATIENTS_PER_CLASS} (one to train on, one to validate). Label cells of "
                            "another patient, or choose the image-level split (leaky).")
    elif config.split == "patient":
        warnings.append("the cells carry no patient ids: each image is its own group, so the split cannot keep "
                        "patients apart and accuracy may be optimistic")
    if config.split == "image":
        warnings.append(LEAKY_NOTE)
    if not problems:
        try:  # the split itself: the same checks training makes (classes without training images, ...)
            split = make_split(scan, config.split, seed=config.seed, val_fraction=config.val_fraction,
                               test_fraction=config.test_fraction)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            warnings += [w for w in split.warnings if w not in warnings and w != LEAKY_NOTE
                         and not w.startswith("could not split by patient")]
            if len(split.train) < config.batch_size:
                warnings.append(f"only {len(split.train)} training cells for batch size {config.batch_size}: "
                                "each epoch is a single batch")
    if config.pretrained and not config.weights and weights_found is False:
        problems.append(f"no ImageNet weights for {config.backbone} on this computer: choose a weights file, "
                        "the bundled tf_efficientnet_lite0, or train from scratch")
    if config.weights and not Path(config.weights).expanduser().is_file():
        problems.append(f"the weights file {config.weights} does not exist")
    if not device_ok:
        problems.append(f"device {config.device} is not usable here: choose Auto or CPU")
    if run_dir is not None and not folder_writable(Path(run_dir)):
        problems.append(f"the run folder {run_dir} cannot be written: choose a folder you can write to")
    return report
