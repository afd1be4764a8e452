"""The end of a run: calibration and the test pass of the best model, the DDP replicas' check,
and the model card (the recipe and every hyper-parameter, the world size). `RunEnd` is a part of
`session.TrainingSession` (its `end`): it reads the session it ends and keeps what the end adds
(the calibration, the replicas' digests); under DDP only rank 0 calibrates and tests.
"""
from __future__ import annotations

import logging
import weakref

import torch

from ..utils.jobs import CancelToken
from .checkpoints import load_checkpoint
from .events import Message
from .distributed import weights_digest
from .loops import validate
from .recipes import recipe_of
from .model_card import build_model_card, split_counts

log = logging.getLogger(__name__)
PARTS = ("train", "val", "test")
MIN_CALIBRATION_CELLS = 20  # validation cells needed to fit a temperature


class RunEnd:
    """The end of one training session (`session.end`)."""

    def __init__(self, session) -> None:
        # A weak reference: a strong one would make session <-> end a cycle, and the session (its
        # DataLoader workers and their queue threads) would then outlive the run until a gc pass.
        self._session = weakref.ref(session)  # the session.TrainingSession this part ends
        self.calibration: dict | None = None  # temperature scaling fitted at the end (calibrate)
        self.digests: list | None = None  # DDP: each rank's weights digest after the last epoch

    @property
    def session(self):
        return self._session()

    def calibrate(self, cancel: CancelToken):
        """Fit the best model's temperature on the validation split and save it into model.pt."""
        from .calibration import calibrate

        s = self.session
        if s.loaders["val"] is None or not s.run.model_path.is_file():
            return None
        best = load_checkpoint(s.run.model_path)
        s.model.load_state_dict(best["state_dict"])
        r = yield from validate(s.model, self._whole("val"), s.device, s.spec, epoch=s.epoch,
                                phase="calibrate", autocast_dtype=s.amp, channels_last=s.channels_last,
                                cancel=cancel, outputs=True, pad_to=s.pad_eval)
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
        s.run.save_best(s.model, s.spec, **{**extras, "calibration": self.calibration})
        self._write_predictions("val", r["logits"])
        c = self.calibration
        yield Message(f"calibrated on {c['n']} validation cells: temperature {c['temperature']:.2f}, "
                      f"expected calibration error {c['ece_before']:.3f} -> {c['ece_after']:.3f}; wrote model.pt")
        return c

    def test(self, cancel: CancelToken):
        """Metrics of the best-by-validation model on the held-out test split."""
        from .metrics import classification_metrics, per_patient

        s = self.session
        best = load_checkpoint(s.run.model_path)
        s.model.load_state_dict(best["state_dict"])
        r = yield from validate(s.model, s.loaders["test"], s.device, s.spec, epoch=s.epoch,
                                phase="test", autocast_dtype=s.amp, channels_last=s.channels_last,
                                cancel=cancel, outputs=True, pad_to=s.pad_eval, tta=s.config.tta_eval)
        classes = list(s.spec.classes)
        y_true = [classes[i] for i in r["y_true"]]
        y_pred = [classes[i] for i in r["y_pred"]]
        out = classification_metrics(y_true, y_pred, classes, probs=r["probs"] if len(classes) == 2 else None)
        out["loss"] = r["loss"]
        out["model_epoch"] = s.best_epoch
        out["tta"] = s.config.tta_eval
        # Test numbers travel without their split: say here whether they are leaky.
        out["split_protocol"], out["leaky"] = s.split.protocol, s.split.leaky
        patients = [s.cells["test"][p].patient for p in s.parts["test"]]
        out["per_patient"] = per_patient(patients, y_true, y_pred, classes)
        self._write_predictions("test", r["logits"])
        return out

    def _whole(self, part: str):
        """The split's loader over all its cells (DDP shards validation during training)."""
        from ..data.dataset import make_loader

        s = self.session
        loader = s.loaders[part]
        if s.dist is None:
            return loader
        return make_loader(loader.dataset, batch_size=loader.batch_size, shuffle=False, device=s.device,
                           workers=0)

    def _write_predictions(self, part: str, logits) -> None:
        """<part>_predictions.csv: each cell of the split with its expert label and the best model's
        calibrated probabilities (what a model report is computed from)."""
        from .inference import Predictions

        s = self.session
        temperature = (self.calibration or {}).get("temperature") or 1.0
        probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32) / float(temperature), 1).numpy()
        paths = s.parts[part]
        cells = [s.cells[part][p] for p in paths]
        Predictions(list(paths), [c.patient for c in cells], tuple(s.spec.classes), probs).write_csv(
            s.run.predictions_path(part), labels=[c.label for c in cells])

    def check_replicas(self) -> None:
        """DDP: every rank's weights digest after the last epoch (they must all be the same)."""
        s = self.session
        if s.dist is not None:
            self.digests = s.dist.all_values(weights_digest(s.model))
            if len(set(self.digests)) > 1:
                log.error("the ranks' weights differ after training: %s", self.digests)

    def write_card(self, reason: str, test_metrics=None, **extra) -> None:
        s = self.session
        d = s.dist
        extra["recipe"] = recipe_of(s.config)
        if getattr(s.config, "loop", None):  # a Keep Learning round: which loop, round, strategy, expert labels
            extra["loop"] = dict(s.config.loop)
        extra["world_size"] = d.world_size if d else 1
        extra["distributed"] = {"world_size": d.world_size if d else 1, "backend": d.backend if d else None,
                                "sync_bn": bool(d and s.config.sync_bn),
                                **({"rank_weight_digests": self.digests} if self.digests else {})}
        s.run.write_model_card(build_model_card(
            status=reason, **extra, data_root=s.scan.root, split=s.split, spec=s.spec,
            weights={**s.weights, "pretrained": s.config.pretrained}, config=s.config.to_dict(),
            counts={p: split_counts(s.parts[p], s.cells[p]) for p in PARTS},
            device=s.device_name, amp=str(s.amp).replace("torch.", "") if s.amp else "off",
            wall_time_s=s.elapsed_total(), epochs_run=s.epochs_done, best_epoch=s.best_epoch,
            monitor=s.monitor, best_metrics=s.best_metrics, test_metrics=test_metrics,
            calibration=self.calibration))
