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
RECIPE_FIELDS = ("lr", "batch_size", "schedule", "warmup_epochs", "min_lr", "backbone_lr_scale", "layer_decay",
                 "head_epochs", "label_smoothing", "ema_decay", "ema_warmup_power", "color_jitter", "blur_p",
                 "crop_scale", "tta_eval", "patience", "lr_factor", "max_stalls")

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
    """Adamax. With backbone_lr_scale < 1, layer_decay < 1 or head_epochs, the pretrained backbone
    gets groups of its own (marked "backbone", with their "lr_scale" of lr): one at lr *
    backbone_lr_scale, or one per stage, each layer_decay times the next one's (timm's stage
    grouping; the last stage at lr * scale * layer_decay); everything else (the new head) is the
    last group, at lr. The paper recipe is one group, as it always was."""
    import torch

    if config.backbone_lr_scale == 1 and config.layer_decay == 1 and not config.head_epochs:
        return torch.optim.Adamax(model.parameters(), lr=config.lr)
    backbone = dict(model.backbone.named_parameters())
    ids = {id(p) for p in backbone.values()}
    head = [p for p in model.parameters() if id(p) not in ids]
    stages: dict[int, list] = {0: list(backbone.values())}
    if config.layer_decay != 1:
        from timm.models import group_parameters

        layer_of = group_parameters(model.backbone, model.backbone.group_matcher(coarse=True), reverse=True)
        top = max(layer_of.values(), default=0) + 1
        stages = {}
        for name, p in backbone.items():
            stages.setdefault(top - layer_of.get(name, top - 1), []).append(p)  # depth below the head: 1, 2 ...
    groups = []
    for depth, params in sorted(stages.items(), reverse=True):  # the stem first, as timm lists them
        scale = config.backbone_lr_scale * config.layer_decay ** depth
        groups.append({"params": params, "lr": config.lr * scale, "lr_scale": scale, "backbone": True})
    groups.append({"params": head, "lr": config.lr, "lr_scale": 1.0, "backbone": False})
    return torch.optim.Adamax(groups, lr=config.lr)


class HeadFirst:
    """The head learns alone for the first `updates` updates: the backbone's parameters take no
    gradient (`requires_grad` off: its backward pass is skipped, so those updates cost about a
    third as much) and LR 0; then every backbone group learns again, at the head's LR times its
    `lr_scale` (the plateau halves all groups alike), or at what `inner` (a cosine) sets. Stepped
    per update like timm's schedulers; under DDP only the LR is held at 0 (DDP expects every
    parameter's gradient)."""

    def __init__(self, optimizer, updates: int, inner=None):
        self.optimizer, self.updates, self.inner = optimizer, updates, inner

    def step_update(self, num_updates: int, metric=None) -> None:
        import torch.distributed as dist

        if self.inner is not None:
            self.inner.step_update(num_updates=num_updates)
        frozen = num_updates < self.updates
        groups = self.optimizer.param_groups
        head_lr = next((g["lr"] for g in groups if not g.get("backbone")), groups[-1]["lr"])
        toggle = not (dist.is_available() and dist.is_initialized())
        for g in groups:
            if not g.get("backbone"):
                continue
            if frozen:
                g["lr"] = 0.0
            elif self.inner is None:
                g["lr"] = head_lr * g.get("lr_scale", 1.0)
            if toggle:
                for p in g["params"]:
                    p.requires_grad_(not frozen)


def build_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int, epochs: int, done_updates: int = 0):
    """timm's CosineLRScheduler stepped per update (None for the paper's plateau halving): a
    linear warm-up over `warmup_epochs`, then a cosine down to `min_lr` at the end of `epochs`;
    wrapped in `HeadFirst` when the recipe trains the head alone for `head_epochs` first.
    `done_updates` > 0 (a resumed or extended run) sets the LR where that plan has it now."""
    sched = None
    if config.schedule == "cosine":
        from timm.scheduler import CosineLRScheduler

        total = max(1, steps_per_epoch * epochs)
        warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
        sched = CosineLRScheduler(optimizer, t_initial=total - warmup, lr_min=config.min_lr, warmup_t=warmup,
                                  warmup_lr_init=config.lr * 0.01, warmup_prefix=True, t_in_epochs=False)
    if config.head_epochs:
        sched = HeadFirst(optimizer, int(round(config.head_epochs * steps_per_epoch)), sched)
    if sched is not None:
        sched.step_update(num_updates=done_updates)
    return sched


def build_ema(model, config: TrainConfig):
    """timm's ModelEmaV3 with its warm-up (the decay grows with the step count, so a run of a few
    hundred steps still averages over recent weights rather than the ImageNet start); None if off."""
    if not config.ema_decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=config.ema_decay, use_warmup=True, warmup_power=config.ema_warmup_power)
