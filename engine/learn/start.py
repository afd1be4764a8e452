"""What a run starts from: its config, split and (resumed) state, made by rank 0.

A mixin of `session.TrainingSession`. A new run makes its split and writes config.json and
split.json; a resumed one reads them and last.pt. Under torchrun rank 0 does this alone and
broadcasts the result (or its failure) to the other ranks, so every rank trains the same run even
when only rank 0 can read the run folder.
"""
from __future__ import annotations

from dataclasses import asdict

from ..data.splits import make_split
from ..utils.logs import warn
from .config import RUN_CONTROL, TrainConfig
from .runs import RunDir


class RunStart:
    def _setup(self, run: RunDir, config: TrainConfig, val_scan, resume: bool):
        """(config, split, resumed state or None): made on rank 0, the same on every rank."""
        result = error = None
        if self.dist is None or self.dist.is_main:
            try:
                result = self._prepare(run, config, val_scan, resume)
            except Exception as exc:  # the other ranks must hear of it, or they wait forever
                error = exc
        if self.dist is not None:
            payload = None
            if self.dist.is_main:
                payload = ((f"{type(error).__name__}: {error}", None) if error else
                           (None, (result[0].to_dict(), result[1], result[2])))
            sent = self.dist.broadcast(payload)
            if not self.dist.is_main:
                if sent[0]:
                    raise RuntimeError(f"rank 0 could not start the run: {sent[0]}")
                config_dict, split, state = sent[1]
                result = TrainConfig.from_dict(config_dict), split, state
        if error is not None:
            raise error
        return result

    def _prepare(self, run: RunDir, config: TrainConfig, val_scan, resume: bool):
        if resume:
            run.clean_temporaries()  # a killed run's half-written checkpoint; this run is ours now
            return self._restore(run, config)
        if run.has_run():
            raise ValueError(f"{run.path} already holds a training run; choose a new output folder "
                             "or resume it")
        run.create()
        run.clean_temporaries()
        # a separate test folder is the test: every other cell trains, but the validation ones
        test_fraction = 0.0 if config.test_dir and config.test_fraction is None else config.test_fraction
        split = make_split(self.scan, config.split, seed=config.seed, val_scan=val_scan,
                           val_fraction=config.val_fraction, test_fraction=test_fraction)
        for text in split.warnings:
            warn(text)
        run.write_split(split)
        return config, split, None

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
