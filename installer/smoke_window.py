"""The smoke test's window step, run by the installed window itself:
`allblast --script smoke_window.py --exit-after` with no folder and a new HOME, so a first run:
the window opens its demo folder, then this script runs (docs/scripting.md).

Writes SMOKE_OUT/window.json (cells shown, seconds from SMOKE_T0, the launch time, to the grid
painted and to every thumbnail decoded, the Training dock's state) and SMOKE_OUT/window.png;
raises (exit status 1) when the demo did not open, shows no cells, or the Training dock shows
empty plots instead of its "no training yet" state (issue 27)."""
import json
import os
import time
from pathlib import Path

from PySide6.QtWidgets import QApplication

THUMBNAIL_WAIT_S = 30
t0 = float(os.environ["SMOKE_T0"])
out = Path(os.environ["SMOKE_OUT"])
w = app.window  # noqa: F821 (the script's `app`)

w.grid.viewport().repaint()  # paint now: the grid with the demo's tiles is on screen from here
grid_s = time.time() - t0
cells = w.model.visible_count()
root = w.datasets.current.root if getattr(w.datasets, "current", None) else None
# Thumbnails decode on their own pool once the painted tiles ask for them: wait until some were
# asked for and none is left (or, all from the disk cache, none was seen pending for 3 s).
start = time.time()
seen = False
while time.time() < start + THUMBNAIL_WAIT_S:
    QApplication.processEvents()
    pending = w.thumbnails.pending_count()
    seen = seen or pending > 0
    if (seen and pending == 0) or (not seen and time.time() > start + 3):
        break
    time.sleep(0.01)
thumbs_s = time.time() - t0
QApplication.processEvents()
app.screenshot(out / "window.png")  # noqa: F821
dashboard = w.training.dashboard
result = {"cells": cells, "title": w.windowTitle(), "first_painted_grid_s": round(grid_s, 2),
          "thumbnails_decoded_s": round(thumbs_s, 2), "thumbnails_pending": w.thumbnails.pending_count(),
          "root": str(root) if root else None,
          "training_dock": {"empty_state": dashboard.is_empty(), "text": dashboard.empty_text.text(),
                            "train_button": dashboard.train_button.isVisible() and dashboard.train_button.isEnabled()}}
result["quit_at_s"] = round(time.time() - t0, 2)  # the rest of the step is the window closing
(out / "window.json").write_text(json.dumps(result, indent=1))
print(json.dumps(result))
if cells == 0 or not w.windowTitle().startswith("demo"):
    raise SystemExit(f"the first run did not show the demo folder: {result}")
if not (result["training_dock"]["empty_state"] and result["training_dock"]["train_button"]):
    raise SystemExit(f"the Training dock does not show its 'no training yet' state: {result}")
app.quit()  # noqa: F821
