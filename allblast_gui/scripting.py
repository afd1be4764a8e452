"""Scripting the real window: `allblast FOLDER --script FILE.py` and the console dock.

Both put one object in scope, `app` (a `ScriptApp`), documented in docs/scripting.md. Its
long calls (`open`, `train`) return when the work is done, but run a nested event loop meanwhile,
so the window (curves, dialogs) stays live. A script that raises shows its traceback in the
console and the log; the app stays up (unless --exit-after, which then exits with status 1).

`app` is not a feature: the window builds it over the features it drives (handed in, never
imported here), and it tells them what a script wants through the session: `unattended`
(nobody answers dialogs), a call it waits on (errors come back to the script), quitting.
"""
from __future__ import annotations

import logging
import time
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

    def __init__(self, window, session, *, training, predictions, reports, classes, loop=None, review=None,
                 cases=None) -> None:
        self._window, self._session = window, session
        self._training, self._predictions, self._reports, self._classes = training, predictions, reports, classes
        self._loop = loop
        self._review, self._cases = review, cases  # the confirm key and labels; the Cases dock
        self.failed = False  # a script raised (the exit status of --exit-after / quit())

    @property
    def unattended(self) -> bool:
        """--exit-after: nobody answers dialogs (the annotator question, a large folder's, the
        continue dialog); the session tells every feature."""
        return self._session.unattended

    @unattended.setter
    def unattended(self, value: bool) -> None:
        self._session.unattended = bool(value)

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
        self._session.script_waiting = True  # the window asks nothing and leaves the error to us
        try:
            w.open_folder(folder, labels)
            _run_until(loop, lambda: bool(outcome), timeout)
        finally:
            self._session.script_waiting = False
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

        config = train_config(options)
        ui = self._training
        if ui.controller.running:
            raise ScriptError("a training run is in progress; app.stop_training() first")
        if self.unattended and on_ask is None and config.ask_every > 0:
            # as the CLI off a terminal: nobody would answer the continue dialog, epochs is the end
            log.warning("unattended (--exit-after) and no on_ask: training %d epochs without asking to continue",
                        config.epochs)
            config.ask_every = 0
        # Looked up on a pool thread (the session's cache), the window live meanwhile (issue 28).
        answer = None if (config.weights or not config.pretrained) else self._session.weights.wait(config.backbone)
        found = None if answer is None else answer.found
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
        ui = self._predictions
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
            out = self._session.output_dir() / f"{record.name}-{record.short}.csv"
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
        from engine.workspace.catalog import model_file

        loop = QEventLoop()
        done: list[bool] = []
        try:
            self._predictions.set_active_model(Path(path).expanduser(),
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
        ui = self._reports
        try:
            worker = ui.export_case_report(Path(path).expanduser(), scope, positive=positive, per_class=per_class,
                                           reviewer=reviewer)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ScriptError(str(exc)) from exc
        return self._wait_report(worker, timeout)

    def export_model_report(self, run: str | Path, path: str | Path, *, timeout: float | None = 600) -> Path:
        """Write the model report of a run folder (.pdf or .html); returns the path when written."""
        try:
            worker = self._reports.export_model_report(Path(run).expanduser(), Path(path).expanduser())
        except (OSError, ValueError, RuntimeError) as exc:
            raise ScriptError(str(exc)) from exc
        return self._wait_report(worker, timeout)

    def _wait_report(self, worker, timeout: float | None) -> Path:
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        _run_until(loop, lambda: worker.is_done, timeout)
        ui = self._reports
        if not worker.is_done:
            raise ScriptError(f"the report was not written within {timeout:g} s")
        if ui.last_path is None:
            raise ScriptError(f"report not written: {ui.last_error or 'unknown error (see the log)'}")
        return ui.last_path

    # ---- cases and sign-off ----------------------------------------------------------------------
    def cases(self) -> list[dict]:
        """The Cases panel's rows, counted now: one dict per case (docs/scripting.md)."""
        return [case_dict(s) for s in self._need_cases().refresh()]

    def _need_cases(self):
        if self._cases is None or self._session.dataset is None:
            raise ScriptError("no folder is open: app.open(folder) first")
        return self._cases

    def _case(self, case: str):
        """A case by key ('patient:7'), title ('patient 7'), patient id ('7'), '.' or sub-folder."""
        from engine.cases.cases import CaseError, resolve_case

        ui = self._need_cases()
        rows = ui.refresh()
        found = next((s for s in rows if case in (s.key, s.title)), None)
        if found is not None:
            return found
        cells = [(p, s.case.patient) for s in rows for p in s.case.paths]
        try:
            key = resolve_case(case, cells, self._session.dataset.root).key
        except CaseError as exc:
            raise ScriptError(str(exc)) from None
        found = next((s for s in rows if s.key == key), None)
        if found is None:  # a sub-folder nobody signed yet: count it now
            from engine.cases.review import snapshot
            from engine.cases.summary import summarize_case

            ds = self._session.dataset
            found = summarize_case(snapshot(ds.store, ui.model()), resolve_case(case, cells, ds.root),
                                   list(ds.classes), ds.classes.positive, ds.store)
            ui.summaries.append(found)
        return found

    def show_case(self, case: str) -> dict:
        """Show one case's cells in the grid, as a click in the Cases panel does; returns its row."""
        summary = self._case(case)
        self._cases.show_case(summary)
        QApplication.processEvents()
        return case_dict(summary)

    def confirm(self, paths: list[str] | None = None, *, note: str | None = None, reason: str | None = None) -> int:
        """The confirm key (Y) on `paths` (None: the selection): the label shown is right. An unsure
        cell needs `note`; `reason` keeps the label of a cell the model disagrees with. Returns the
        cells confirmed."""
        if self._review is None or self._session.dataset is None:
            raise ScriptError("no folder is open: app.open(folder) first")
        n = self._review.controller.confirm(list(paths) if paths is not None else None, note=note, reason=reason)
        QApplication.processEvents()
        return n

    def set_label(self, paths: list[str], label: str | None, *, reason: str | None = None) -> bool:
        """Label `paths` as a key press does (one undoable step); a signed case's cell needs
        `reason` (an amendment). True when the store took it."""
        if self._review is None or self._session.dataset is None:
            raise ScriptError("no folder is open: app.open(folder) first")
        ok = self._review.controller.apply_label(label, list(paths), reason=reason)
        QApplication.processEvents()
        return ok

    def sign_off(self, case: str, *, annotator: str | None = None, timeout: float | None = 600) -> Path:
        """Sign a case as `annotator` (default: the window's annotator); returns the signed report
        when it is written. Raises ScriptError with what is missing when it is refused."""
        from engine.cases.signoff import SignOffRefused

        ui = self._need_cases()
        summary = self._case(case)
        signer = annotator or self._session.annotator
        if not signer:
            raise ScriptError("who signs? app.sign_off(case, annotator=NAME)")
        try:
            worker = ui.sign(summary.key, signer)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ScriptError(str(exc)) from exc
        errors: list = []
        worker.error.connect(errors.append)
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        _run_until(loop, lambda: worker.is_done, timeout)
        if not worker.is_done:
            raise ScriptError(f"{summary.title} was not signed within {timeout:g} s")
        if errors:
            exc = errors[0]
            missing = "\n  ".join(getattr(exc, "missing", []) or [])
            raise ScriptError(f"{exc}" + (f":\n  {missing}" if missing else "")) if isinstance(exc, SignOffRefused) \
                else ScriptError(f"not signed: {exc}")
        signature = ui.last_signature
        return Path(self._session.dataset.store.db_path).parent / signature.report

    def verify(self, case: str | None = None) -> dict[str, str]:
        """`allblast-engine cases verify` in the window: {case title: intact | amended | tampered}
        of every signed case (or of `case`)."""
        rows = [self._case(case)] if case else [s for s in self._need_cases().refresh() if s.verdict.signatures]
        return {s.title: s.verdict.state for s in rows}

    def show_classes(self):
        """Label ▸ Classes…: the class editor of the open folder; its methods (`add`, `rename`,
        `recolor`, `set_key`, `move`, `toggle_positive`, `delete`, `apply_preset`) edit as its buttons do."""
        dialog = self._classes.open_dialog()
        if dialog is None:
            raise ScriptError("no folder is open: app.open(folder) first")
        return dialog

    # ---- the expert loop (issue 24) -------------------------------------------------------------------
    def suggest(self, n: int = 24, strategy: str | None = None, *, among: str = "unlabelled",
                timeout: float = 600) -> list[str]:
        """Label ▸ Next Cells to Label: `n` cells chosen from the shown model's stored predictions
        (`strategy`: "diverse" (Keep Learning's, by default), "margin", "entropy" or "random";
        `among`: "unlabelled" (no expert label), "unreviewed" or "all"), shown in the grid as a list
        "Suggested (n)" in the order to label; returns their paths in that order."""
        from engine.learn.suggest import STRATEGIES

        if strategy is not None and strategy not in STRATEGIES:
            raise ScriptError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
        ui = self._require_loop()
        worker = ui.next_cells(n, strategy, among)
        if worker is None:
            raise ScriptError("no suggestions: open a folder and predict it first (app.predict())")
        self._wait_worker(worker, timeout, "suggestions")
        return list(ui.batch)

    def similar(self, path: str | None = None, k: int = 24, *, timeout: float = 600) -> list[tuple[str, float]]:
        """Find Similar Cells: the `k` cells most like `path` (None: the selected cell) by the cosine
        of the shown model's stored embeddings, most similar first, as [(path, cosine)]; the grid
        shows them as a list "Similar to NAME (k)", the cell itself first."""
        ui = self._require_loop()
        found: list = []

        def keep(_path, near) -> None:
            found.extend(near)

        ui.controller.similarFound.connect(keep)
        try:
            worker = ui.find_similar(path, k)
            if worker is None:
                raise ScriptError("no look-alikes: select a cell (or pass path=) of a folder the model predicted")
            self._wait_worker(worker, timeout, "look-alikes")
        finally:
            ui.controller.similarFound.disconnect(keep)
        return found

    def keep_learning(self, on: bool = True, *, every: int = 50, start: str | None = None, strategy: str = "diverse",
                      batch: int = 24, epochs: int = 5) -> dict:
        """Model ▸ Keep Learning: after every `every` new labels a round trains on every current
        label while labelling goes on (`start`: "continue" from the active model, the default, or
        "imagenet", a full run of `epochs`); `on=False` stops after the round in progress. Returns
        the loop's state: {"on", "loop", "rounds" (run folders), "running", "pending" (labels since
        the last round), "start", "every"}."""
        from engine.workspace.loop import DEFAULT_START, LoopSettings

        ui = self._require_loop()
        if not on:
            ui.stop_learning()
            return self.loop_state()
        try:
            settings = LoopSettings(every=every, start=start or DEFAULT_START, strategy=strategy, batch=batch,
                                    epochs=epochs)
            settings.check()
        except ValueError as exc:
            raise ScriptError(str(exc)) from exc
        ui.keep_learning(settings)
        return self.loop_state()

    def learn_now(self, *, wait: bool = True, timeout: float | None = None) -> Path | None:
        """Model ▸ Learn Now: a Keep Learning round now; with `wait`, returns its run folder once
        its model is the active one and the grid shows its predictions (None: it made no model)."""
        ui = self._require_loop()
        before = len(ui.controller.rounds)
        if not ui.learn_now():
            raise ScriptError(ui.controller.last_error or "no round started: open a folder, or wait for the "
                              "round in progress")
        if not wait:
            return None
        self.wait_rounds(before + 1, timeout=timeout)
        return ui.controller.rounds[-1].run_dir if len(ui.controller.rounds) > before else None

    def wait_rounds(self, n: int, *, timeout: float | None = None) -> list[Path]:
        """Wait until this loop has finished `n` rounds and the last one's predictions are shown;
        returns the rounds' run folders. Raises ScriptError on a timeout or a failed round."""
        ui = self._require_loop()
        c = ui.controller
        loop = QEventLoop()
        c.runningChanged.connect(loop.quit)
        self._session.predictionsChanged.connect(loop.quit)
        failures: list[str] = []
        c.roundFailed.connect(failures.append)

        def done() -> bool:
            return bool(failures) or (len(c.rounds) >= n and not ui.round_unshown and not c.running)

        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not done():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                _run_until(loop, done, left)  # back at each signal: check again
        finally:
            c.runningChanged.disconnect(loop.quit)
            self._session.predictionsChanged.disconnect(loop.quit)
            c.roundFailed.disconnect(failures.append)
        if failures:
            raise ScriptError(f"a Keep Learning round failed: {failures[0]}")
        if len(c.rounds) < n:
            raise ScriptError(f"{len(c.rounds)} of {n} Keep Learning rounds within {timeout:g} s")
        return [r.run_dir for r in c.rounds]

    def loop_state(self) -> dict:
        c = self._require_loop().controller
        return {"on": c.on, "loop": c.loop_id, "rounds": [r.run_dir for r in c.rounds], "running": c.running,
                "pending": c.pending, "start": c.settings.start, "every": c.settings.every}

    def _require_loop(self):
        if self._loop is None:
            raise ScriptError("this window has no expert loop")
        if self._session.dataset is None:
            raise ScriptError("no folder is open: app.open(folder) first")
        return self._loop

    def _wait_worker(self, worker, timeout: float | None, what: str) -> None:
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        errors: list = []
        worker.error.connect(errors.append)
        _run_until(loop, lambda: worker.is_done, timeout)
        QApplication.processEvents()  # the result's slots (the grid's list) have run
        if errors:
            raise ScriptError(f"{what} could not be made: {errors[0]}")
        if not worker.is_done:
            raise ScriptError(f"{what} not ready within {timeout:g} s")

    def stop_training(self) -> None:
        """Stop the running training within one batch (checkpoints are kept)."""
        self._training.stop()

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
        self._session.closing = True  # the window closes without asking (a running training stops)
        QTimer.singleShot(0, lambda: (w.close(), QApplication.exit(1 if self.failed else 0 if code is None else code)))


def case_dict(s) -> dict:
    """One row of the Cases panel for a script (engine.cases.summary.CaseSummary)."""
    f = s.fraction
    return {"key": s.key, "title": s.title, "cells": s.cells, "reviewed": s.reviewed,
            "open_disagreements": s.open_disagreements, "differential": dict(s.differential), "unsure": s.unsure,
            "unlabeled": s.unlabeled, "positive": s.positive, "positive_cells": f.k if f else None,
            "counted": f.n if f else None, "fraction": f.value if f else None,
            "ci95": f.interval if f else None, "status": s.status, "missing": s.readiness.missing(),
            "paths": list(s.case.paths)}


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
