"""One training run's state: set up (or restored from last.pt), the epoch loop, the test pass.

The paper's recipe is its reference notebook: Adamax (lr 1e-3), class-weighted cross-entropy,
flips + 90-degree rotations, halve the LR when the monitored metric stalls for `patience` epochs,
stop after `max_stalls` such halvings without improvement, keep the best-by-validation model, and
ask "halt or continue for N epochs?" every `ask_every` epochs. Other recipes (engine.learn.recipes)
change the schedule, the optimiser's groups, the loss, the augmentation, EMA and TTA.

Launched by torchrun, every rank runs this session on its shard of the training data
(DistributedDataParallel); rank 0 alone decides what other ranks receive (config, split,
resumed state, the answer to "continue?") and alone writes the run folder. On CUDA it adds what
makes it fast (AMP, channels_last, pinned uint8 batches, a decoded-image cache, fixed batch shapes
warmed up before the first epoch; cuDNN autotuning only on request, `device.cudnn_benchmark`).

The session is composed of parts: what a run starts from is `start.start_run`'s; calibration,
the test pass and the model card are its `end` (`evaluation.RunEnd`).

Checkpoints are only written after a completed epoch, atomically, so cancelling, a NaN loss, an
out-of-memory error or a kill never costs more than the epoch in progress.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict

import torch

from ..data.cells import trainable
from ..data.splits import as_scan
from ..utils.jobs import CancelToken
from ..utils.logs import warn
from .config import MONITORS, TrainConfig
from .device import amp_dtype, cudnn_benchmark, device_name, fixed_batch_shapes, release_memory, resolve_device
from .events import AskContinue, Continue, EpochEnd, Message
from .loops import Plateau, class_weights, train_one_epoch, validate
from .distributed import Dist, from_env, wrap
from .recipes import build_ema, build_optimizer, build_scheduler
from .evaluation import RunEnd
from .rng import rng_state, set_rng_state
from .run_folder import ReplicaRunDir, RunDir
from .start import start_run
from .warmup import batch_shapes, warm_up

log = logging.getLogger(__name__)
PARTS = ("train", "val", "test")


class TrainingSession:
    """Everything one run needs, set up before the first event; `loop` is a generator, and so are
    `end.calibrate` and `end.test`."""

    epoch_complete = True  # False while an epoch is in progress (it has no checkpoint yet)
    warmed = False  # fixed shapes: the batch shapes were warmed up in this process

    def __init__(self, scan, run: RunDir, config: TrainConfig, val_scan, resume: bool):
        self.t0, self.elapsed_before = time.monotonic(), 0.0
        self.dist: Dist | None = from_env(config.device)
        if self.dist is not None and not self.dist.is_main:
            run = ReplicaRunDir(run.path)
        self.scan, self.run = scan, run
        self.end = RunEnd(self)  # the run's end: calibration, the test pass, the model card
        config = TrainConfig.from_dict(config.to_dict())  # our own copy
        config.validate()
        config, split, state = start_run(scan, run, config, val_scan, resume, self.dist)
        if val_scan is not None and split.protocol != "predefined":
            warn(f"the separate validation data is ignored by the {split.protocol} split "
                 "(use the predefined split to validate on it)")
        run.write_config(config.to_dict())
        self.config, self.split = config, split
        self.device = resolve_device(self.dist.device(config.device) if self.dist else config.device)
        self.device_name = device_name(self.device)
        self._select_cells(scan, split, val_scan)
        self._build(state)
        self._make_loaders()
        self._init_schedule(state)
        log.info("training %s on %s: %d train, %d val, %d test cells", self.spec.backbone, self.device_name,
                 *(len(self.parts[p]) for p in PARTS))

    # ---- setup ---------------------------------------------------------------------------------
    def _select_cells(self, scan, split, val_scan) -> None:
        """Labels of every split, from the scans (val from the separate folder for `predefined`)."""
        cells = {c.path: c for c in trainable(scan.cells)}
        vcells, val_root = cells, scan.root
        if split.protocol == "predefined":
            vs = as_scan(val_scan if val_scan is not None else split.val_root)
            vcells, val_root = {c.path: c for c in trainable(vs.cells)}, vs.root
        tcells, test_root = cells, scan.root
        if self.config.test_dir:
            if split.test:
                raise ValueError("a separate test folder and --test-fraction > 0 were both given: choose one")
            ts = as_scan(self.config.test_dir)
            tcells, test_root = {c.path: c for c in trainable(ts.cells)}, ts.root
        self.cells = {"train": cells, "val": vcells, "test": tcells}
        self.roots = {"train": scan.root, "val": val_root, "test": test_root}
        self.classes = tuple(split.classes) or tuple(sorted({c.label for c in cells.values()}))
        self.parts = {}
        for part in PARTS:
            listed = sorted(tcells) if part == "test" and self.config.test_dir else getattr(split, part)
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
        self.fixed_shapes = fixed_batch_shapes(self.device)
        if cuda:
            torch.backends.cudnn.benchmark = cudnn_benchmark()
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device)
        self.amp = amp_dtype(self.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        # `net` is what trains: the model itself, or its DistributedDataParallel wrapper
        self.net = wrap(self.model, self.dist, self.device, config.sync_bn) if self.dist else self.model
        if self.dist and config.sync_bn:
            self.model = self.net.module  # the converted (SyncBatchNorm) model
        self.optimizer = build_optimizer(self.model, config)
        self.ema = build_ema(self.model, config)
        if self.ema is not None and state is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])

    def _make_loaders(self) -> None:
        from ..data.augment import Augment
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
                             interpolation=spec.interpolation, augment=part == "train", cache=cache,
                             extra=Augment(c.color_jitter, c.blur_p, c.crop_scale))
            sampler, per_rank = self._sampler(part, ds)
            # BatchNorm1d in the head cannot train on a batch of one: drop a lone last sample.
            # Fixed shapes (GPU) drop any short last batch, as timm's train loader does.
            drop = part == "train" and per_rank > 1 and (
                per_rank % c.batch_size == 1 or (self.fixed_shapes and per_rank >= c.batch_size))
            if part == "train":
                self.train_shapes = batch_shapes(per_rank, c.batch_size, drop)
            self.loaders[part] = make_loader(ds, batch_size=c.batch_size, shuffle=part == "train",
                                             device=self.device, workers=c.workers, drop_last=drop,
                                             seed=c.seed, sampler=sampler)
        weight = class_weights(self.targets["train"], len(spec.classes)) if c.class_weights else None
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=None if weight is None else weight.to(self.device),
                                                 label_smoothing=c.label_smoothing)

    def _sampler(self, part: str, ds):
        """(sampler, items per rank): DDP shards training (torch's DistributedSampler, padded so
        every rank steps alike) and validation (rank::world, unpadded, gathered afterwards); the
        test split is rank 0's alone."""
        from ..data.dataset import DistributedDihedralSampler

        d = self.dist
        if d is None or part == "test":
            return None, len(ds)
        if part == "val":
            shard = range(d.rank, len(ds), d.world_size)
            return shard, len(shard)
        sampler = DistributedDihedralSampler(ds, num_replicas=d.world_size, rank=d.rank, seed=self.config.seed,
                                             extra=ds.extra is not None)
        return sampler, sampler.num_samples

    def _init_schedule(self, state) -> None:
        c = self.config
        self.monitor = c.monitor
        if not self.parts["val"] and self.monitor.startswith("val_"):
            self.monitor = "train_loss" if self.monitor == "val_loss" else "train_accuracy"
            warn(f"no validation images: the best epoch is chosen by {self.monitor}")
        self.plateau = Plateau(MONITORS[self.monitor], c.patience, c.lr_factor, c.max_stalls)
        self.start_epoch = self.epoch = 0
        self.best_epoch, self.best_metrics = 0, {}
        self.steps_per_epoch = len(self.loaders["train"])
        if state is None:
            self.scheduler = build_scheduler(self.optimizer, c, self.steps_per_epoch, c.epochs)
            return
        # A state made from model.pt alone (start.best_as_state) has no optimizer, plateau or rng.
        if state.get("optimizer"):
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
        else:
            self.plateau.best = state["best_metrics"].get(self.monitor)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = self.epoch = int(state["epoch"])
        self.best_epoch, self.best_metrics = int(state["best_epoch"]), dict(state["best_metrics"])
        self.elapsed_before = float(state.get("elapsed", 0.0))
        if state.get("rng"):
            set_rng_state(state["rng"])
        self.scheduler = build_scheduler(self.optimizer, c, self.steps_per_epoch, max(c.epochs, self.epoch),
                                         done_updates=self.epoch * self.steps_per_epoch)
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
                what = "learning-rate reductions" if c.lr_factor < 1 else "epochs in a row"  # cosine: no halving
                yield Message(f"stopping: {self.monitor} did not improve through {self.plateau.stalls} "
                              f"{what} (best epoch {self.best_epoch})")
                return "early-stopped"
            if next_ask is not None and self.epoch >= next_ask:
                decision = None
                if self.dist is None or self.dist.is_main:  # asked on rank 0, its answer broadcast
                    decision = yield AskContinue(self.epoch, self.best_epoch, float(self.plateau.best), ask)
                more = decision.epochs if isinstance(decision, Continue) else 0  # None or Halt() halts
                if self.dist is not None:
                    more = self.dist.broadcast(more)
                if more > 0:
                    next_ask = self.epoch + more
                    if next_ask > end and self.scheduler is not None:  # a cosine planned to the new end
                        self.scheduler = build_scheduler(self.optimizer, c, self.steps_per_epoch, next_ask,
                                                         done_updates=self.epoch * self.steps_per_epoch)
                    end = max(end, next_ask)
                    continue
                return "completed" if self.epoch >= end else "halted"
            if self.epoch >= end:
                return "completed"

    @property
    def pad_eval(self) -> int | None:
        """The batch size evaluation pads its short last batch to (fixed shapes), else None."""
        return self.config.batch_size if self.fixed_shapes else None

    def _warm_up(self):
        """Each batch shape once on noise before the first epoch, said so: the kernel choice (and
        an out-of-memory error) comes in seconds, before any batch trains, while the loaders'
        workers already decode the first batches."""
        yield Message("preparing the GPU's kernels for this model and batch size (once per run)")
        seconds = warm_up(self.net, self.spec, self.device, train_batches=self.train_shapes,
                          eval_batches=[self.pad_eval] if self.loaders["val"] is not None else [],
                          autocast_dtype=self.amp, channels_last=self.channels_last)
        self.warmed = True
        yield Message(f"GPU kernels ready in {seconds:.1f} s")

    def _one_epoch(self, cancel: CancelToken):
        c = self.config
        self.epoch += 1
        self.epoch_complete = False
        t = time.perf_counter()
        # Per-epoch seeds: a resumed run sees the same order and augmentation it would have seen.
        # (DDP: each rank its own dropout; the sampler shuffles by seed + epoch.)
        d = self.dist
        torch.manual_seed(c.seed * 100_003 + self.epoch + (1_000_003 * d.rank if d else 0))
        loader = self.loaders["train"]
        if d is not None:
            loader.sampler.set_epoch(self.epoch)
        else:
            loader.generator.manual_seed(c.seed * 100_003 + self.epoch)
        started = {}
        if self.fixed_shapes and not self.warmed:
            # Started first, so the loaders' workers decode while the GPU prepares its kernels.
            started = {part: iter(self.loaders[part]) for part in ("train", "val") if self.loaders[part] is not None}
            yield from self._warm_up()
        train = yield from train_one_epoch(
            self.net, loader, self.loss_fn, self.optimizer, self.device, self.spec,
            epoch=self.epoch, autocast_dtype=self.amp, scaler=self.scaler,
            channels_last=self.channels_last, cancel=cancel, scheduler=self.scheduler,
            first_update=(self.epoch - 1) * self.steps_per_epoch, ema=self.ema, reduce=d.sum if d else None,
            batches=started.get("train"))
        # the LR this epoch ended with (the head's: the last group); the plateau changes it below
        lr = self.optimizer.param_groups[-1]["lr"]
        if d is not None:  # each rank's BatchNorm saw its own batches: average them (timm's --dist-bn reduce)
            from timm.utils import distribute_bn

            distribute_bn(self.model, d.world_size, reduce=True)
        val = {}
        evaluated = self.ema.module if self.ema is not None else self.model  # what model.pt will hold
        if self.loaders["val"] is not None:
            val = yield from validate(evaluated, self.loaders["val"], self.device, self.spec,
                                      epoch=self.epoch, autocast_dtype=self.amp,
                                      channels_last=self.channels_last, cancel=cancel,
                                      gather=d.gather if d else None, pad_to=self.pad_eval,
                                      batches=started.get("val"))
        flat = {f"train_{k}": v for k, v in train.items() if k in ("loss", "accuracy")}
        flat.update({f"val_{k}": v for k, v in val.items() if k != "n"})
        is_best = self.plateau.step(flat[self.monitor], self.optimizer)
        if is_best:
            self.best_epoch, self.best_metrics = self.epoch, flat
            self.run.save_best(evaluated, self.spec, epoch=self.epoch, metrics=flat,
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
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "best_epoch": self.best_epoch, "best_metrics": self.best_metrics, "rng": rng_state(),
                "elapsed": self.elapsed_total(), "weights": self.weights}

    def elapsed_total(self) -> float:
        return self.elapsed_before + time.monotonic() - self.t0

    def release(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        release_memory(self.device)
