"""The review loop: label keys -> label store -> grid model, with undo/redo. It builds no widget
but drives the grid's selection (it reads it, and moves it on to the next cell after a label).

Writes go to the store first and only then to the model, so what the grid shows is what is on
disk: when the store refuses (locked, read-only) nothing changes on screen and `failed` says why.
Several selected cells are relabelled as one batch, which the store keeps as one undo step; a
single cell is labelled and the selection moves on to the next one, so a reviewer can press one
key per cell.

A label of a signed case changes only with a reason (an amendment): the store refuses it
(ReasonRequired), the controller asks for one (`ask_text`, set by the review feature) and tries
again. The confirm key records that the label shown is right (engine.labels.reviews): it counts as
reviewed for sign-off; an unsure cell is confirmed with a note, and a cell the model disagrees with
keeps its label against the model with a reason.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from PySide6.QtCore import QObject, Signal

from engine.data.cells import UNSURE
from engine.labels import reviews as marks
from engine.labels.signed import ReasonRequired
from engine.labels.store import ACCEPTED_PREDICTION, StoreError

from ..style import class_key

# Above this many paths, reading all states at once is cheaper than one query per path.
_BULK_STATES = 200


class NoReason(Exception):
    """A signed case's label was not changed: no reason was given for the amendment."""


class ReviewController(QObject):
    labelsChanged = Signal(object)  # dict path -> label, after the model has been updated
    undoStateChanged = Signal(bool, bool)  # can undo, can redo
    message = Signal(str)  # short status-bar text
    failed = Signal(str, str)  # title, message: the review feature shows it in a message box
    classesChanged = Signal(str)  # an undo / redo renamed or deleted a class: the session rereads the set
    reviewsChanged = Signal(object)  # paths whose review marks (confirmations, kept disagreements) were written

    def __init__(self, model, grid, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._model = model  # CellListModel
        self._grid = grid  # CellGridView: only its selection API is used
        self._store = None
        self._classes: list[str] = []
        self.annotator = ""
        self.ask_annotator: Callable[[], str | None] | None = None  # the review feature's name question
        self.model_short: str | None = None  # short sha256 of the model whose predictions are shown
        self.model_sha: str | None = None  # its full sha256 (a disagreement is kept against it)
        # The review feature's question for a line of text (title, prompt) -> answer, or None.
        self.ask_text: Callable[[str, str], str | None] | None = None

    # -- context ---------------------------------------------------------------------------------
    def set_store(self, store, classes) -> None:
        self._store = store
        self._classes = classes  # the class set (engine.labels.classes.ClassSet) or a list of names
        self._emit_undo_state()

    def set_annotator(self, name: str) -> None:
        self.annotator = name

    @property
    def classes(self):
        return self._classes

    # -- key handlers (connected to the window's actions) ----------------------------------------
    def label_class(self, number: int) -> None:
        """Number key `number`: the class with that key in the class set (keys are stable)."""
        name = next((c for c in self._classes if class_key(self._classes, c) == number), None)
        if name is not None:
            self.apply_label(name)
        elif self._store is not None and not len(self._classes):
            self.message.emit("No classes yet: Label ▸ Classes… (Ctrl+K) adds them or starts from a preset")
        elif self._store is not None:
            self.message.emit(f"No class has key {number}: Label ▸ Classes… (Ctrl+K) gives classes their keys")

    def label_unsure(self) -> None:
        self.apply_label(UNSURE)

    def label_clear(self) -> None:
        self.apply_label(None)

    def apply_label(self, label: str | None, paths: list[str] | None = None, *, reason: str | None = None) -> bool:
        """Label the selection (or the current cell; or `paths`); True when the store accepted it.

        Unreadable files are skipped (a lone one is refused in the status bar, no box); the
        message counts the cells that changed, so it agrees with what Undo later reverts. A signed
        case's cell needs `reason` (asked for when not given)."""
        if self._store is None:
            return False
        paths = list(paths) if paths is not None else self._grid.selected_paths()
        current = self._grid.current_path()
        if not paths and current is not None:
            paths = [current]
        if not paths:
            self.message.emit("Select a cell first")
            return False
        batch = len(paths) > 1
        readable = [p for p in paths if not self._unreadable(p)]
        unreadable = len(paths) - len(readable)
        if not readable:
            what = paths[0].rpartition("/")[2] + " is" if not batch else f"all {len(paths)} selected files are"
            self.message.emit(f"Not labelled: {what} unreadable")
            return False
        if not self.ensure_annotator():
            self.message.emit("Not labelled: the annotator's name is needed (Edit ▸ Set Annotator…)")
            return False
        next_path = None if batch else self._path_after(readable[0])
        # The rows mirror the store (written first, shown after), so they say which cells the
        # store will change: the message then counts exactly what Undo will revert.
        changed = [p for p in readable if (r := self._model.row_for_path(p)) is None or r.current != label]
        try:
            if batch:
                self._with_reason(lambda why: self._store.set_labels(readable, label, annotator=self.annotator,
                                                                     source="batch", reason=why), reason)
            else:
                self._with_reason(lambda why: self._store.set_label(readable[0], label, annotator=self.annotator,
                                                                    source="keyboard", reason=why), reason)
        except NoReason:
            self.message.emit("Not changed: a signed case's label changes only with a reason (an amendment)")
            return False
        except (StoreError, KeyError) as exc:
            self.failed.emit("The label was not saved", str(exc).strip("'\""))
            return False
        if changed:
            self._push({p: label for p in changed})
        if next_path is not None:
            self._grid.select_path(next_path)
        shown = "unlabeled" if label is None else label
        same = len(readable) - len(changed)
        if batch:
            notes = [f"{same} already {shown}"] if same else []
            notes += [f"{unreadable} unreadable skipped"] if unreadable else []
            self.message.emit(f"{len(changed)} cell{'s' if len(changed) != 1 else ''} labelled {shown}"
                              + (f" ({', '.join(notes)})" if notes else ""))
        else:
            self.message.emit(f"{readable[0]} → {shown}" if changed else f"{readable[0]} is already {shown}")
        return True

    def _with_reason(self, write, reason: str | None = None):
        """`write(reason)`; when a signed case's cell refuses it without one, ask for the
        amendment's reason and write again (NoReason: none given)."""
        try:
            return write(reason)
        except ReasonRequired as exc:
            if reason:
                raise
            why = self._ask("Amend a signed case", f"{exc}.\n\nWhy is it changed? (kept with the amendment; the "
                            "case then needs a new signature)")
            if not why:
                raise NoReason() from exc
            return write(why)

    def _ask(self, title: str, prompt: str) -> str | None:
        answer = self.ask_text(title, prompt) if self.ask_text is not None else None
        return answer.strip() if answer and answer.strip() else None

    def confirm(self, paths: list[str] | None = None, *, note: str | None = None, reason: str | None = None) -> int:
        """The confirm key: the label shown is right, for the selection (or the current cell, or
        `paths`). An unsure cell needs a `note` (asked), a cell the model disagrees with a `reason`
        to keep its label (asked; without one it is confirmed and the disagreement stays open).
        Returns the number of cells confirmed."""
        if self._store is None:
            return 0
        if paths is None:
            paths = self._grid.selected_paths() or ([p] if (p := self._grid.current_path()) else [])
        rows = [r for p in paths if (r := self._model.row_for_path(p)) is not None and not r.problem]
        if not rows:
            self.message.emit("Select a cell first")
            return 0
        blank = [r for r in rows if r.current is None]
        rows = [r for r in rows if r.current is not None]
        if not rows:
            self.message.emit(f"Not confirmed: {blank[0].name} has no label (give it a class)")
            return 0
        if not self.ensure_annotator():
            self.message.emit("Not confirmed: the annotator's name is needed (Edit ▸ Set Annotator…)")
            return 0
        unsure = [r for r in rows if r.current == UNSURE]
        if unsure and not note:
            note = self._ask("Unsure: a note", f"{len(unsure)} cell(s) marked unsure count as reviewed with a note.\n"
                             "What did you see?")
        if unsure and not note:
            rows = [r for r in rows if r.current != UNSURE]
        disagreeing = [r for r in rows if r.disagrees and self.model_sha]
        if disagreeing and not reason:
            first = disagreeing[0]
            reason = self._ask("Keep the label against the model",
                               f"The model says {first.pred} for {first.name}"
                               + (f" (and disagrees on {len(disagreeing) - 1} more)" if len(disagreeing) > 1 else "")
                               + f"; the label is {first.current}.\nWhy is the label right? (Cancel: confirm only, "
                               "the disagreement stays open)")
        source = "batch" if len(rows) > 1 else "keyboard"
        try:
            plain = [r.path for r in rows if r.current != UNSURE]
            if plain:
                marks.confirm(self._store, plain, annotator=self.annotator, source=source)
            if unsure and note:
                marks.confirm(self._store, [r.path for r in unsure], annotator=self.annotator, note=note, source=source)
            if reason:
                for r in disagreeing:
                    marks.keep(self._store, r.path, model=self.model_sha, predicted=r.pred, reason=reason,
                               annotator=self.annotator)
        except (StoreError, KeyError, ValueError) as exc:
            self.failed.emit("Not confirmed", str(exc).strip("'\""))
            return 0
        done = [r.path for r in rows]
        self.reviewsChanged.emit(done)
        if len(paths) == 1 and (after := self._path_after(paths[0])) is not None:
            self._grid.select_path(after)
        notes = []
        if blank:
            notes.append(f"{len(blank)} unlabeled skipped")
        if unsure and not note:
            notes.append(f"{len(unsure)} unsure without a note skipped")
        if disagreeing:
            notes.append("kept against the model" if reason else f"{len(disagreeing)} disagreement(s) still open")
        self.message.emit(f"Confirmed {len(done)} cell{'s' if len(done) != 1 else ''}"
                          + (f" ({', '.join(notes)})" if notes else ""))
        return len(done)

    def ensure_annotator(self) -> bool:
        """A name to record with the change: asked once (through `ask_annotator`, set by the
        review feature) when none was ever given; the OS user is never recorded silently."""
        if self.annotator or getattr(self._store, "read_only", False):
            return True  # a read-only folder refuses the label itself, with its own message
        name = (self.ask_annotator() if self.ask_annotator is not None else "") or ""
        if name.strip():
            self.set_annotator(name.strip())
        return bool(self.annotator)

    def _unreadable(self, path: str) -> bool:
        row = self._model.row_for_path(path)
        return row is not None and bool(row.problem)

    def accept_prediction(self) -> bool:
        """Key A: the model's class becomes the expert label of the selection (or the current
        cell), as one undoable step recorded as "accepted prediction (model <short sha>)"."""
        if self._store is None:
            return False
        paths = self._grid.selected_paths() or ([p] if (p := self._grid.current_path()) else [])
        rows = [self._model.row_for_path(p) for p in paths]
        updates = {r.path: r.pred for r in rows if r is not None and r.pred is not None and not r.problem}
        if updates and not self.ensure_annotator():
            self.message.emit("Not labelled: the annotator's name is needed (Edit ▸ Set Annotator…)")
            return False
        if not updates:
            self.message.emit("No prediction to accept here: Model ▸ Predict first" if self.model_short is None
                              else "The selected cells have no prediction")
            return False
        single = len(paths) == 1
        next_path = self._path_after(paths[0]) if single else None
        source = f"{ACCEPTED_PREDICTION} (model {self.model_short or 'unknown'})"
        try:
            _, changed = self._with_reason(lambda why: self._store.set_many(updates, annotator=self.annotator,
                                                                            source=source, reason=why))
            already = [p for p in updates if p not in set(changed)]
            if already:  # accepting the class a cell has already: the expert agreed with it (reviewed)
                marks.confirm(self._store, already, annotator=self.annotator, source=source)
        except NoReason:
            self.message.emit("Not changed: a signed case's label changes only with a reason (an amendment)")
            return False
        except (StoreError, KeyError, ValueError) as exc:
            self.failed.emit("The label was not saved", str(exc).strip("'\""))
            return False
        if already:
            self.reviewsChanged.emit(already)
        if changed:
            self._push({p: updates[p] for p in changed})
        if next_path is not None:
            self._grid.select_path(next_path)
        same = len(updates) - len(changed)
        self.message.emit(f"Accepted the model's class for {len(changed)} cell{'s' if len(changed) != 1 else ''}"
                          + (f" ({same} already had it)" if same else ""))
        return True

    def undo(self, *, reason: str | None = None) -> None:
        self._step("undo", reason)

    def redo(self, *, reason: str | None = None) -> None:
        self._step("redo", reason)

    # -- internals -------------------------------------------------------------------------------
    def _step(self, kind: str, reason: str | None = None) -> None:
        if self._store is None:
            return
        try:
            paths = self._with_reason(lambda why: getattr(self._store, kind)(annotator=self.annotator, reason=why),
                                      reason)
            edit = getattr(self._store, "last_class_edit", None)
            if edit:  # a class rename / delete (with its cells, maybe none): the set changed too
                self.classesChanged.emit("")
                n = len(paths)
                self.message.emit(f"{kind.capitalize()}: {edit}" + (f" ({n} cell{'s' if n != 1 else ''})" if n else ""))
                if paths:
                    self._push(self._current_labels(paths))
                self._emit_undo_state()
                return
            if not paths:
                self.message.emit(f"Nothing to {kind}")
                self._emit_undo_state()
                return
            changes = self._current_labels(paths)
        except NoReason:
            self.message.emit(f"Not {kind}ne: it changes a signed case, which needs a reason (an amendment)")
            return
        except StoreError as exc:
            self.failed.emit(f"Could not {kind}", str(exc))
            return
        self._push(changes)
        if len(paths) == 1:
            self._grid.select_path(paths[0])  # show the reviewer which cell went back
        self.message.emit(f"{kind.capitalize()}: {len(paths)} cell{'s' if len(paths) != 1 else ''}")

    def _current_labels(self, paths: list[str]) -> dict[str, str | None]:
        if len(paths) > _BULK_STATES:
            states = self._store.states()
            return {p: states[p].current for p in paths if p in states}
        return {p: self._store.state(p).current for p in paths}

    def _push(self, changes: Mapping[str, str | None]) -> None:
        self._model.update_labels(changes)
        self.labelsChanged.emit(dict(changes))
        self._emit_undo_state()

    def reload_from_store(self) -> dict[str, str | None]:
        """After an import (or another window's edits): bring every row in line with the store."""
        if self._store is None:
            return {}
        states = self._store.states()
        changes = {r.path: states[r.path].current for r in self._model.all_rows()
                   if r.path in states and states[r.path].current != r.current}
        if changes:
            self._push(changes)
        return changes

    def _path_after(self, path: str) -> str | None:
        """The next shown cell that can be labelled (unreadable tiles are passed over)."""
        row = self._model.row_of(path)
        if row is None or row < 0:
            return None
        for i in range(row + 1, self._model.visible_count()):
            cell = self._model.cell_at(i)
            if not cell.problem:
                return cell.path
        return None

    def _emit_undo_state(self) -> None:
        if self._store is None:
            self.undoStateChanged.emit(False, False)
            return
        try:
            self.undoStateChanged.emit(self._store.can_undo(), self._store.can_redo())
        except StoreError:
            self.undoStateChanged.emit(False, False)
