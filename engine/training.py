"""Fine-tuning: `TrainConfig` and `fit`, a generator of engine.events that a driver reacts to.

The recipe is the paper's reference notebook: Adamax (lr 1e-3), class-weighted cross-entropy,
flips + 90-degree rotations, halve the LR when the monitored metric stalls for `patience` epochs,
stop after `max_stalls` such halvings without improvement, keep the best-by-validation model, and
ask "halt or continue for N epochs?" every `ask_every` epochs. On CUDA it adds what makes it fast
(AMP, channels_last, cudnn.benchmark, pinned uint8 batches, a decoded-image cache).

Checkpoints are only written after a completed epoch, atomically, so cancelling, a NaN loss, an
out-of-memory error or a kill never costs more than the epoch in progress.
"""
from __future__ import annotations

import time
import traceback
from collections.abc import Generator
from dataclasses import asdict, dataclass, fields

import torch

from .events import (AskContinue, CancelToken, Cancelled, Continue, EpochEnd, Message, TrainingFailed,
                     TrainingFinished, TrainingStarted)
from .imaging import ImageReadError
from .loops import NonFiniteLoss, Plateau, amp_dtype, class_weights, train_one_epoch, validate
from .runs import RunDir, rng_state, set_rng_state, split_counts, versions
from .splits import LEAKY_NOTE, as_scan, make_split, usable

MONITORS = {"val_loss": "min", "val_accuracy": "max", "val_weighted_f1": "max",
            "train_loss": "min", "train_accuracy": "max"}


@dataclass
class TrainConfig:
    backbone: str = "efficientnet_b3"
    weights: str | None = None  # ImageNet weights file for the backbone; None = look it up
    pretrained: bool = True
    img_size: int | None = None  # None = the backbone's pretrained input size
    epochs: int = 10  # total epochs (a resumed run counts the ones already done)
    batch_size: int = 32
    lr: float = 1e-3
    ask_every: int = 5  # 0 = never ask
    device: str = "auto"
    workers: int | None = None
    seed: int = 0
    split: str = "patient"
    val_fraction: float | None = None  # None = the protocol's default (patient 0.15, image 0.05)
    test_fraction: float | None = None
    patience: int = 1
    lr_factor: float = 0.5
    max_stalls: int = 3
    monitor: str = "val_loss"
    amp: bool = True
    cache: bool = True
    cache_max_bytes: int | None = None  # None = data.DecodedCache's default budget
    class_weights: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # newer keys are ignored

    def validate(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, not {self.monitor!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not (self.lr > 0 and 0 < self.lr_factor <= 1 and self.patience >= 1 and self.max_stalls >= 1):
            raise ValueError("lr must be > 0, lr_factor in (0, 1], patience and max_stalls >= 1")


# ---- fit: the whole run as a generator of events ------------------------------------------------
# Fields a resumed run takes from the caller; every other field comes from the run's config.json,
# because it defines the model, the data or the recipe the saved state belongs to.
RUN_CONTROL = ("epochs", "ask_every", "device", "workers", "amp", "cache", "cache_max_bytes")


def fit(scan, out_dir, config: TrainConfig, *, val_scan=None, cancel: CancelToken | None = None,
        resume: bool = False) -> Generator[object, object, None]:
    """Train into the run folder `out_dir`, yielding engine.events.

    Answer `AskContinue` with `gen.send(Continue(n))` (train n more epochs, then ask again) or
    `gen.send(Halt())`; sending None is Halt. Every failure ends in one `TrainingFailed` (never an
    exception); a cancel (token or KeyboardInterrupt) ends in `TrainingFinished("cancelled")`.
    """
    from .model import WeightsNotFoundError

    run = RunDir(out_dir)
    cancel = cancel or CancelToken()
    try:
        job = _Job(scan, run, config, val_scan, resume)
    except WeightsNotFoundError as exc:
        yield TrainingFailed(str(exc), "weights", str(run.path))
        return
    except Exception as exc:
        if _is_oom(exc):
            yield TrainingFailed(_oom_message(config.batch_size, config.img_size), "out-of-memory", str(run.path))
            return
        if isinstance(exc, (ValueError, OSError)):
            yield TrainingFailed(str(exc), "data", str(run.path))
        else:
            yield TrainingFailed(f"{type(exc).__name__}: {exc}", "error", str(run.path),
                                 {"traceback": traceback.format_exc()})
        return
    for text in job.messages:
        yield Message(text, "warning")
    yield TrainingStarted(str(run.path), job.device_name, job.spec.classes, len(job.parts["train"]),
                          len(job.parts["val"]), len(job.parts["test"]), job.split.protocol,
                          job.start_epoch, job.config.epochs, job.weights.get("source", "none"))
    test_metrics = None
    try:
        reason = yield from job.loop(cancel)
        if reason != "cancelled" and job.parts["test"] and job.run.model_path.is_file():
            test_metrics = yield from job.test(cancel)
    except (Cancelled, KeyboardInterrupt):
        reason = "cancelled"
    except NonFiniteLoss as exc:
        yield TrainingFailed(
            f"{exc}. Lower the learning rate (e.g. --lr {job.config.lr / 10:g}) or check the data for "
            f"broken or unusual images. Checkpoints of the last completed epoch ({job.epochs_done}) are kept.",
            "nan-loss", str(run.path), {"epoch": exc.epoch, "batch": exc.batch, "phase": exc.phase})
        return
    except ImageReadError as exc:
        yield TrainingFailed(str(exc), "data", str(run.path))
        return
    except Exception as exc:
        if _is_oom(exc):
            job.release()
            yield TrainingFailed(_oom_message(job.config.batch_size, job.spec.img_size) + " Checkpoints of "
                                 "the last completed epoch are kept (resume the run).", "out-of-memory",
                                 str(run.path))
            return
        yield TrainingFailed(f"{type(exc).__name__}: {exc}", "error", str(run.path),
                             {"traceback": traceback.format_exc()})
        return
    job.write_card(reason, test_metrics)
    yield TrainingFinished(str(run.path), reason, job.epochs_done, job.best_epoch, job.best_metrics,
                           test_metrics, job.elapsed_total())


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))  # CPU allocator


def _oom_message(batch_size: int, img_size) -> str:
    return (f"out of memory with batch size {batch_size} at image size {img_size or 'default'}: try "
            f"--batch-size {max(1, batch_size // 2)} or a smaller --img-size.")


class _Job:
    """Everything one run needs, set up (or restored from last.pt) before the first event."""

    def __init__(self, scan, run: RunDir, config: TrainConfig, val_scan, resume: bool):
        from .model import ModelSpec, build_model, resolve_device

        self.t0, self.elapsed_before = time.monotonic(), 0.0
        self.scan, self.run, self.messages = scan, run, []
        config = TrainConfig.from_dict(config.to_dict())  # our own copy
        config.validate()
        state = None
        if resume:
            if not run.can_resume():
                raise FileNotFoundError(f"nothing to resume in {run.path}: it needs last.pt, config.json and "
                                        "split.json (no epoch finished yet?); start a new run instead")
            saved = TrainConfig.from_dict(run.read_config())
            changed = [k for k in asdict(saved) if k not in RUN_CONTROL and getattr(saved, k) != getattr(config, k)]
            if changed:
                self.messages.append(f"resuming with the run's saved {', '.join(changed)} (they define the run)")
            for k in RUN_CONTROL:
                setattr(saved, k, getattr(config, k))
            config, split = saved, run.read_split()
            state = run.load_last()
        else:
            if run.has_run():
                raise ValueError(f"{run.path} already holds a training run; choose a new output folder "
                                 "or resume it")
            run.create()
            split = make_split(scan, config.split, seed=config.seed, val_scan=val_scan,
                               val_fraction=config.val_fraction, test_fraction=config.test_fraction)
            self.messages += split.warnings
            run.write_split(split)
        if val_scan is not None and split.protocol != "predefined":
            self.messages.append(f"the separate validation data is ignored by the {split.protocol} split "
                                 "(use the predefined split to validate on it)")
        run.write_config(config.to_dict())
        self.config, self.split = config, split
        self.device = resolve_device(config.device)
        self.device_name = str(self.device)
        if self.device.type == "cuda":
            self.device_name += f" ({torch.cuda.get_device_name(self.device)})"

        # Labels of every split, from the scans (val from the separate folder for `predefined`).
        cells = {c.path: c for c in usable(scan.cells)}
        vcells = cells
        if split.protocol == "predefined":
            vs = as_scan(val_scan if val_scan is not None else split.val_root)
            vcells = {c.path: c for c in usable(vs.cells)}
        self.cells = {"train": cells, "val": vcells, "test": cells}
        self.roots = {"train": scan.root, "test": scan.root,
                      "val": vs.root if split.protocol == "predefined" else scan.root}
        classes = tuple(split.classes) or tuple(sorted({c.label for c in cells.values()}))
        self.parts = {}
        for part in ("train", "val", "test"):
            listed = getattr(split, part)
            kept = [p for p in listed if p in self.cells[part] and self.cells[part][p].label in classes]
            if len(kept) < len(listed):
                self.messages.append(f"{len(listed) - len(kept)} {part} images of split.json are no longer "
                                     "labelled in the data folder; they are skipped")
            self.parts[part] = kept
        if not self.parts["train"]:
            raise ValueError("no training images left; rescan the data folder")

        torch.manual_seed(config.seed)  # the head's initial weights
        if state is not None:
            spec = ModelSpec.from_dict(state["spec"])
            model, _, _ = build_model(spec.backbone, spec.classes, pretrained=False, img_size=spec.img_size)
            model.load_state_dict(state["model"])
            self.weights = dict(state["weights"])
        else:
            model, spec, info = build_model(config.backbone, classes, pretrained=config.pretrained,
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
        self._make_loaders()

        self.monitor = config.monitor
        if not self.parts["val"] and self.monitor.startswith("val_"):
            self.monitor = "train_loss" if self.monitor == "val_loss" else "train_accuracy"
            self.messages.append(f"no validation images: the best epoch is chosen by {self.monitor}")
        self.plateau = Plateau(MONITORS[self.monitor], config.patience, config.lr_factor, config.max_stalls)
        self.start_epoch = self.epoch = 0
        self.best_epoch, self.best_metrics = 0, {}
        if state is not None:
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
                self.messages.append("this run had stopped early; its stall count starts again at 0")
            run.truncate_metrics(self.start_epoch)  # lines written after last.pt was saved

    epoch_complete = True  # False while an epoch is in progress (it has no checkpoint yet)

    @property
    def epochs_done(self) -> int:
        return self.epoch if self.epoch_complete else self.epoch - 1

    def _make_loaders(self) -> None:
        from .data import CellDataset, DecodedCache, default_cache_budget, make_loader

        c, spec = self.config, self.spec
        budget = (c.cache_max_bytes if c.cache_max_bytes is not None else default_cache_budget()) if c.cache else 0
        self.targets = {}
        self.loaders = {}
        for part in ("train", "val", "test"):
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

    def loop(self, cancel: CancelToken):
        c = self.config
        end, ask = c.epochs, c.ask_every
        next_ask = self.start_epoch + ask if ask > 0 else None
        if self.epoch >= end:
            yield Message(f"this run already trained {self.epoch} epochs (epochs={end}); ask for more "
                          "epochs to continue it")
            return "completed"
        while True:
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
            if self.plateau.should_stop:
                yield Message(f"stopping: {self.monitor} did not improve through {self.plateau.stalls} "
                              f"learning-rate reductions (best epoch {self.best_epoch})")
                return "early-stopped"
            if next_ask is not None and self.epoch >= next_ask:
                decision = yield AskContinue(self.epoch, self.best_epoch, float(self.plateau.best), ask)
                if isinstance(decision, Continue) and decision.epochs > 0:
                    next_ask = self.epoch + decision.epochs
                    end = max(end, next_ask)
                    continue
                return "completed" if self.epoch >= end else "halted"
            if self.epoch >= end:
                return "completed"

    def _last_state(self) -> dict:
        return {"format": "allblast.last/1", "epoch": self.epoch, "spec": self.spec.to_dict(),
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "plateau": self.plateau.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "best_epoch": self.best_epoch, "best_metrics": self.best_metrics, "rng": rng_state(),
                "elapsed": self.elapsed_total(), "weights": self.weights}

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
        return out

    def elapsed_total(self) -> float:
        return self.elapsed_before + time.monotonic() - self.t0

    def release(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def write_card(self, reason: str, test_metrics) -> None:
        s = self.split
        card = {
            "format": "allblast.model_card/1",
            "status": reason,
            "data_root": str(self.scan.root),
            "val_root": s.val_root,
            "classes": list(self.spec.classes),
            "backbone": self.spec.backbone,
            "img_size": self.spec.img_size,
            "weights": {**self.weights, "pretrained": self.config.pretrained},
            "split": {"protocol": s.protocol, "leaky": s.leaky, "by_patient": s.by_patient, "seed": s.seed,
                      "warnings": s.warnings,
                      **({"leaky_note": LEAKY_NOTE} if s.leaky else {}),
                      "counts": {p: split_counts(self.parts[p], self.cells[p]) for p in self.parts}},
            "seed": self.config.seed,
            "device": self.device_name,
            "amp": str(self.amp).replace("torch.", "") if self.amp else "off",
            "versions": versions(),
            "wall_time_s": round(self.elapsed_total(), 2),
            "epochs_run": self.epochs_done,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "best_metrics": self.best_metrics,
            "test_metrics": test_metrics,
            "config": self.config.to_dict(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.run.write_model_card(card)
