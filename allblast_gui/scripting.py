"""Scripting the real window: `allblast FOLDER --script FILE.py` and the console dock.

Both put one object in scope, `app` (a `ScriptApp`), documented in docs/scripting.md. Its
long calls (`open`, `train`) return when the work is done, but run a nested event loop meanwhile,
so the window (curves, dialogs) stays live. A script that raises shows its traceback in the
console and the log; the app stays up (unless --exit-after, which then exits with status 1).
"""
from __future__ import annotations

import logging
import traceback
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from engine.labels.outputs import OutputRefused, check_output
from engine.learn.config import TrainConfig
from engine.learn.recipes import recipe_config

log = logging.getLogger(__name__)

# app.train() options: the CLI's names (allblast-engine train --help).
TRAIN_OPTIONS = ("recipe", "backbone", "weights", "no_pretrained", "img_size", "epochs", "batch_size", "lr",
                 "split", "ask_every", "device", "seed", "monitor", "val_fraction", "test_fraction", "workers")


class ScriptError(RuntimeError):
    """What a script asked for could not be done; the message says why."""


class ScriptApp:
    """The `app` object of scripts and the console."""

    def __init__(self, window) -> None:
        self._window = window
        self.failed = False  # a script raised (the exit status of --exit-after / quit())
        self._waiting = False
        self.unattended = False  # --exit-after: nobody answers dialogs (e.g. the annotator question)

    @property
    def waiting(self) -> bool:
        """Inside open(), or unattended (--exit-after): the window asks nothing (a large folder is
        opened: the script asked for it) and leaves error boxes to the script: nobody would answer."""
        return self._waiting or self.unattended

    @waiting.setter
    def waiting(self, value: bool) -> None:
        self._waiting = bool(value)

    @property
    def window(self):
        """The main window (allblast_gui.main_window.MainWindow), for anything else."""
        return self._window

    def open(self, folder: str | Path, labels: str | Path | None = None, *, timeout: float = 3600) -> Path:
        """Open a folder of cells; returns its path when the grid shows it (raises if it cannot)."""
        w = self._window
        outcome: list = []
        loop = QEventLoop()

        def opened(ds):
            outcome.append(ds)
            loop.quit()

        def failed(message):
            outcome.append(ScriptError(message))
            loop.quit()

        w.datasetOpened.connect(opened)
        w.datasetFailed.connect(failed)
        self.waiting = True
        try:
            w.open_folder(folder, labels)
            _run_until(loop, lambda: bool(outcome), timeout)
        finally:
            self.waiting = False
            w.datasetOpened.disconnect(opened)
            w.datasetFailed.disconnect(failed)
        if not outcome:
            raise ScriptError(f"{folder} did not open within {timeout:g} s")
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0].root

    def train(self, *, on_ask=None, timeout: float | None = None, **options) -> Path:
        """Train on the open folder's expert labels; returns the run folder when training ends.

        Options are the CLI's (`recipe`, `backbone`, `weights`, `no_pretrained`, `img_size`,
        `epochs`, `batch_size`, `lr`, `split`, `ask_every`, `device`, `seed`, `monitor`, ...); the
        recipe (default `allblast`, as in the Train dialog) sets what is not given.
        `on_ask(summary) -> int | None` answers "continue?": a number of epochs, or None to halt;
        without it the continue dialog waits for the user. Raises ScriptError when the settings
        are refused or training fails (the failure dialog also shows).
        """
        from engine.learn.preflight import check_training
        from engine.learn.weights import find_weights

        config = train_config(options)
        ui = self._window.training
        if ui.controller.running:
            raise ScriptError("a training run is in progress; app.stop_training() first")
        if self.unattended and on_ask is None and config.ask_every > 0:
            # as the CLI off a terminal: nobody would answer the continue dialog, epochs is the end
            log.warning("unattended (--exit-after) and no on_ask: training %d epochs without asking to continue",
                        config.epochs)
            config.ask_every = 0
        found = None if (config.weights or not config.pretrained) else find_weights(config.backbone).found
        report = check_training(ui.expert_scan(), config, ui.catalog.root, weights_found=found)
        if not report.ok:
            raise ScriptError("training cannot start: " + " ".join(report.problems))
        ui.controller.on_ask = on_ask
        loop = QEventLoop()
        ui.controller.runningChanged.connect(loop.quit)
        try:
            run_dir = ui.start(config)
            _run_until(loop, lambda: not ui.controller.running, timeout)
        finally:
            ui.controller.runningChanged.disconnect(loop.quit)
            ui.controller.on_ask = None
        if ui.controller.running:
            ui.stop()
            ui.controller.wait()
            raise ScriptError(f"training did not end within {timeout:g} s; it was stopped (checkpoints kept)")
        outcome = ui.controller.last_outcome
        if outcome is not None and type(outcome).__name__ == "TrainingFailed":
            raise ScriptError(f"training failed ({outcome.kind}): {outcome.message}")
        return run_dir

    def predict(self, model: str | Path | None = None, *, tta: bool = False, out: str | Path | None = None,
                batch_size: int = 32, device: str = "auto", timeout: float | None = None) -> Path:
        """Predict every cell of the open folder with `model` (a model.pt or a run folder; None:
        the active model), show the results on the grid, keep them with the labels, and write a
        predictions CSV with the columns of `allblast-engine predict` (`out`, or beside the runs).
        Returns the CSV's path when every cell is done. The model becomes the active model."""
        ui = self._window.predictions
        path = ui.active_model() if model is None else Path(model).expanduser()
        if path is None:
            raise ScriptError("no active model: pass model=, or set one with app.set_active_model(path)")
        if ui.controller.running:
            raise ScriptError("a prediction is running already")
        loop = QEventLoop()
        ui.controller.runningChanged.connect(loop.quit)
        try:
            try:
                ui.predict(path, tta=tta, batch_size=batch_size, device=device)
            except (OSError, ValueError) as exc:
                raise ScriptError(str(exc)) from exc
            _run_until(loop, lambda: not ui.controller.running, timeout)
        finally:
            ui.controller.runningChanged.disconnect(loop.quit)
        if ui.controller.running:
            ui.controller.cancel()
            ui.controller.wait()
            raise ScriptError(f"prediction did not end within {timeout:g} s; it was stopped")
        result = ui.controller.last_result
        if result is None:
            raise ScriptError(f"prediction failed: {ui.controller.last_error or 'stopped'}")
        record = ui.controller.shown
        if out is None:
            from .reports_ui import output_dir

            out = output_dir(ui.dataset.root) / f"{record.name}-{record.short}.csv"
        try:  # a script may replace its own output, never the label database or an image
            out = check_output(out, force=True, what="predictions CSV")
        except OutputRefused as exc:
            raise ScriptError(str(exc)) from exc
        out.parent.mkdir(parents=True, exist_ok=True)
        # as the CLI: a duplicate file gets its original's row, so no input is missing from the CSV
        result.with_duplicates(ui.dataset.project.scan.duplicates).write_csv(out)
        return out

    def set_active_model(self, path: str | Path, *, timeout: float = 600) -> Path:
        """Make a run folder (its model.pt) or a model file the active model; the grid then shows
        its stored predictions (none until it predicts). Returns the model file."""
        from .models.runs_catalog import model_file

        loop = QEventLoop()
        done: list[bool] = []
        try:
            self._window.predictions.set_active_model(Path(path).expanduser(),
                                                      on_done=lambda: (done.append(True), loop.quit()))
        except (OSError, ValueError, RuntimeError) as exc:
            raise ScriptError(str(exc)) from exc
        _run_until(loop, lambda: bool(done), timeout)
        return model_file(path)

    def export_report(self, path: str | Path, scope: str = "folder", *, positive: str | None = "auto",
                      per_class: int = 8, reviewer: str | None = None, timeout: float | None = 600) -> Path:
        """Write a case report (.pdf or .html) of the open folder (`scope="folder"`), one patient
        (`"patient:<id>"`) or the selected cells (`"selection"`); returns the path when written.
        `positive`: the class whose fraction is stated ("auto": the blasts, `all` for C-NMC, else none)."""
        ui = self._window.reports
        try:
            worker = ui.export_case_report(Path(path).expanduser(), scope, positive=positive, per_class=per_class,
                                           reviewer=reviewer)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ScriptError(str(exc)) from exc
        return self._wait_report(worker, timeout)

    def export_model_report(self, run: str | Path, path: str | Path, *, timeout: float | None = 600) -> Path:
        """Write the model report of a run folder (.pdf or .html); returns the path when written."""
        try:
            worker = self._window.reports.export_model_report(Path(run).expanduser(), Path(path).expanduser())
        except (OSError, ValueError, RuntimeError) as exc:
            raise ScriptError(str(exc)) from exc
        return self._wait_report(worker, timeout)

    def _wait_report(self, worker, timeout: float | None) -> Path:
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        _run_until(loop, lambda: worker.is_done, timeout)
        ui = self._window.reports
        if not worker.is_done:
            raise ScriptError(f"the report was not written within {timeout:g} s")
        if ui.last_path is None:
            raise ScriptError(f"report not written: {ui.last_error or 'unknown error (see the log)'}")
        return ui.last_path

    def show_classes(self):
        """Label ▸ Classes…: the class editor of the open folder; its methods (`add`, `rename`,
        `recolor`, `set_key`, `move`, `toggle_positive`, `delete`, `apply_preset`) edit as its buttons do."""
        dialog = self._window.classes.open_dialog()
        if dialog is None:
            raise ScriptError("no folder is open: app.open(folder) first")
        return dialog

    def stop_training(self) -> None:
        """Stop the running training within one batch (checkpoints are kept)."""
        self._window.training.stop()

    def screenshot(self, path: str | Path) -> Path:
        """Save a PNG of the whole window."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        QApplication.processEvents()
        if not self._window.grab().save(str(path)):
            raise ScriptError(f"could not write {path}")
        return path

    def quit(self, code: int | None = None) -> None:
        """Close the window (a running training is stopped, checkpoints kept) and exit: status 1
        if a script raised, else 0 (or `code`)."""
        w = self._window
        w.quitting_from_script = True
        QTimer.singleShot(0, lambda: (w.close(), QApplication.exit(1 if self.failed else 0 if code is None else code)))


def train_config(options: dict) -> TrainConfig:
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise ScriptError(f"unknown train option(s) {', '.join(unknown)}; use {', '.join(TRAIN_OPTIONS)}")
    values = dict(options)
    if values.pop("no_pretrained", False):
        values["pretrained"] = False
    try:
        config = recipe_config(values.pop("recipe", "allblast"), **values)
        config.validate()
    except (TypeError, ValueError) as exc:
        raise ScriptError(f"train options refused: {exc}") from None
    return config


def _run_until(loop: QEventLoop, done, timeout: float | None) -> None:
    if done():
        return
    timer = None
    if timeout is not None:
        timer = QTimer(singleShot=True, interval=int(timeout * 1000))
        timer.timeout.connect(loop.quit)
        timer.start()
    loop.exec()
    if timer is not None:
        timer.stop()


def run_script(path: str | Path, app: ScriptApp, write=None) -> bool:
    """Run a Python file with `app` in scope on the GUI thread; False (and the traceback written
    to `write` and the log) when it raised."""
    path = Path(path)
    namespace = {"app": app, "__name__": "__allblast_script__", "__file__": str(path)}
    try:
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
        exec(code, namespace)  # noqa: S102 - running the user's own script is the feature
    except SystemExit as exc:
        if exc.code not in (None, 0):
            app.failed = True
        return not app.failed
    except BaseException as exc:  # noqa: BLE001 - the app stays up; the traceback is shown and logged
        app.failed = True
        text = "".join(traceback.format_exception(exc))
        log.error("script %s raised:\n%s", path, text)
        if write is not None:
            write(f"script {path} raised:\n{text}")
        return False
    log.info("script %s finished", path)
    return True
