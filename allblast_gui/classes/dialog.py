"""Label ▸ Classes…: the data set's class set (names, number keys, colours, order, positive class).

Every button is one edit, saved at once in the label database (engine.labels.classes) with its
history; rename and delete relabel cells and are undone with Edit ▸ Undo like any label change. A
class still in use is deleted only after the user says what its cells become. The dialog holds no
copy of the set: after each edit it reads the store again, so it shows what is saved. Tests call
the methods with their arguments and skip the questions.
"""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QColorDialog, QDialog, QDialogButtonBox, QHBoxLayout,
                               QHeaderView, QInputDialog, QLabel, QMenu, QMessageBox, QPlainTextEdit, QPushButton,
                               QTableWidget, QTableWidgetItem, QToolButton, QVBoxLayout, QWidget)

from engine.data.cells import UNSURE
from engine.labels import classes as C
from engine.labels.store import StoreError

COLUMNS = ("Key", "Class", "Colour", "Cells", "Positive")
UNLABEL = "unlabeled (no label)"


def _swatch(color: str) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(color))
    return QIcon(pix)


class ClassesDialog(QDialog):
    changed = Signal(str)  # what was done (status bar text); the window refreshes its class set

    def __init__(self, store, *, annotator: Callable[[], str | None], parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("classesDialog")
        self.setWindowTitle(f"Classes — {store.data_root.name}")
        self.store = store
        self._annotator = annotator  # asks for the name once if none was ever given; None: refused
        self.classes = C.ClassSet()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("classesTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._enable)
        self.table.itemDoubleClicked.connect(lambda _item: self.rename())
        intro = QLabel("Number keys label the selected cells. A new class takes the lowest free key; no edit moves "
                       "another class's key. Rename and delete relabel cells and can be undone (Ctrl+Z).")
        intro.setWordWrap(True)
        self.note = QLabel()
        self.note.setObjectName("classesNote")
        self.note.setWordWrap(True)
        self.history = QPlainTextEdit(readOnly=True, objectName="classesHistory")
        self.history.setMaximumHeight(110)
        self.history.setPlaceholderText("No class edits yet")

        buttons = QVBoxLayout()
        self.buttons: dict[str, QPushButton | QToolButton] = {}
        for name, text, slot in (("add", "&Add…", self.add), ("rename", "&Rename…", self.rename),
                                 ("colour", "&Colour…", self.recolor), ("key", "Number &Key…", self.set_key),
                                 ("up", "Move &Up", lambda: self.move(-1)), ("down", "Move &Down", lambda: self.move(+1)),
                                 ("positive", "&Positive Class", self.toggle_positive),
                                 ("delete", "&Delete…", self.delete)):
            button = QPushButton(text, objectName=f"classes_{name}")
            button.clicked.connect(lambda _c=False, f=slot: f())
            buttons.addWidget(button)
            self.buttons[name] = button
        preset = QToolButton(objectName="classes_preset", text="Start from &Preset")
        preset.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(preset)
        for key, p in C.PRESETS.items():
            menu.addAction(p.title, lambda k=key: self.apply_preset(k))
        preset.setMenu(menu)
        self.buttons["preset"] = preset
        buttons.addWidget(preset)
        buttons.addStretch(1)
        self.buttons["positive"].setToolTip("The class reports count as suspicious (blasts); click again to clear")

        body = QHBoxLayout()
        body.addWidget(self.table, 1)
        body.addLayout(buttons)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(body, 1)
        layout.addWidget(self.note)
        layout.addWidget(QLabel("History"))
        layout.addWidget(self.history)
        layout.addWidget(close)
        self.resize(620, 480)
        self.reload()

    # -- showing ---------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the set, the counts and the history from the store (the one source of truth)."""
        keep = self.selected()
        self.classes = C.class_set(self.store)
        counts = C.cells_per_label(self.store)
        self.table.setRowCount(len(self.classes))
        for row, d in enumerate(self.classes.defs):
            cells = [str(d.key) if d.key else "–", d.name, d.color, f"{counts.get(d.name, 0):,}",
                     "positive" if d.positive else ""]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col in (0, 3):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if col == 2:
                    item.setIcon(_swatch(d.color))
                self.table.setItem(row, col, item)
        for col in (0, 2, 3, 4):
            self.table.resizeColumnToContents(col)
        if keep in self.classes:
            self.table.selectRow(self.classes.index(keep))
        elif len(self.classes):
            self.table.selectRow(0)
        read_only = bool(getattr(self.store, "read_only", False))
        self.note.setText("This folder's label database is read-only: classes cannot be edited here." if read_only
                          else "" if len(self.classes) else
                          "No classes yet: add them one by one, or start from a preset.")
        lines = []
        for h in C.class_history(self.store)[-50:]:
            after = h["new"]["name"] if h["new"] and h["new"]["name"] != h["name"] else ""
            lines.append(f"{h['changed_at'][:19].replace('T', ' ')}  {h['annotator']}: {h['kind']} {h['name']}"
                         + (f" → {after}" if after else ""))
        self.history.setPlainText("\n".join(reversed(lines)))
        self._read_only = read_only
        self._enable()

    def selected(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.classes[rows[0].row()] if rows and rows[0].row() < len(self.classes) else None

    def _enable(self) -> None:
        one = self.selected() is not None and not getattr(self, "_read_only", False)
        for name, button in self.buttons.items():
            button.setEnabled(not getattr(self, "_read_only", False) if name in ("add", "preset") else one)

    # -- edits -----------------------------------------------------------------------------------
    def _edit(self, what: str, fn: Callable[[str], object]) -> bool:
        """Run one edit with the annotator's name; errors are shown, never raised."""
        who = self._annotator()
        if not who:
            self.note.setText("Not changed: the annotator's name is needed (Edit ▸ Set Annotator…)")
            return False
        try:
            fn(who)
        except (C.ClassSetError, StoreError) as exc:
            QMessageBox.warning(self, "Classes", str(exc))
            return False
        self.reload()
        self.note.setText(what)
        self.changed.emit(what)
        return True

    def add(self, name: str | None = None) -> bool:
        if name is None:
            name, ok = QInputDialog.getText(self, "Add a class", "Name of the new class:")
            if not ok:
                return False
        return self._edit(f"Added class {name.strip()}", lambda who: C.add_class(self.store, name, annotator=who))

    def rename(self, old: str | None = None, new: str | None = None) -> bool:
        old = old or self.selected()
        if old is None:
            return False
        if new is None:
            new, ok = QInputDialog.getText(self, "Rename a class", f"New name for {old} (its cells are relabelled; "
                                           "Edit ▸ Undo reverts it):", text=old)
            if not ok or new.strip() == old:
                return False
        result = {}
        ok = self._edit(f"Renamed {old} to {new.strip()}",
                        lambda who: result.update(changed=C.rename_class(self.store, old, new, annotator=who)[1]))
        if ok:
            n = len(result["changed"])
            self.note.setText(f"Renamed {old} to {new.strip()}: {n:,} cell{'s' if n != 1 else ''} relabelled (Ctrl+Z undoes it)")
        return ok

    def recolor(self, color: str | None = None, name: str | None = None) -> bool:
        name = name or self.selected()
        if name is None:
            return False
        if color is None:
            chosen = QColorDialog.getColor(QColor(self.classes.color_of(name)), self, f"Colour of {name}")
            if not chosen.isValid():
                return False
            color = chosen.name()
        return self._edit(f"New colour for {name}", lambda who: C.recolor(self.store, name, color, annotator=who))

    def set_key(self, key: int | None | str = "ask", name: str | None = None) -> bool:
        name = name or self.selected()
        if name is None:
            return False
        if key == "ask":
            choices = [str(k) + (f" (now {d.name})" if (d := self.classes.by_key(k)) else "")
                       for k in range(1, C.MAX_KEYS + 1)] + ["none"]
            current = self.classes.key_of(name)
            text, ok = QInputDialog.getItem(self, "Number key", f"Key for {name} (a key in use is swapped):", choices,
                                            (current - 1) if current else len(choices) - 1, False)
            if not ok:
                return False
            key = None if text == "none" else int(text.split()[0])
        return self._edit(f"Key of {name}: {key or 'none'}",
                          lambda who: C.set_key(self.store, name, key, annotator=who))

    def move(self, step: int, name: str | None = None) -> bool:
        name = name or self.selected()
        if name is None:
            return False
        order = list(self.classes)
        i = order.index(name)
        j = i + step
        if not 0 <= j < len(order):
            return False
        order[i], order[j] = order[j], order[i]
        return self._edit(f"Moved {name}", lambda who: C.reorder(self.store, order, annotator=who))

    def toggle_positive(self, name: str | None = None) -> bool:
        name = name or self.selected()
        if name is None:
            return False
        target = None if self.classes.positive == name else name
        return self._edit(f"Positive class: {target or 'none'}",
                          lambda who: C.set_positive(self.store, target, annotator=who))

    def delete(self, name: str | None = None, relabel_to=C.KEEP_LABELS) -> bool:
        """Delete a class; one in use asks what its cells become (`relabel_to`: a class, 'unsure',
        or None for unlabeled; tests pass it)."""
        name = name or self.selected()
        if name is None:
            return False
        used = C.cells_per_label(self.store, present_only=False).get(name, 0)
        if used and relabel_to is C.KEEP_LABELS:
            others = [n for n in self.classes if n != name] + [UNSURE, UNLABEL]
            text, ok = QInputDialog.getItem(
                self, f"Delete {name}", f"{used:,} cell{'s are' if used != 1 else ' is'} labelled {name}. "
                "Relabel them as (one undoable step):", others, len(others) - 1, False)
            if not ok:
                return False
            relabel_to = None if text == UNLABEL else text
        elif not used and relabel_to is C.KEEP_LABELS:
            answer = QMessageBox.question(self, f"Delete {name}", f"Delete the class {name}? No cell carries it.")
            if answer != QMessageBox.StandardButton.Yes:
                return False
        shown = "" if not used else f" ({used:,} cells now {relabel_to or 'unlabeled'})"
        return self._edit(f"Deleted {name}{shown}",
                          lambda who: C.delete_class(self.store, name, relabel_to=relabel_to, annotator=who))

    def apply_preset(self, preset: str) -> bool:
        added: list[str] = []
        ok = self._edit(f"Preset {preset}", lambda who: added.extend(C.apply_preset(self.store, preset, annotator=who)))
        if ok:
            self.note.setText(f"Added {', '.join(added)}" if added else "Every class of that preset is here already")
        return ok
