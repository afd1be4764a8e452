"""A run's model card (model_card.json): its provenance, written when it starts ("running", with
its process), and when it ends. Data, counts per class and patient, weights, versions, split,
device and results; read by the Runs panel, `report` and the model report."""
from __future__ import annotations

import platform
import sys
import time
from collections import Counter
from typing import Any

from ..data.splits import LEAKY_NOTE, Split


def versions() -> dict[str, str]:
    import timm
    import torch

    from .. import __version__ as allblast

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "allblast": allblast, "platform": sys.platform,
            # an installer bundle (PyInstaller) or a Python environment: provenance of the run
            "build": "installer" if getattr(sys, "frozen", False) else "python"}


def split_counts(paths: list[str], cells_by_path: dict[str, Any]) -> dict[str, Any]:
    """Images per class and per patient (patient -> class -> n) of one split."""
    cells = [cells_by_path[p] for p in paths if p in cells_by_path]
    per_class = Counter(c.label for c in cells)
    per_patient: dict[str, Counter] = {}
    for c in cells:
        per_patient.setdefault(c.patient or "(unknown)", Counter())[c.label] += 1
    return {
        "n": len(cells),
        "per_class": dict(sorted(per_class.items())),
        "n_patients": len({c.patient for c in cells if c.patient is not None}),
        "per_patient": {p: dict(sorted(v.items())) for p, v in sorted(per_patient.items())},
    }


def build_model_card(*, status: str, data_root, split: Split, spec, weights: dict[str, Any],
                     config: dict[str, Any], counts: dict[str, Any], device: str, amp: str,
                     wall_time_s: float, epochs_run: int, best_epoch: int, monitor: str,
                     best_metrics: dict[str, Any], test_metrics: dict[str, Any] | None,
                     **extra: Any) -> dict[str, Any]:
    """Provenance of a run: data, counts per class and patient, weights, versions, split, results.

    `status` is "running" while training (with the process in `extra`), then one of FINISHED_STATES,
    "cancelled" or "failed" (with `failure`: kind and message). `extra` also carries `calibration`
    (temperature, ECE before and after on the validation split) once it is fitted."""
    s = split
    return {
        "format": "allblast.model_card/1",
        "status": status,
        **extra,
        "data_root": str(data_root),
        "val_root": s.val_root,
        "classes": list(spec.classes),
        "backbone": spec.backbone,
        "img_size": spec.img_size,
        "weights": weights,
        "split": {"protocol": s.protocol, "leaky": s.leaky, "by_patient": s.by_patient, "seed": s.seed,
                  "warnings": s.warnings, **({"leaky_note": LEAKY_NOTE} if s.leaky else {}),
                  "counts": counts},
        "seed": config.get("seed"),
        "device": device,
        "amp": amp,
        "versions": versions(),
        "wall_time_s": round(wall_time_s, 2),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "monitor": monitor,
        "best_metrics": best_metrics,
        "test_metrics": test_metrics,
        "config": config,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


__all__ = ["build_model_card", "split_counts", "versions"]
