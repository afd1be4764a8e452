"""The data set tree (left dock): classes, patients and unreadable files, with live counts.

Counts come from the grid rows' *current* labels, so they move as the reviewer labels. Updates
rewrite the count column in place (no rebuild) so expansion, selection and scroll position stay
put while labeling at keyboard speed. Clicking an item asks for a filter; the window passes it on
to the filter bar, the single owner of the grid's filter.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QHeaderView, QTreeWidget, QTreeWidgetItem, QWidget

from engine.data.cells import UNSURE

from ..cells.rows import CellRow
from ..style import class_key, label_color, label_text

KIND = Qt.ItemDataRole.UserRole  # ("all"|"class"|"patient"|"changed"|"disagree"|"problem", value)
NO_PATIENT = "(no patient id)"


def _swatch(color: QColor) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(color)
    return QIcon(pix)


class DatasetTree(QTreeWidget):
    classRequested = Signal(object)  # class name, UNSURE, or None (= unlabeled)
    patientRequested = Signal(object)  # patient id
    allRequested = Signal()
    changedRequested = Signal()
    disagreeRequested = Signal()
    cellRequested = Signal(str)  # relative path (a problem file)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("datasetTree")
        self.setColumnCount(2)
        self.setHeaderLabels(["Data set", "Cells"])
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.setUniformRowHeights(True)  # thousands of patients stay fast
        self._items: dict[tuple[str, object], QTreeWidgetItem] = {}
        self._classes: list[str] = []
        self.itemClicked.connect(self._on_clicked)
        self.itemActivated.connect(self._on_clicked)
        self.clear_dataset()

    def clear_dataset(self) -> None:
        self.clear()
        self._items.clear()
        placeholder = QTreeWidgetItem(self, ["No folder open (Ctrl+O)", ""])
        placeholder.setFlags(Qt.ItemFlag.NoItemFlags)

    def set_dataset(self, name: str, rows: Sequence[CellRow], classes: list[str], patients: list[str],
                    problems: Sequence[tuple[str, str]], notes: Sequence[str] = ()) -> None:
        self.clear()
        self._items.clear()
        self._classes = classes
        root = self._add(None, ("all", None), name)
        root.setToolTip(0, "\n\n".join(["Show every cell", *notes]))
        classes_node = self._add(None, ("header", "classes"), "Classes")
        for cls in classes:
            key = f"  [{k}]" if (k := class_key(classes, cls)) else ""
            item = self._add(classes_node, ("class", cls), f"{cls}{key}")
            item.setIcon(0, _swatch(label_color(cls, classes)))
        if not classes:  # an unlabeled folder: where classes come from
            hint = self._add(classes_node, ("hint", None), "none yet: Label ▸ Classes… (Ctrl+K)")
            hint.setFlags(Qt.ItemFlag.NoItemFlags)
        for special in (UNSURE, None):
            item = self._add(classes_node, ("class", special), label_text(special))
            item.setIcon(0, _swatch(label_color(special, classes)))
        self._add(None, ("changed", None), "Changed by review")
        disagree = self._add(None, ("disagree", None), "Disagreements with the model")
        disagree.setToolTip(0, "Cells whose predicted class differs from the current label (once a model has "
                               "predicted: Model ▸ Predict)")
        patients_node = self._add(None, ("header", "patients"), "Patients" if patients else "Patients: none found")
        if not patients:
            patients_node.setToolTip(0, "\n\n".join(notes) or "No patient ids in the file names")
        for p in patients:
            self._add(patients_node, ("patient", p), p)
        if problems:
            problems_node = self._add(None, ("header", "problems"), "Unreadable files")
            problems_node.setForeground(0, QColor("#b00020"))
            for path, reason in problems:
                item = self._add(problems_node, ("problem", path), path)
                item.setToolTip(0, reason)
            self._items[("count", "problems")] = problems_node
            problems_node.setText(1, str(len(problems)))
        classes_node.setExpanded(True)
        patients_node.setExpanded(len(patients) <= 50)
        self.update_counts(rows)

    def _add(self, parent: QTreeWidgetItem | None, kind: tuple[str, object], text: str) -> QTreeWidgetItem:
        item = QTreeWidgetItem(parent if parent is not None else self, [text, ""])
        item.setData(0, KIND, kind)
        item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if kind[0] == "header":
            font = item.font(0)
            font.setBold(True)
            item.setFont(0, font)
        self._items[kind] = item
        return item

    def update_counts(self, rows: Sequence[CellRow]) -> None:
        """Recount from the rows' current labels (a few ms for 15,000 rows)."""
        readable = [r for r in rows if not r.problem]
        by_class = Counter(r.current for r in readable)
        by_patient = Counter(r.patient for r in readable)
        changed = sum(1 for r in readable if r.current != r.original)
        disagreements = sum(1 for r in readable if r.disagrees)
        predicted = any(r.pred is not None for r in readable)
        self._set_count(("all", None), len(readable))
        self._set_count(("header", "classes"), sum(by_class[c] for c in self._classes))
        for cls in [*self._classes, UNSURE, None]:
            self._set_count(("class", cls), by_class.get(cls, 0))
        self._set_count(("changed", None), changed)
        item = self._items.get(("disagree", None))
        if item is not None:
            item.setText(1, f"{disagreements:,}" if predicted else "–")
        for (kind, value), item in self._items.items():
            if kind == "patient":
                item.setText(1, str(by_patient.get(value, 0)))
        self._set_count(("header", "patients"), sum(v for k, v in by_patient.items() if k is not None))

    def _set_count(self, kind: tuple[str, object], n: int) -> None:
        item = self._items.get(kind)
        if item is not None:
            item.setText(1, f"{n:,}")

    def count_text(self, kind: str, value: object) -> str:
        """The count column of one item (tests and the status bar read it)."""
        item = self._items.get((kind, value))
        return item.text(1) if item is not None else ""

    def _on_clicked(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        kind = item.data(0, KIND)
        if not kind:
            return
        what, value = kind
        if what == "all":
            self.allRequested.emit()
        elif what == "class":
            self.classRequested.emit(value)
        elif what == "patient":
            self.patientRequested.emit(value)
        elif what == "changed":
            self.changedRequested.emit()
        elif what == "disagree":
            self.disagreeRequested.emit()
        elif what == "problem":
            self.cellRequested.emit(value)
        elif what == "header" and value == "patients":
            self.patientRequested.emit(None)
