"""The expert loop in the window (issue 24): Label ▸ Next Cells to Label (Ctrl+N), Find Similar
Cells (S, and the Cell dock's button), and Model ▸ Keep Learning (a toggle) with Learn Now.

- Next Cells to Label: a batch chosen from the shown model's stored predictions and embeddings
  (engine.workspace.suggestions) among the cells without an expert label, shown in the grid as a
  list, "Suggested (24)", in the order to label; a label key moves on to the next cell, and when
  every cell of the batch is labelled the next batch is offered.
- Find Similar: the cells most like the selected one by the cosine of their embeddings, as a list
  "Similar to NAME (24)", the cell itself first: its look-alikes are fixed in one batch.
- Keep Learning: after every N labels (and on demand), a round (engine.workspace.loop) trains on
  every current label on this feature's own thread, and its model becomes the active one: the
  session announces it, the predictions feature shows its stored predictions, the grid's badges,
  doubt order and a shown suggestion follow. Labelling goes on meanwhile.

It talks to the rest of the window only through the session (its model, its rows, its lists).
"""
from __future__ import annotations

import logging

from PySide6.QtWidgets import QMessageBox

from engine.learn.events import EpochEnd, Message, PredictProgress, TrainingFinished, TrainingStarted
from engine.learn.suggest import DEFAULT_BATCH
from engine.workspace.loop import START_CONTINUE, START_IMAGENET, LoopSettings

from ..actions import ActionSpec
from ..feature import Feature
from .controller import LoopController

log = logging.getLogger(__name__)

SIMILAR_K = 24


class LoopFeature(Feature):
    name = "loop"
    own_actions = (
        ("&Label", ActionSpec("next_cells", "&Next Cells to Label", ("Ctrl+N",), "Labeling",
                              "The cells the model needs most, as a list in the grid in the order to label them "
                              "(among cells without an expert label; Keep Learning's strategy, default diverse)")),
        ("&Label", ActionSpec("find_similar", "Find &Similar Cells", ("S",), "Labeling",
                              "The cells that look most like the selected one (the active model's embeddings), "
                              "as a list in the grid: fix a mislabelled cell's look-alikes in one batch")),
        ("&Model", ActionSpec("keep_learning", "&Keep Learning…", (), "Model",
                              "Train a round after every N new labels, on every current label, while you go on "
                              "labelling; predictions, doubt order and suggestions follow each round")),
        ("&Model", ActionSpec("learn_now", "&Learn Now", (), "Model",
                              "A Keep Learning round now, on every current label")),
    )

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.controller = LoopController(self)
        self.actions: dict = {}
        self.dialog = None  # the open KeepLearningDialog
        self.batch: list[str] = []  # the suggested batch shown, in the order to label
        self.batch_done: set[str] = set()
        self.batch_strategy = ""
        self.offer_box = None  # "the batch is done: the next one?"
        self._round_sha: str | None = None  # the finished round's model, until its predictions are shown
        self._suggest_after_round = False
        c, s = self.controller, session
        c.roundStarted.connect(self._on_round_started)
        c.roundEvent.connect(self._on_round_event)
        c.roundFinished.connect(self._on_round_finished)
        c.roundFailed.connect(self._on_round_failed)
        c.runningChanged.connect(lambda _r: self._update_actions())
        c.suggested.connect(self._on_suggested)
        c.similarFound.connect(self._on_similar)
        c.failed.connect(self.message)
        s.datasetChanged.connect(self._on_dataset)
        s.labelsChanged.connect(self._on_labels)
        s.predictionsChanged.connect(self._on_predictions_shown)
        s.similarRequested.connect(self.find_similar)

    def handlers(self) -> dict:
        return {"next_cells": self.next_cells, "find_similar": lambda: self.find_similar(None),
                "keep_learning": self._on_keep_learning_action, "learn_now": self.learn_now}

    def bind(self, actions, menus) -> None:
        self.actions = actions
        actions["keep_learning"].setCheckable(True)
        self._update_actions()

    # ---- the open folder ----------------------------------------------------------------------------
    def _on_dataset(self, dataset) -> None:
        self.controller.set_dataset(dataset)
        self.batch, self.batch_done = [], set()
        self._update_actions()

    def _shown_sha(self) -> str | None:
        record = self.session.predictions
        return record.sha256 if record is not None else None

    # ---- next cells to label ------------------------------------------------------------------------
    def next_cells(self, n: int | None = None, strategy: str | None = None, among: str = "unlabelled"):
        """Suggest a batch from the shown model's predictions; it appears as a list in the grid."""
        if self.session.dataset is None:
            self.message.emit("Open a folder of cells first")
            return None
        sha = self._shown_sha()
        if sha is None:
            self.message.emit("No predictions to choose from: Model ▸ Predict… first (or Keep Learning)")
            return None
        settings = self.controller.settings
        return self.controller.suggest(sha, n=n or settings.batch or DEFAULT_BATCH,
                                       strategy=strategy or settings.strategy, among=among)

    def _on_suggested(self, batch) -> None:
        self.batch, self.batch_done, self.batch_strategy = list(batch.paths), set(), batch.strategy
        if not batch.paths:
            self.message.emit(f"No cells left to suggest ({batch.among}): every one has an expert label")
            return
        self.session.list_cells(f"Suggested ({len(batch.paths)})", batch.paths)
        self.message.emit(f"Suggested {len(batch.paths)} of {batch.candidates:,} {batch.among} cells by "
                          f"{batch.strategy} ({batch.model.name}): label them in this order; each key moves on")

    def _on_labels(self, changes: dict) -> None:
        self.controller.note_labels(len(changes))
        if not self.batch:
            return
        self.batch_done |= set(changes) & set(self.batch)
        if len(self.batch_done) == len(self.batch):
            done = len(self.batch)
            self.batch = []
            self._offer_next(done)

    def _offer_next(self, done: int) -> None:
        text = f"All {done} suggested cells are labelled."
        if self.session.quiet:  # nobody to ask (a script asks for the next batch itself)
            self.message.emit(text + " Label ▸ Next Cells to Label (Ctrl+N) suggests the next ones")
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Batch done", text + " Suggest the next ones?",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self.window)
        box.setObjectName("loopNextBatchBox")
        box.button(QMessageBox.StandardButton.Yes).setText("Next Cells")
        box.buttonClicked.connect(lambda b: b is box.button(QMessageBox.StandardButton.Yes) and self.next_cells())
        self.offer_box = box
        box.open()

    # ---- look-alikes --------------------------------------------------------------------------------
    def find_similar(self, path: str | None = None, k: int = SIMILAR_K):
        if path is None:
            selected = self.session.selected_paths()
            path = selected[0] if selected else None
        if path is None:
            self.message.emit("Select a cell first")
            return None
        sha = self._shown_sha()
        if sha is None:
            self.message.emit("Find Similar uses the model's stored embeddings: Model ▸ Predict… first")
            return None
        return self.controller.similar(sha, path, k)

    def _on_similar(self, path: str, found: list) -> None:
        name = path.rpartition("/")[2]
        self.session.list_cells(f"Similar to {name} ({len(found)})", [path] + [p for p, _ in found])
        if found:
            self.message.emit(f"{len(found)} cells most like {name} (cosine {found[0][1]:.2f} to {found[-1][1]:.2f}); "
                              "select several and press a class key to relabel them in one step")

    # ---- Keep Learning ------------------------------------------------------------------------------
    def _on_keep_learning_action(self) -> None:
        action = self.actions.get("keep_learning")
        if action is not None and not action.isChecked():
            self.stop_learning()
            return
        self.open_dialog()

    def open_dialog(self):
        from .dialog import KeepLearningDialog

        if self.session.dataset is None:
            self.message.emit("Open a folder of cells first")
            self._update_actions()
            return None
        dialog = KeepLearningDialog(self.controller.settings, self.session.active_model is not None, self.window)
        dialog.accepted.connect(lambda: self.keep_learning(dialog.settings()))
        dialog.rejected.connect(self._update_actions)
        dialog.finished.connect(lambda _r: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()
        return dialog

    def keep_learning(self, settings: LoopSettings) -> None:
        if settings.start == START_CONTINUE and self.session.active_model is None:
            settings.start = START_IMAGENET  # nothing to continue from: the first round trains one
        self.controller.start(settings)
        self._update_actions()
        self.message.emit(f"Keep Learning: a round ({settings.start}) after every {settings.every} new labels; "
                          "Model ▸ Learn Now for one now")

    def stop_learning(self) -> None:
        self.controller.stop()
        self._update_actions()
        self.message.emit("Keep Learning is off" + (" (the round in progress finishes)" if self.controller.running
                                                    else ""))

    def learn_now(self) -> bool:
        if self.session.dataset is None:
            self.message.emit("Open a folder of cells first")
            return False
        if self.controller.running:
            self.message.emit("A Keep Learning round is running; labels made now go into the next one")
            return False
        s = self.controller.settings
        if s.start == START_CONTINUE and self.session.active_model is None:
            s.start = START_IMAGENET
        return self.controller.learn_now()

    def _on_round_started(self, info) -> None:
        self.message.emit(f"Keep Learning: round {info.round} ({info.start}) is training on every current label; "
                          "go on labelling")

    def _on_round_event(self, event) -> None:
        if isinstance(event, TrainingStarted):
            self.message.emit(f"Keep Learning: round {self.controller.round} training on {event.n_train} cells "
                              f"({event.n_val} validate)")
        elif isinstance(event, EpochEnd) and event.val:
            self.status.showMessage(f"Keep Learning: round {self.controller.round}, epoch {event.epoch}: validation "
                                    f"accuracy {event.val.get('accuracy', float('nan')):.3f}", 3000)
        elif isinstance(event, PredictProgress) and event.total:
            self.status.showMessage(f"Keep Learning: predicting {event.done:,} / {event.total:,} cells", 2000)
        elif isinstance(event, Message):
            log.info("Keep Learning: %s", event.text)
        elif isinstance(event, TrainingFinished):
            log.info("Keep Learning round finished: %s", event.run_dir)

    def _on_round_finished(self, result) -> None:
        if result is None:
            self.message.emit("Keep Learning: the round ended without a model (stopped, or its training failed)")
            return
        self._round_sha = result.record.sha256 if result.record is not None else None
        self._suggest_after_round = bool(self.batch)  # a shown suggestion follows the new model
        try:
            self.session.set_active_model(result.run_dir)  # the predictions feature shows its predictions
        except (OSError, ValueError, RuntimeError) as exc:
            self.message.emit(f"Keep Learning: the round's model cannot be used: {exc}")
            return
        acc = result.val.get("accuracy")
        self.message.emit(f"Keep Learning: round {result.info.round} done in {result.seconds:.1f} s on "
                          f"{result.info.labels} labels" + (f", validation accuracy {acc:.3f}" if acc is not None
                                                            else "") + "; predictions refreshed")

    @property
    def round_unshown(self) -> bool:
        """A finished round's model is not yet the one whose predictions the grid shows."""
        return self._round_sha is not None

    def _on_predictions_shown(self, record) -> None:
        if record is None or self._round_sha is None or record.sha256 != self._round_sha:
            return
        self._round_sha = None
        self.session.predictionsFinished.emit()  # counts, Patients and the doubt order follow the new model
        if self._suggest_after_round:
            self._suggest_after_round = False
            self.next_cells()

    def _on_round_failed(self, message: str) -> None:
        self.message.emit(f"Keep Learning: the round failed: {message}")

    def _update_actions(self) -> None:
        if not self.actions:
            return
        action = self.actions["keep_learning"]
        action.blockSignals(True)
        action.setChecked(self.controller.on)
        action.blockSignals(False)
        action.setText("&Keep Learning (on)" if self.controller.on else "&Keep Learning…")
        self.actions["learn_now"].setEnabled(not self.controller.running)

    def shutdown(self) -> bool:
        return self.controller.shutdown()


__all__ = ["LoopFeature"]
