"""The first window a new lab sees (issue 27): until a folder has a run, the Training dock shows a
short "no training yet" state with a Train button, not three empty plots, "Epoch 0 of 1" and a
learning-rate axis reading 2e+00..6e+00; and a plot without data never shows axis values."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from allblast_gui.training.history import TrainingHistory
from allblast_gui.training.dashboard import TrainingDashboard

from .conftest import open_and_wait


def _demo_like_folder(root: Path) -> Path:
    """A few cells of two classes, as the bundle's demo folder: no runs, no labels database."""
    rng = np.random.default_rng(0)
    for cls in ("all", "hem"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / cls / f"UID_{i + 1}_1_1_{cls}.png"), rng.integers(0, 255, (48, 48, 3), np.uint8))
    return root


def _axes_shown(dashboard) -> dict[str, bool]:
    return {name: all(plot.getAxis(side).style["showValues"] for side in ("left", "bottom"))
            for name, plot in (("loss", dashboard.loss_plot), ("accuracy", dashboard.acc_plot),
                               ("lr", dashboard.lr_plot))}


def test_a_folder_without_runs_shows_the_empty_state_with_a_train_button(qtbot, window, tmp_path):
    dashboard = window.training.dashboard
    window.show_dock("dashboard")
    assert not dashboard.plots.isVisible() and not dashboard.progress.isVisible()  # no folder yet
    assert not dashboard.train_button.isEnabled() and "Open a folder" in dashboard.empty_text.text()

    open_and_wait(qtbot, window, _demo_like_folder(tmp_path / "demo"))
    assert not dashboard.plots.isVisible() and not dashboard.progress.isVisible()  # no "Epoch 0 of 1"
    assert dashboard.is_empty() and dashboard.empty_text.isVisible() and dashboard.train_button.isVisible()
    assert "No training yet in this folder" in dashboard.empty_text.text()
    assert dashboard.train_button.isEnabled()
    dashboard.train_button.click()  # the same Train dialog as Model ▸ Train Model…
    dialog = window.training.train_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.reject()


def test_starting_a_run_leaves_the_empty_state_and_empty_plots_show_no_axis_values(qtbot):
    dashboard = TrainingDashboard()
    qtbot.addWidget(dashboard)
    dashboard.show()
    assert _axes_shown(dashboard) == {"loss": False, "accuracy": False, "lr": False}

    dashboard.show_history(TrainingHistory(), "run-1 · starting…")  # as TrainingUI.start does
    dashboard._redraw_if_dirty()
    assert dashboard.plots.isVisible() and not dashboard.is_empty()
    assert _axes_shown(dashboard) == {"loss": False, "accuracy": False, "lr": False}  # nothing to read yet

    dashboard.history.add_batch(1, 1, 4, 0.9)  # the first batches: the loss plot has something
    dashboard.mark_dirty(batches_only=True)
    dashboard._redraw_if_dirty()
    assert _axes_shown(dashboard) == {"loss": True, "accuracy": False, "lr": False}

    dashboard.history.add_epoch(1, {"loss": 0.8, "accuracy": 0.6}, {"loss": 0.7, "accuracy": 0.65,
                                                                    "weighted_f1": 0.6}, 1e-3, True)
    dashboard.mark_dirty()
    dashboard._redraw_if_dirty()
    assert _axes_shown(dashboard) == {"loss": True, "accuracy": True, "lr": True}
    lr_axis = dashboard.lr_plot.getAxis("left")
    assert lr_axis.tickStrings([-3.0], 1, 1) == ["1e-03"]  # the rate the run has, on its log axis

    dashboard.show_empty("no-run-shown", runs=2)  # another folder, with runs but none selected
    assert dashboard.is_empty() and "2 training runs" in dashboard.empty_text.text()
