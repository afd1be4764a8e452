"""What the window remembers between runs (QSettings): recent folders, annotator, tile size, the
Train dialog's settings, geometry. Tests inject their own QSettings (an ini file under tmp_path)
so they never touch the user's real settings."""
from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from engine.labels.store import default_annotator

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

    def clear_recent(self) -> None:
        self.qs.remove("recent/folders")

    # -- annotator -------------------------------------------------------------------------------
    def annotator(self) -> str:
        return str(self.qs.value("labeling/annotator", "") or default_annotator())

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

    def geometry(self) -> tuple[QByteArray | None, QByteArray | None]:
        return self.qs.value("window/geometry"), self.qs.value("window/state")

    def save_geometry(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qs.setValue("window/geometry", geometry)
        self.qs.setValue("window/state", state)

    def sync(self) -> None:
        self.qs.sync()
