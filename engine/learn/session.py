"""One training run's state: set up (or restored from last.pt), the epoch loop, the test pass.

The recipe is the paper's reference notebook: Adamax (lr 1e-3), class-weighted cross-entropy,
flips + 90-degree rotations, halve the LR when the monitored metric stalls for `patience` epochs,
stop after `max_stalls` such halvings without improvement, keep the best-by-validation model, and
ask "halt or continue for N epochs?" every `ask_every` epochs. On CUDA it adds what makes it fast
(AMP, channels_last, cudnn.benchmark, pinned uint8 batches, a decoded-image cache).

Checkpoints are only written after a completed epoch, atomically, so cancelling, a NaN loss, an
out-of-memory error or a kill never costs more than the epoch in progress.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict

import torch

from ..data.cells import trainable
from ..data.splits import as_scan, make_split
from ..utils.jobs import CancelToken
from ..utils.logs import warn
from .config import MONITORS, RUN_CONTROL, TrainConfig
from .device import amp_dtype, device_name, release_memory, resolve_device
from .events import AskContinue, Continue, EpochEnd, Message
from .loops import Plateau, class_weights, train_one_epoch, validate
from .runs import RunDir, build_model_card, rng_state, set_rng_state, split_counts

log = logging.getLogger(__name__)
PARTS = ("train", "val", "test")
MIN_CALIBRATION_CELLS = 20  # validation cells needed to fit a temperature


class TrainingSession:
    """Everything one run needs, set up before the first event; `loop` and `test` are generators."""

    epoch_complete = True  # False while an epoch is in progress (it has no checkpoint yet)
    calibration: dict | None = None  # temperature scaling fitted at the end (calibrate)

    def __init__(self, scan, run: RunDir, config: TrainConfig, val_scan, resume: bool):
        self.t0, self.elapsed_before = time.monotonic(), 0.0
        self.scan, self.run = scan, run
        config = TrainConfig.from_dict(config.to_dict())  # our own copy
        config.validate()
        state = None
        if resume:
            run.clean_temporaries()  # a killed run's half-written checkpoint; this run is ours now
            config, split, state = self._restore(run, config)
        else:
            if run.has_run():
                raise ValueError(f"{run.path} already holds a training run; choose a new output folder "
                                 "or resume it")
            run.create()
            run.clean_temporaries()
            split = make_split(scan, config.split, seed=config.seed, val_scan=val_scan,
                               val_fraction=config.val_fraction, test_fraction=config.test_fraction)
            for text in split.warnings:
                warn(text)
            run.write_split(split)
        if val_scan is not None and split.protocol != "predefined":
            warn(f"the separate validation data is ignored by the {split.protocol} split "
                 "(use the predefined split to validate on it)")
        run.write_config(config.to_dict())
        self.config, self.split = config, split
        self.device = resolve_device(config.device)
        self.device_name = device_name(self.device)
        self._select_cells(scan, split, val_scan)
        self._build(state)
        self._make_loaders()
        self._init_schedule(state)
        log.info("training %s on %s: %d train, %d val, %d test cells", self.spec.backbone, self.device_name,
                 *(len(self.parts[p]) for p in PARTS))

    # ---- setup ---------------------------------------------------------------------------------
    @staticmethod
    def _restore(run: RunDir, config: TrainConfig):
        if not run.can_resume():
            raise FileNotFoundError(f"nothing to resume in {run.path}: it needs last.pt, config.json and "
                                    "split.json (no epoch finished yet?); start a new run instead")
        saved = TrainConfig.from_dict(run.read_config())
        changed = [k for k in asdict(saved) if k not in RUN_CONTROL and getattr(saved, k) != getattr(config, k)]
        if changed:
            warn(f"resuming with the run's saved {', '.join(changed)} (they define the run)")
        for k in RUN_CONTROL:
            setattr(saved, k, getattr(config, k))
        return saved, run.read_split(), run.load_last()

    def _select_cells(self, scan, split, val_scan) -> None:
        """Labels of every split, from the scans (val from the separate folder for `predefined`)."""
        cells = {c.path: c for c in trainable(scan.cells)}
        vcells, val_root = cells, scan.root
        if split.protocol == "predefined":
            vs = as_scan(val_scan if val_scan is not None else split.val_root)
            vcells, val_root = {c.path: c for c in trainable(vs.cells)}, vs.root
        self.cells = {"train": cells, "val": vcells, "test": cells}
        self.roots = {"train": scan.root, "val": val_root, "test": scan.root}
        self.classes = tuple(split.classes) or tuple(sorted({c.label for c in cells.values()}))
        self.parts = {}
        for part in PARTS:
            listed = getattr(split, part)
            kept = [p for p in listed if p in self.cells[part] and self.cells[part][p].label in self.classes]
            if len(kept) < len(listed):
                warn(f"{len(listed) - len(kept)} {part} images of split.json are no longer labelled in the "
                     "data folder; they are skipped")
            self.parts[part] = kept
        if not self.parts["train"]:
            raise ValueError("no training images left; rescan the data folder")

    def _build(self, state) -> None:
        from .model import ModelSpec, build_model

        config = self.config
        torch.manual_seed(config.seed)  # the head's initial weights
        if state is not None:
            spec = ModelSpec.from_dict(state["spec"])
            model, _, _ = build_model(spec.backbone, spec.classes, pretrained=False, img_size=spec.img_size)
            model.load_state_dict(state["model"])
            self.weights = dict(state["weights"])
        else:
            model, spec, info = build_model(config.backbone, self.classes, pretrained=config.pretrained,
                                            weights=config.weights, img_size=config.img_size)
            self.weights = asdict(info)
        self.spec = spec
        cuda = self.device.type == "cuda"
        self.channels_last = cuda  # NHWC convolutions are the fast path for tensor cores
        if cuda:
            torch.backends.cudnn.benchmark = True
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device)
        self.amp = amp_dtype(self.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.optimizer = torch.optim.Adamax(self.model.parameters(), lr=config.lr)

    def _make_loaders(self) -> None:
        from ..data.dataset import CellDataset, DecodedCache, default_cache_budget, make_loader

        c, spec = self.config, self.spec
        budget = (c.cache_max_bytes if c.cache_max_bytes is not None else default_cache_budget()) if c.cache else 0
        self.targets, self.loaders = {}, {}
        for part in PARTS:
            paths = self.parts[part]
            targets = [spec.classes.index(self.cells[part][p].label) for p in paths]
            self.targets[part] = targets
            if not paths:
                self.loaders[part] = None
                continue
            cache = None
            if part != "test" and budget > 0:  # test is read once: a cache would not pay off
                cache = DecodedCache(len(paths), spec.img_size, max_bytes=budget)
                budget -= cache.nbytes
            ds = CellDataset(self.roots[part], paths, targets, img_size=spec.img_size,
                             interpolation=spec.interpolation, augment=part == "train", cache=cache)
            # BatchNorm1d in the head cannot train on a batch of one: drop a lone last sample.
            drop = part == "train" and len(paths) % c.batch_size == 1 and len(paths) > 1
            self.loaders[part] = make_loader(ds, batch_size=c.batch_size, shuffle=part == "train",
                                             device=self.device, workers=c.workers, drop_last=drop,
                                             seed=c.seed)
        weight = class_weights(self.targets["train"], len(spec.classes)) if c.class_weights else None
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=None if weight is None else weight.to(self.device))

    def _init_schedule(self, state) -> None:
        c = self.config
        self.monitor = c.monitor
        if not self.parts["val"] and self.monitor.startswith("val_"):
            self.monitor = "train_loss" if self.monitor == "val_loss" else "train_accuracy"
            warn(f"no validation images: the best epoch is chosen by {self.monitor}")
        self.plateau = Plateau(MONITORS[self.monitor], c.patience, c.lr_factor, c.max_stalls)
        self.start_epoch = self.epoch = 0
        self.best_epoch, self.best_metrics = 0, {}
        if state is None:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.plateau.load_state_dict(state["plateau"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = self.epoch = int(state["epoch"])
        self.best_epoch, self.best_metrics = int(state["best_epoch"]), dict(state["best_metrics"])
        self.elapsed_before = float(state.get("elapsed", 0.0))
        set_rng_state(state["rng"])
        if self.plateau.should_stop:  # resuming an early-stopped run: the user wants more epochs
            self.plateau.stalls = 0
            warn("this run had stopped early; its stall count starts again at 0")
        self.run.truncate_metrics(self.start_epoch)  # lines written after last.pt was saved

    # ---- running -------------------------------------------------------------------------------
    @property
    def epochs_done(self) -> int:
        return self.epoch if self.epoch_complete else self.epoch - 1

    def loop(self, cancel: CancelToken):
        c = self.config
        end, ask = c.epochs, c.ask_every
        next_ask = self.start_epoch + ask if ask > 0 else None
        if self.epoch >= end:
            yield Message(f"this run already trained {self.epoch} epochs (epochs={end}); ask for more "
                          "epochs to continue it")
            return "completed"
        while True:
            yield from self._one_epoch(cancel)
            if self.plateau.should_stop:
                yield Message(f"stopping: {self.monitor} did not improve through {self.plateau.stalls} "
                              f"learning-rate reductions (best epoch {self.best_epoch})")
                return "early-stopped"
            if next_ask is not None and self.epoch >= next_ask:
                decision = yield AskContinue(self.epoch, self.best_epoch, float(self.plateau.best), ask)
                if isinstance(decision, Continue) and decision.epochs > 0:  # None or Halt() halts
                    next_ask = self.epoch + decision.epochs
                    end = max(end, next_ask)
                    continue
                return "completed" if self.epoch >= end else "halted"
            if self.epoch >= end:
                return "completed"

    def _one_epoch(self, cancel: CancelToken):
        c = self.config
        self.epoch += 1
        self.epoch_complete = False
        t = time.perf_counter()
        # Per-epoch seeds: a resumed run sees the same order and augmentation it would have seen.
        torch.manual_seed(c.seed * 100_003 + self.epoch)
        self.loaders["train"].generator.manual_seed(c.seed * 100_003 + self.epoch)
        train = yield from train_one_epoch(
            self.model, self.loaders["train"], self.loss_fn, self.optimizer, self.device, self.spec,
            epoch=self.epoch, autocast_dtype=self.amp, scaler=self.scaler,
            channels_last=self.channels_last, cancel=cancel)
        val = {}
        if self.loaders["val"] is not None:
            val = yield from validate(self.model, self.loaders["val"], self.device, self.spec,
                                      epoch=self.epoch, autocast_dtype=self.amp,
                                      channels_last=self.channels_last, cancel=cancel)
        lr = self.optimizer.param_groups[0]["lr"]
        flat = {f"train_{k}": v for k, v in train.items() if k in ("loss", "accuracy")}
        flat.update({f"val_{k}": v for k, v in val.items() if k != "n"})
        is_best = self.plateau.step(flat[self.monitor], self.optimizer)
        if is_best:
            self.best_epoch, self.best_metrics = self.epoch, flat
            self.run.save_best(self.model, self.spec, epoch=self.epoch, metrics=flat,
                               monitor=self.monitor, split_protocol=self.split.protocol,
                               leaky=self.split.leaky, weights=self.weights, config=c.to_dict())
        seconds = time.perf_counter() - t
        self.run.append_metrics({"epoch": self.epoch, "lr": lr, "train": train, "val": val,
                                 "is_best": is_best, "stalls": self.plateau.stalls,
                                 "seconds": seconds, "time": time.time()})
        self.run.save_last(self._last_state())
        self.epoch_complete = True
        yield EpochEnd(self.epoch, train, val, lr, is_best, seconds, self.plateau.stalls)

    def _last_state(self) -> dict:
        return {"format": "allblast.last/1", "epoch": self.epoch, "spec": self.spec.to_dict(),
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "plateau": self.plateau.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "best_epoch": self.best_epoch, "best_metrics": self.best_metrics, "rng": rng_state(),
                "elapsed": self.elapsed_total(), "weights": self.weights}

    def calibrate(self, cancel: CancelToken):
        """Fit the best model's temperature on the validation split and save it into model.pt."""
        from .calibration import calibrate

        if self.loaders["val"] is None or not self.run.model_path.is_file():
            return None
        best = torch.load(self.run.model_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(best["state_dict"])
        r = yield from validate(self.model, self.loaders["val"], self.device, self.spec, epoch=self.epoch,
                                phase="calibrate", autocast_dtype=self.amp, channels_last=self.channels_last,
                                cancel=cancel, outputs=True)
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

        best = torch.load(self.run.model_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(best["state_dict"])
        r = yield from validate(self.model, self.loaders["test"], self.device, self.spec, epoch=self.epoch,
                                phase="test", autocast_dtype=self.amp, channels_last=self.channels_last,
                                cancel=cancel, outputs=True)
        classes = list(self.spec.classes)
        y_true = [classes[i] for i in r["y_true"]]
        y_pred = [classes[i] for i in r["y_pred"]]
        out = classification_metrics(y_true, y_pred, classes, probs=r["probs"] if len(classes) == 2 else None)
        out["loss"] = r["loss"]
        out["model_epoch"] = self.best_epoch
        # Test numbers travel without their split: say here whether they are leaky.
        out["split_protocol"], out["leaky"] = self.split.protocol, self.split.leaky
        patients = [self.cells["test"][p].patient for p in self.parts["test"]]
        out["per_patient"] = per_patient(patients, y_true, y_pred, classes)
        self._write_predictions("test", r["logits"])
        return out

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

    def elapsed_total(self) -> float:
        return self.elapsed_before + time.monotonic() - self.t0

    def release(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        release_memory(self.device)

    def write_card(self, reason: str, test_metrics=None, **extra) -> None:
        self.run.write_model_card(build_model_card(
            status=reason, **extra, data_root=self.scan.root, split=self.split, spec=self.spec,
            weights={**self.weights, "pretrained": self.config.pretrained}, config=self.config.to_dict(),
            counts={p: split_counts(self.parts[p], self.cells[p]) for p in PARTS},
            device=self.device_name, amp=str(self.amp).replace("torch.", "") if self.amp else "off",
            wall_time_s=self.elapsed_total(), epochs_run=self.epochs_done, best_epoch=self.best_epoch,
            monitor=self.monitor, best_metrics=self.best_metrics, test_metrics=test_metrics,
            calibration=self.calibration))
