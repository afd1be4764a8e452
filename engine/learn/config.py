"""`TrainConfig`: every setting of a training run, as saved in the run's config.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

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


# Fields a resumed run takes from the caller; every other field comes from the run's config.json,
# because it defines the model, the data or the recipe the saved state belongs to.
RUN_CONTROL = ("epochs", "ask_every", "device", "workers", "amp", "cache", "cache_max_bytes")
