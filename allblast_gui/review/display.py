"""How the cells look, for the tiles and the Cell dock alike: brightness, contrast, gamma and auto
contrast (display only: the files are never changed), the tile size, the patient under each tile.

A folder's auto-contrast levels are remembered per folder (Prefs) and come back when it is opened
again; brightness, contrast and gamma stay as they are from folder to folder.
"""
from __future__ import annotations

from ..cells.thumbnails import auto_levels
from ..settings import MAX_TILE, MIN_TILE, TILE_STEP


class DisplayControls:
    def __init__(self, session, model, grid, inspector, status) -> None:
        self.session, self.model, self.grid, self.inspector, self.status = session, model, grid, inspector, status
        self.patient_action = None  # View ▸ Patient on Tiles, once the window built its actions

    def handlers(self) -> dict:
        step = self.step_display
        return {
            "bigger": lambda: self.change_tile_size(+TILE_STEP), "smaller": lambda: self.change_tile_size(-TILE_STEP),
            "brighter": lambda: step(brightness=+1), "darker": lambda: step(brightness=-1),
            "more_contrast": lambda: step(contrast=+1), "less_contrast": lambda: step(contrast=-1),
            "gamma_up": lambda: step(gamma=+1), "gamma_down": lambda: step(gamma=-1),
            "auto_contrast": self.auto_contrast, "reset_display": self.reset_display,
            "patient_on_tiles": lambda: self.set_patient_on_tiles(self.patient_action.isChecked()),
        }

    def bind(self, actions) -> None:
        self.patient_action = actions["patient_on_tiles"]
        self.patient_action.setCheckable(True)
        self.patient_action.setEnabled(False)  # until a folder with patient ids is open

    def on_dataset(self, ds) -> None:
        """A folder's own auto contrast comes back with it; brightness, contrast and gamma stay."""
        if self.patient_action is not None:
            self.patient_action.setEnabled(bool(ds.patients))
            self.model.set_patient_on_tiles(self.patient_action.isChecked() and bool(ds.patients))
        self.model.set_display(self.model.display().with_levels(self.session.prefs.auto_levels(ds.root)))
        self.inspector.set_display(self.model.display())

    def set_display(self, display) -> None:
        """Brightness, contrast, gamma and auto contrast for the tiles and the inspector."""
        self.model.set_display(display)
        self.inspector.set_display(self.model.display())
        self.status.showMessage("Display: " + ("as in the files" if display.is_identity() else display.describe())
                                + " (files unchanged)", 5000)

    def step_display(self, **steps: int) -> None:
        self.set_display(self.model.display().adjusted(**steps))

    def reset_display(self) -> None:
        """Back to the files' own pixels; the folder's auto contrast is forgotten too."""
        ds = self.session.dataset
        if ds is not None:
            self.session.prefs.set_auto_levels(ds.root, None)
        self.set_display(type(self.model.display())())

    def auto_contrast(self) -> tuple[int, int] | None:
        """Stretch the data set's 1st-99th intensity percentiles, measured on the thumbnails in
        memory (a sample spread over the folder), to the full range; remembered per folder."""
        levels = auto_levels(self.model.sample_images())
        if levels is None:
            self.status.showMessage("Auto contrast: no thumbnails to measure yet (or they are flat)", 5000)
            return None
        ds = self.session.dataset
        if ds is not None:
            self.session.prefs.set_auto_levels(ds.root, levels)
        self.set_display(self.model.display().with_levels(levels))
        return levels

    def set_patient_on_tiles(self, on: bool) -> None:
        self.patient_action.setChecked(on)
        self.model.set_patient_on_tiles(on)

    def change_tile_size(self, delta: int) -> None:
        size = max(MIN_TILE, min(MAX_TILE, self.model.tile_size() + delta))
        self.grid.setTileSize(size)
        self.session.prefs.set_tile_size(size)
