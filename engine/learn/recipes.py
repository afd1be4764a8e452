"""Training recipes: named sets of `TrainConfig` hyper-parameters.

`paper` is the reference notebook exactly (Adamax 1e-3, batch 32, flips and 90-degree rotations,
halve the LR on a plateau): `TrainConfig`'s own defaults, so a run trained before recipes existed
resumes unchanged. `allblast` (the CLI's, the app's and scripts' default) is the place for measured
improvements; what was measured, kept and dropped is in the README (`benchmarks/bench_recipe.py`).
"""
from __future__ import annotations

from dataclasses import fields

from .config import TrainConfig

# The fields a recipe sets; every other field (data, model, epochs, device...) is the caller's.
RECIPE_FIELDS = ("lr", "batch_size", "schedule", "warmup_epochs", "min_lr", "backbone_lr_scale", "label_smoothing",
                 "ema_decay", "color_jitter", "blur_p", "crop_scale", "tta_eval", "patience", "lr_factor",
                 "max_stalls")

_PAPER = {f.name: f.default for f in fields(TrainConfig) if f.name in RECIPE_FIELDS}

RECIPES: dict[str, dict] = {
    "paper": _PAPER,
    "allblast": {
        **_PAPER,
        # Measured on 3 CPU epochs (README, "Recipes"): half the batch, so twice the updates in the
        # same epochs, and validating / saving an EMA of the weights learn the most. Warm-up +
        # cosine with a half-LR backbone lost about 20 points in 3 epochs, label smoothing with
        # stain / blur / crop augmentation about 7: they stay settings, off here.
        "batch_size": 16,
        # timm's ModelEmaV3 with its warm-up: the decay grows with the updates (0.98 after 300,
        # 0.998 from about 11,000), so a short run averages over its recent steps.
        "ema_decay": 0.998,
        "tta_eval": True,  # the final test averages 4 dihedral views, as `predict --tta` does
    },
}


def recipe_config(name: str, **overrides) -> TrainConfig:
    """A TrainConfig with recipe `name`'s hyper-parameters, then `overrides` (explicit settings win)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[name], "recipe": name, **overrides})


def recipe_of(config: TrainConfig) -> dict:
    """Every hyper-parameter of the run's recipe, as the model card records it."""
    d = config.to_dict()
    return {"name": config.recipe, **{k: d[k] for k in RECIPE_FIELDS},
            "optimizer": "adamax", "class_weights": config.class_weights, "epochs": config.epochs}


# ---- the recipe's training objects (timm's and torch's own, configured) -----------------------
def build_optimizer(model, config: TrainConfig):
    """Adamax. With backbone_lr_scale < 1 two groups: the pretrained backbone at lr * scale,
    everything else (the new head) at lr. The paper recipe is one group, as it always was."""
    import torch

    if config.backbone_lr_scale == 1:
        return torch.optim.Adamax(model.parameters(), lr=config.lr)
    backbone = list(model.backbone.parameters())
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.Adamax([{"params": backbone, "lr": config.lr * config.backbone_lr_scale},
                               {"params": head, "lr": config.lr}], lr=config.lr)


def build_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int, epochs: int, done_updates: int = 0):
    """timm's CosineLRScheduler stepped per update (None for the paper's plateau halving): a
    linear warm-up over `warmup_epochs`, then a cosine down to `min_lr` at the end of `epochs`.
    `done_updates` > 0 (a resumed or extended run) sets the LR where that plan has it now."""
    if config.schedule != "cosine":
        return None
    from timm.scheduler import CosineLRScheduler

    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    sched = CosineLRScheduler(optimizer, t_initial=total - warmup, lr_min=config.min_lr, warmup_t=warmup,
                              warmup_lr_init=config.lr * 0.01, warmup_prefix=True, t_in_epochs=False)
    sched.step_update(num_updates=done_updates)
    return sched


def build_ema(model, config: TrainConfig):
    """timm's ModelEmaV3 with its warm-up (the decay grows with the step count, so a run of a few
    hundred steps still averages over recent weights rather than the ImageNet start); None if off."""
    if not config.ema_decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=config.ema_decay, use_warmup=True)
