"""Train / validation / test splits of a scan, with the leakage they carry made explicit.

Protocols:
- `patient` (default): stratified by class, and no patient (`Cell.group`) in two splits. When
  cells have no patient id each image is its own group and the split says so in `warnings`.
- `image`: the paper's random image-level split (90/5/5, like its reference notebook; stratified
  by class here so every class is present). The same patient's cells land in train and test, so
  accuracy is inflated; the split is `leaky=True` and says so in every output.
- `folds`: C-NMC's own folds (`Cell.fold`). The last fold (sorted, e.g. `fold_2`) is validation,
  the other folds train; labelled cells outside any fold (the C-NMC preliminary test set with its
  labels CSV) are the test split. Errors when fewer than two folds are present.
- `predefined`: train = every labelled cell of `scan`, val = every labelled cell of `val_scan`
  (a ScanResult, a folder, or a labels CSV); test is empty. Val paths are relative to `val_root`.

Only labelled cells (label not None and not "unsure") take part. Everything is seeded.
"""
from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cells import Cell, ScanResult, trainable
from .scan import scan as scan_folder

PROTOCOLS = ("patient", "image", "folds", "predefined")
# (val_fraction, test_fraction) when the caller passes None.
_DEFAULT_FRACTIONS = {"patient": (0.15, 0.15), "image": (0.05, 0.05)}


@dataclass
class Split:
    protocol: str
    train: list[str]
    val: list[str]
    test: list[str]
    leaky: bool
    by_patient: bool
    warnings: list[str] = field(default_factory=list)
    seed: int = 0
    val_root: str | None = None  # set for `predefined`: val paths are relative to it
    classes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "protocol": self.protocol,
            "leaky": self.leaky,
            "by_patient": self.by_patient,
            "seed": self.seed,
            "classes": list(self.classes),
            "warnings": list(self.warnings),
            "counts": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
        }
        if self.leaky:
            out["leaky_note"] = LEAKY_NOTE
        if self.val_root is not None:
            out["val_root"] = self.val_root
            out["val_paths_relative_to"] = "val_root"
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Split":
        return cls(
            protocol=d["protocol"], train=list(d["train"]), val=list(d["val"]), test=list(d["test"]),
            leaky=bool(d.get("leaky", False)), by_patient=bool(d.get("by_patient", False)),
            warnings=list(d.get("warnings", [])), seed=int(d.get("seed", 0)),
            val_root=d.get("val_root"), classes=tuple(d.get("classes", ())),
        )


LEAKY_NOTE = (
    "image-level split: cells of the same patient are in train and test, so accuracy is "
    "optimistic (leaky); use --split patient for an honest estimate"
)


def make_split(
    scan: ScanResult,
    protocol: str = "patient",
    *,
    seed: int = 0,
    val_scan: ScanResult | str | os.PathLike | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    classes: Sequence[str] | None = None,
) -> Split:
    """Split the labelled cells of `scan`. `classes` (optional) names classes that must be
    trainable, e.g. those defined in the label store; any without training images is an error."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    cells = trainable(scan.cells)
    if not cells:
        raise ValueError(f"no labelled images in {scan.root}: label some cells (or give a labels CSV)")
    vf, tf = _DEFAULT_FRACTIONS.get(protocol, (0.15, 0.15))
    vf = vf if val_fraction is None else float(val_fraction)
    tf = tf if test_fraction is None else float(test_fraction)
    if protocol in ("patient", "image") and not (0 <= vf < 1 and 0 <= tf < 1 and vf + tf < 1):
        raise ValueError(f"val_fraction ({vf}) + test_fraction ({tf}) must leave images for training")

    warnings: list[str] = []
    val_root = None
    val_cells: list[Cell] | None = None
    by_patient = all(c.patient is not None for c in cells)
    if protocol == "patient":
        if not by_patient:
            n = sum(c.patient is None for c in cells)
            warnings.append(
                f"could not split by patient: {n} of {len(cells)} labelled cells have no patient id, "
                "so each of them is its own group; accuracy may be optimistic"
            )
        train, val, test = _grouped(cells, vf, tf, seed)
    elif protocol == "image":
        train, val, test = _grouped(cells, vf, tf, seed, by=lambda c: f"image:{c.path}")
        warnings.append(LEAKY_NOTE)
    elif protocol == "folds":
        train, val, test = _by_folds(cells, warnings)
    else:
        if val_scan is None:
            raise ValueError("the predefined split needs a validation folder or CSV (val_scan)")
        val_scan = as_scan(val_scan)
        val_root = str(val_scan.root)
        val_cells = trainable(val_scan.cells)
        if not val_cells:
            raise ValueError(f"no labelled images in the validation data {val_scan.root}")
        # A val folder inside the data root would otherwise be trained on as well.
        val_abs = {os.path.normcase(str(val_scan.root / c.path)) for c in val_cells}
        keep = [c for c in cells if os.path.normcase(str(scan.root / c.path)) not in val_abs]
        if len(keep) < len(cells):
            warnings.append(f"{len(cells) - len(keep)} validation images are inside the data folder; "
                            "they were left out of training")
        train, val, test = sorted(c.path for c in keep), sorted(c.path for c in val_cells), []
        by_patient = by_patient and all(c.patient is not None for c in val_cells)
        shared = {c.group for c in keep} & {c.group for c in val_cells if c.patient is not None}
        if shared:
            warnings.append(f"{len(shared)} patient(s) are in both training and validation data: "
                            f"{', '.join(sorted(shared)[:5])}")
        cells = keep

    leaky = protocol == "image" or (
        protocol == "folds" and any("in more than one split" in w for w in warnings)
    )
    _check_classes(cells, val_cells, train, val, test, classes, warnings)
    all_classes = sorted({c.label for c in cells} | set(classes or ()) |
                         ({c.label for c in val_cells} if val_cells else set()))
    return Split(protocol, train, val, test, leaky, by_patient and protocol != "image", warnings,
                 seed, val_root, tuple(all_classes))


def as_scan(val: ScanResult | str | os.PathLike) -> ScanResult:
    if isinstance(val, ScanResult):
        return val
    path = Path(val).expanduser()
    if path.is_file():  # a labels CSV: its images are found under the CSV's folder
        return scan_folder(path.parent, labels=path)
    return scan_folder(path)


def _grouped(cells: list[Cell], vf: float, tf: float, seed: int, by=lambda c: c.group):
    """Stratified group split: each group goes whole to one split.

    Groups are stratified by their majority class and dealt, in seeded random order, to the split
    furthest below its target share of that class's images. The first group of every class goes
    to training; with two or more groups validation gets at least one, with three or more the test
    split does too (when their fractions are not zero), so tiny data sets still validate.
    """
    groups: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        groups[by(c)].append(c)
    strata: dict[str, list[str]] = defaultdict(list)
    for g, members in groups.items():
        majority = Counter(c.label for c in members).most_common()
        top = max(n for _, n in majority)
        strata[min(lbl for lbl, n in majority if n == top)].append(g)

    rng = random.Random(seed)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label in sorted(strata):
        names = sorted(strata[label])
        rng.shuffle(names)
        total = sum(len(groups[g]) for g in names)
        target = {"train": (1 - vf - tf) * total, "val": vf * total, "test": tf * total}
        got = {"train": 0.0, "val": 0.0, "test": 0.0}
        chosen: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for i, g in enumerate(names):
            dest = "train" if i == 0 else max(("train", "val", "test"), key=lambda k: target[k] - got[k])
            chosen[dest].append(g)
            got[dest] += len(groups[g])
        for dest, frac, need in (("val", vf, 2), ("test", tf, 3)):
            if frac > 0 and not chosen[dest] and len(names) >= need and len(chosen["train"]) >= 2:
                # Move the smallest training group (never the first): the least training lost.
                g = min(chosen["train"][1:], key=lambda g: len(groups[g]))
                chosen["train"].remove(g)
                chosen[dest].append(g)
        for dest, gs in chosen.items():
            parts[dest].extend(c.path for g in gs for c in groups[g])
    return sorted(parts["train"]), sorted(parts["val"]), sorted(parts["test"])


def _by_folds(cells: list[Cell], warnings: list[str]):
    folds = sorted({c.fold for c in cells if c.fold})
    if not folds:
        raise ValueError("the folds split needs C-NMC fold folders (training_data/fold_0, fold_1, "
                         "fold_2); none of the labelled images is inside a fold_<n> folder")
    if len(folds) < 2:
        raise ValueError(f"the folds split needs at least two folds, found only {folds[0]}: "
                         "use --split patient instead")
    val_fold = folds[-1]
    train = sorted(c.path for c in cells if c.fold and c.fold != val_fold)
    val = sorted(c.path for c in cells if c.fold == val_fold)
    test = sorted(c.path for c in cells if not c.fold)
    warnings.append(f"folds split: train = {', '.join(folds[:-1])}; val = {val_fold}; "
                    f"test = {len(test)} labelled images outside the folds")
    where: dict[str, set[str]] = defaultdict(set)
    for c in cells:
        if c.patient is not None:
            where[c.group].add("val" if c.fold == val_fold else "train" if c.fold else "test")
    mixed = sorted(g for g, s in where.items() if len(s) > 1)
    if mixed:
        warnings.append(f"{len(mixed)} patient(s) in more than one split: {', '.join(mixed[:5])}")
    return train, val, test


def _check_classes(cells, val_cells, train, val, test, wanted, warnings) -> None:
    label_of = {c.path: c.label for c in cells}
    train_counts = Counter(label_of[p] for p in train)
    val_labels = {c.label for c in val_cells} if val_cells is not None else {label_of[p] for p in val}
    known = set(label_of.values()) | set(wanted or ()) | val_labels
    missing = sorted(k for k in known if train_counts[k] == 0)
    if missing:
        raise ValueError(
            f"class(es) with no training images: {', '.join(missing)}. Every class needs labelled "
            "training images; label some, or remove the class"
        )
    if len(train_counts) < 2:
        raise ValueError(f"need at least two classes to train, found only {', '.join(train_counts)}")
    if not val:
        warnings.append("the validation split is empty: the best epoch cannot be chosen on held-out data")
    else:
        absent = sorted(k for k in train_counts if k not in val_labels)
        if absent:
            warnings.append(f"class(es) absent from validation: {', '.join(absent)}")
