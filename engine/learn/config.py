"""`TrainConfig`: every setting of a training run, as saved in the run's config.json."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

# Pixels per side a cell model may take: what training accepts and what a model file may say
# (engine.learn.model.ModelSpec); the Train dialog's range. Below 16 a backbone's strides leave
# nothing of the image; above 2048 one batch would take gigabytes before anything could complain.
MIN_IMG_SIZE, MAX_IMG_SIZE = 16, 2048
# A timm model name, optionally with its pretrained tag ("efficientnet_b3", "resnet50.a1_in1k"):
# no "hf-hub:" / "local-dir:" prefix, no path, which would make timm fetch or read elsewhere.
_TIMM_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+)?")
MONITORS = {"val_loss": "min", "val_accuracy": "max", "val_weighted_f1": "max",
            "train_loss": "min", "train_accuracy": "max"}
SCHEDULES = ("plateau", "cosine")


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
    # The recipe (engine.learn.recipes). Every default below is the paper's, so a config.json
    # written before recipes existed resumes exactly as it was trained.
    recipe: str = "paper"
    schedule: str = "plateau"  # plateau: halve on a stall (paper); cosine: warm-up then cosine per step
    warmup_epochs: float = 0.0
    min_lr: float = 1e-6  # the cosine's floor
    backbone_lr_scale: float = 1.0  # backbone LR = lr * this; the new head learns at lr
    layer_decay: float = 1.0  # < 1: each backbone stage's LR is this times the next one's (1 = off)
    head_epochs: float = 0.0  # the backbone is frozen for this many first epochs: the head learns alone
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0 = no EMA; else timm ModelEmaV3's decay (validated, saved as model.pt)
    ema_warmup_power: float = 2 / 3  # ModelEmaV3's warm-up: decay = 1 - (1 + step) ** -power (higher: longer)
    color_jitter: float = 0.0  # strength of the hue/saturation/brightness jitter (0 = off)
    blur_p: float = 0.0  # chance of a small Gaussian blur
    crop_scale: float = 1.0  # smallest area of a random-resized crop that keeps the cell (1 = no crop)
    tta_eval: bool = False  # the final test pass averages 4 dihedral views
    test_dir: str | None = None  # a separate labelled test folder (its cells are the test split)
    sync_bn: bool = False  # DDP only: BatchNorm statistics over all ranks' batches
    # A round of Keep Learning (engine.workspace.loop.LoopInfo: loop id, round, strategy, expert
    # labels, start); the model card records it. None: a run of its own.
    loop: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # newer keys are ignored

    def validate(self) -> None:
        check_backbone_name(self.backbone)
        if self.img_size is not None:  # None: the backbone's own size
            check_img_size(self.img_size)
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, not {self.monitor!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if not (0 <= self.label_smoothing < 1 and 0 <= self.ema_decay < 1 and 0 < self.crop_scale <= 1
                and 0 <= self.blur_p <= 1 and self.color_jitter >= 0 and self.warmup_epochs >= 0
                and 0 < self.backbone_lr_scale <= 1 and 0 < self.layer_decay <= 1 and self.head_epochs >= 0
                and 0 < self.ema_warmup_power <= 1):
            raise ValueError("label_smoothing and ema_decay in [0, 1), crop_scale in (0, 1], blur_p in [0, 1], "
                             "backbone_lr_scale, layer_decay and ema_warmup_power in (0, 1], color_jitter, "
                             "warmup_epochs and head_epochs >= 0")
        if not (self.lr > 0 and 0 < self.lr_factor <= 1 and self.patience >= 1 and self.max_stalls >= 1):
            raise ValueError("lr must be > 0, lr_factor in (0, 1], patience and max_stalls >= 1")



def check_img_size(size) -> None:
    """Raises ValueError unless `size` is a whole number of pixels in the allowed range."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_IMG_SIZE <= size <= MAX_IMG_SIZE:
        raise ValueError(f"image size {size!r} (allowed {MIN_IMG_SIZE}-{MAX_IMG_SIZE} pixels)")


def check_backbone_name(name) -> None:
    """Raises ValueError unless `name` is a plain timm model name (allblast runs offline)."""
    if not isinstance(name, str) or not _TIMM_NAME.fullmatch(name):
        raise ValueError(f"backbone {name!r} (a timm model name, such as efficientnet_b3; no hub or folder "
                         "prefix: allblast never downloads)")


# Fields a resumed run takes from the caller; every other field comes from the run's config.json,
# because it defines the model, the data or the recipe the saved state belongs to.
RUN_CONTROL = ("epochs", "ask_every", "device", "workers", "amp", "cache", "cache_max_bytes")
