"""What the window remembers between runs (QSettings): recent folders, annotator, tile size, the
Train dialog's settings, the inference backend and precision, geometry. Tests inject their own QSettings (an ini file under tmp_path)
so they never touch the user's real settings."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

MAX_RECENT = 10
DEFAULT_TILE = 112
MIN_TILE, MAX_TILE, TILE_STEP = 48, 320, 16


class Prefs:
    def __init__(self, settings: QSettings | None = None) -> None:
        self.qs = settings if settings is not None else QSettings()

    # -- recent folders --------------------------------------------------------------------------
    def recent_folders(self) -> list[str]:
        value = self.qs.value("recent/folders", [])
        if isinstance(value, str):  # QSettings returns a bare string for a one-item list
            value = [value]
        return [str(v) for v in (value or []) if v]

    def add_recent(self, folder: str | os.PathLike) -> None:
        folder = str(Path(folder))
        items = [f for f in self.recent_folders() if f != folder]
        self.qs.setValue("recent/folders", [folder, *items][:MAX_RECENT])

    def remove_recent(self, folder: str | os.PathLike) -> None:
        """Forget a folder that could not be opened (Open Recent lists only folders that opened)."""
        folder = str(Path(folder))
        items = self.recent_folders()
        if folder in items:
            self.qs.setValue("recent/folders", [f for f in items if f != folder])

    def clear_recent(self) -> None:
        self.qs.remove("recent/folders")

    # -- annotator -------------------------------------------------------------------------------
    def annotator(self) -> str:
        """The name recorded with label changes; "" until one was given (the window then asks on
        the first label: the OS user, often "root" on a lab PC, is never recorded silently)."""
        return str(self.qs.value("labeling/annotator", "") or "").strip()

    def set_annotator(self, name: str) -> None:
        self.qs.setValue("labeling/annotator", name.strip())

    # -- view ------------------------------------------------------------------------------------
    def tile_size(self) -> int:
        try:
            size = int(self.qs.value("view/tile_size", DEFAULT_TILE))
        except (TypeError, ValueError):
            size = DEFAULT_TILE
        return max(MIN_TILE, min(MAX_TILE, size))

    def set_tile_size(self, px: int) -> None:
        self.qs.setValue("view/tile_size", int(px))

    def auto_levels(self, folder: str | os.PathLike) -> tuple[int, int] | None:
        """The folder's auto-contrast levels (low, high), or None when it has none."""
        value = str(self.qs.value(f"display/auto_levels/{_folder_key(folder)}", "") or "")
        try:
            lo, hi = (int(v) for v in value.split(","))
        except ValueError:
            return None
        return (lo, hi) if 0 <= lo < hi <= 255 else None

    def set_auto_levels(self, folder: str | os.PathLike, levels: tuple[int, int] | None) -> None:
        key = f"display/auto_levels/{_folder_key(folder)}"
        if levels is None:
            self.qs.remove(key)
        else:
            self.qs.setValue(key, f"{int(levels[0])},{int(levels[1])}")

    # -- training ------------------------------------------------------------------------------
    def train_settings(self) -> dict:
        """The Train dialog's last settings (TrainConfig field names)."""
        try:
            value = json.loads(str(self.qs.value("train/settings", "{}") or "{}"))
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def set_train_settings(self, values: dict) -> None:
        self.qs.setValue("train/settings", json.dumps(values))

    # -- prediction ----------------------------------------------------------------------------
    def inference(self) -> tuple[str, str]:
        """(backend, precision) the Predict dialog last used: `allblast-engine predict --backend
        --precision` values; ("auto", "f32") until one was chosen, or for a value no longer known."""
        from engine.learn.backends.base import BACKENDS, PRECISIONS  # names only: loads no torch

        backend = str(self.qs.value("predict/backend", "auto") or "auto")
        precision = str(self.qs.value("predict/precision", "f32") or "f32")
        return (backend if backend in BACKENDS else "auto", precision if precision in PRECISIONS else "f32")

    def set_inference(self, backend: str, precision: str) -> None:
        self.qs.setValue("predict/backend", backend)
        self.qs.setValue("predict/precision", precision)

    def geometry(self) -> tuple[QByteArray | None, QByteArray | None]:
        return self.qs.value("window/geometry"), self.qs.value("window/state")

    def save_geometry(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qs.setValue("window/geometry", geometry)
        self.qs.setValue("window/state", state)

    def sync(self) -> None:
        self.qs.sync()


def _folder_key(folder: str | os.PathLike) -> str:
    """A QSettings key for a folder (a path's slashes would make groups): the resolved path, so a
    folder reached through a symlink or `..` keeps its settings."""
    return hashlib.blake2b(str(Path(folder).resolve()).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
