"""The bar above the grid: which cells to show and in which order, as one `CellFilter`.

Typing in the search box is debounced (a single-shot QTimer) so filtering 15,000 rows happens once
the reviewer pauses, not on every keystroke. The data set tree drives the same controls
(`show_class`, `show_patient`), so there is exactly one source of the grid's filter.
"""
from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QLineEdit, QWidget

from engine.data.cells import UNSURE

from ..models.cell_rows import CellFilter

SEARCH_DEBOUNCE_MS = 250
ALL = "__all__"
UNLABELED = "__unlabeled__"
SORTS = (("name", "File name"), ("patient", "Patient"), ("label", "Label"))


class FilterBar(QWidget):
    filterChanged = Signal(object)  # CellFilter

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.class_combo = QComboBox(objectName="filterClass")
        self.class_combo.setMinimumContentsLength(12)
        self.changed_check = QCheckBox("Changed only", objectName="filterChanged")
        self.patient_combo = QComboBox(objectName="filterPatient")
        self.patient_combo.setMinimumContentsLength(10)
        self.search = QLineEdit(objectName="filterSearch")
        self.search.setPlaceholderText("Search file name…")
        self.search.setClearButtonEnabled(True)
        self.sort_combo = QComboBox(objectName="filterSort")
        for key, text in SORTS:
            self.sort_combo.addItem(text, key)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        for label, widget in (("Class", self.class_combo), (None, self.changed_check),
                              ("Patient", self.patient_combo), (None, self.search),
                              ("Sort", self.sort_combo)):
            if label:
                caption = QLabel(label)
                caption.setBuddy(widget)
                layout.addWidget(caption)
            layout.addWidget(widget, 1 if widget is self.search else 0)

        self._debounce = QTimer(self, singleShot=True, interval=SEARCH_DEBOUNCE_MS)
        self._debounce.timeout.connect(self._emit)
        self.search.textChanged.connect(self._debounce.start)
        self.search.returnPressed.connect(self._emit)  # Enter: filter now
        for combo in (self.class_combo, self.patient_combo, self.sort_combo):
            combo.currentIndexChanged.connect(self._emit)
        self.changed_check.toggled.connect(self._emit)
        self._quiet = False
        self.set_choices([], [])

    # -- choices of the open data set ------------------------------------------------------------
    def set_choices(self, classes: list[str], patients: list[str]) -> None:
        """Fill the combos for a newly opened data set and reset every criterion."""
        self._quiet = True
        try:
            self.class_combo.clear()
            self.class_combo.addItem("All classes", ALL)
            for name in classes:
                self.class_combo.addItem(name, name)
            self.class_combo.addItem("Unsure", UNSURE)
            self.class_combo.addItem("Unlabeled", UNLABELED)
            self.patient_combo.clear()
            self.patient_combo.addItem("All patients" if patients else "No patient ids", ALL)
            for p in patients:
                self.patient_combo.addItem(p, p)
            self.patient_combo.setEnabled(bool(patients))
        finally:
            self._quiet = False
        self.show_all()

    # -- driven by the data set tree -------------------------------------------------------------
    def show_class(self, label: str | None) -> None:
        """Show one class (`UNSURE`, None = unlabeled); keeps the other criteria."""
        self._select(self.class_combo, UNLABELED if label is None else label)

    def show_patient(self, patient: str | None) -> None:
        self._select(self.patient_combo, ALL if patient is None else patient)

    def show_all(self) -> None:
        self._quiet = True
        try:
            self.class_combo.setCurrentIndex(0)
            self.patient_combo.setCurrentIndex(0)
            self.changed_check.setChecked(False)
            self.search.clear()
            self._debounce.stop()
        finally:
            self._quiet = False
        self._emit()

    def set_changed_only(self, on: bool) -> None:
        self.changed_check.setChecked(on)

    def focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def _select(self, combo: QComboBox, data: str) -> None:
        index = combo.findData(data)
        if index >= 0:
            combo.setCurrentIndex(index)

    # -- the filter ------------------------------------------------------------------------------
    def current_filter(self) -> CellFilter:
        cls = self.class_combo.currentData()
        patient = self.patient_combo.currentData()
        return CellFilter(
            classes=frozenset([cls]) if cls not in (None, ALL, UNLABELED, UNSURE) else None,
            changed_only=self.changed_check.isChecked(),
            unlabeled_only=cls == UNLABELED,
            unsure_only=cls == UNSURE,
            patients=frozenset([patient]) if patient not in (None, ALL) else None,
            text=self.search.text(),
            sort=self.sort_combo.currentData() or "name",
        )

    def _emit(self) -> None:
        if not self._quiet:
            self._debounce.stop()
            self.filterChanged.emit(self.current_filter())
