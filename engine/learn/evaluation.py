"""The end of a run: calibration and the test pass of the best model, the DDP replicas' check,
and the model card (the recipe and every hyper-parameter, the world size). A mixin of
`session.TrainingSession`, whose state it reads; under DDP only rank 0 calibrates and tests.
"""
from __future__ import annotations

import logging

import torch

from ..utils.jobs import CancelToken
from .checkpoints import load_checkpoint
from .events import Message
from .distributed import weights_digest
from .loops import validate
from .recipes import recipe_of
from .runs import build_model_card, split_counts

log = logging.getLogger(__name__)
PARTS = ("train", "val", "test")
MIN_CALIBRATION_CELLS = 20  # validation cells needed to fit a temperature


class RunEnd:
    calibration: dict | None = None  # temperature scaling fitted at the end (calibrate)
    digests: list | None = None  # DDP: each rank's weights digest after the last epoch

    def calibrate(self, cancel: CancelToken):
        """Fit the best model's temperature on the validation split and save it into model.pt."""
        from .calibration import calibrate

        if self.loaders["val"] is None or not self.run.model_path.is_file():
            return None
        best = load_checkpoint(self.run.model_path)
        self.model.load_state_dict(best["state_dict"])
        r = yield from validate(self.model, self._whole("val"), self.device, self.spec, epoch=self.epoch,
                                phase="calibrate", autocast_dtype=self.amp, channels_last=self.channels_last,
                                cancel=cancel, outputs=True, pad_to=self.pad_eval)
        n = r.get("n", 0)
        if n < MIN_CALIBRATION_CELLS:
            # a temperature fitted on a handful of cells runs to its bound and flattens every
            # probability: better none (T = 1), said so, than a wrong one
            self.calibration = {"skipped": f"only {n} validation cells ({MIN_CALIBRATION_CELLS} needed)", "n": n}
            yield Message(f"probabilities not calibrated: {self.calibration['skipped']}")
            if n:
                self._write_predictions("val", r["logits"])
            return None
        self.calibration = calibrate(r["logits"], r["y_true"])
        extras = {k: v for k, v in best.items() if k not in ("format", "spec", "state_dict")}
        self.run.save_best(self.model, self.spec, **{**extras, "calibration": self.calibration})
        self._write_predictions("val", r["logits"])
        c = self.calibration
        yield Message(f"calibrated on {c['n']} validation cells: temperature {c['temperature']:.2f}, "
                      f"expected calibration error {c['ece_before']:.3f} -> {c['ece_after']:.3f}; wrote model.pt")
        return c

    def test(self, cancel: CancelToken):
        """Metrics of the best-by-validation model on the held-out test split."""
        from .metrics import classification_metrics, per_patient

        best = load_checkpoint(self.run.model_path)
        self.model.load_state_dict(best["state_dict"])
        r = yield from validate(self.model, self.loaders["test"], self.device, self.spec, epoch=self.epoch,
                                phase="test", autocast_dtype=self.amp, channels_last=self.channels_last,
                                cancel=cancel, outputs=True, pad_to=self.pad_eval, tta=self.config.tta_eval)
        classes = list(self.spec.classes)
        y_true = [classes[i] for i in r["y_true"]]
        y_pred = [classes[i] for i in r["y_pred"]]
        out = classification_metrics(y_true, y_pred, classes, probs=r["probs"] if len(classes) == 2 else None)
        out["loss"] = r["loss"]
        out["model_epoch"] = self.best_epoch
        out["tta"] = self.config.tta_eval
        # Test numbers travel without their split: say here whether they are leaky.
        out["split_protocol"], out["leaky"] = self.split.protocol, self.split.leaky
        patients = [self.cells["test"][p].patient for p in self.parts["test"]]
        out["per_patient"] = per_patient(patients, y_true, y_pred, classes)
        self._write_predictions("test", r["logits"])
        return out

    def _whole(self, part: str):
        """The split's loader over all its cells (DDP shards validation during training)."""
        from ..data.dataset import make_loader

        loader = self.loaders[part]
        if self.dist is None:
            return loader
        return make_loader(loader.dataset, batch_size=loader.batch_size, shuffle=False, device=self.device,
                           workers=0)

    def _write_predictions(self, part: str, logits) -> None:
        """<part>_predictions.csv: each cell of the split with its expert label and the best model's
        calibrated probabilities (what a model report is computed from)."""
        from .inference import Predictions

        temperature = (self.calibration or {}).get("temperature") or 1.0
        probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32) / float(temperature), 1).numpy()
        paths = self.parts[part]
        cells = [self.cells[part][p] for p in paths]
        Predictions(list(paths), [c.patient for c in cells], tuple(self.spec.classes), probs).write_csv(
            self.run.predictions_path(part), labels=[c.label for c in cells])

    def check_replicas(self) -> None:
        """DDP: every rank's weights digest after the last epoch (they must all be the same)."""
        if self.dist is not None:
            self.digests = self.dist.all_values(weights_digest(self.model))
            if len(set(self.digests)) > 1:
                log.error("the ranks' weights differ after training: %s", self.digests)

    def write_card(self, reason: str, test_metrics=None, **extra) -> None:
        d = self.dist
        extra["recipe"] = recipe_of(self.config)
        extra["world_size"] = d.world_size if d else 1
        extra["distributed"] = {"world_size": d.world_size if d else 1, "backend": d.backend if d else None,
                                "sync_bn": bool(d and self.config.sync_bn),
                                **({"rank_weight_digests": self.digests} if self.digests else {})}
        self.run.write_model_card(build_model_card(
            status=reason, **extra, data_root=self.scan.root, split=self.split, spec=self.spec,
            weights={**self.weights, "pretrained": self.config.pretrained}, config=self.config.to_dict(),
            counts={p: split_counts(self.parts[p], self.cells[p]) for p in PARTS},
            device=self.device_name, amp=str(self.amp).replace("torch.", "") if self.amp else "off",
            wall_time_s=self.elapsed_total(), epochs_run=self.epochs_done, best_epoch=self.best_epoch,
            monitor=self.monitor, best_metrics=self.best_metrics, test_metrics=test_metrics,
            calibration=self.calibration))
