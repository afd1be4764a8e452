"""The bar above the grid: which cells to show and in which order, as one `CellFilter`.

Typing in the search box is debounced (a single-shot QTimer) so filtering 15,000 rows happens once
the reviewer pauses, not on every keystroke. The data set tree drives the same controls
(`show_class`, `show_patient`), so there is exactly one source of the grid's filter.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit, QToolButton, QVBoxLayout, QWidget,
)

from engine.data.cells import UNSURE

from ..cells.rows import CellFilter

SEARCH_DEBOUNCE_MS = 250
ALL = "__all__"
UNLABELED = "__unlabeled__"
SORTS = (("name", "File name"), ("patient", "Patient"), ("label", "Label"),
         ("margin", "Doubt (margin)"), ("entropy", "Doubt (entropy)"))
LISTED = ("listed", "Listed order")  # offered while a list of cells is shown (Suggested, Similar)
ANY = "__any__"


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
        self.sort_combo.setItemData(3, "Most doubtful first: the smallest gap between the model's two best classes",
                                    Qt.ItemDataRole.ToolTipRole)
        self.sort_combo.setItemData(4, "Most doubtful first: the highest entropy of the model's probabilities",
                                    Qt.ItemDataRole.ToolTipRole)

        # A list of cells asked for by name (Label ▸ Next Cells to Label, Find Similar): a chip
        # with its name and count, and a button that goes back to every cell.
        self._listed: tuple[str, ...] | None = None
        self._list_name = ""
        self.list_chip = QLabel(objectName="filterList")
        self.list_chip.setStyleSheet("QLabel { background: #fff3c4; border: 1px solid #d9b300; border-radius: 3px;"
                                     " padding: 1px 6px; }")
        self.list_clear = QToolButton(objectName="filterListClear", text="✕")
        self.list_clear.setToolTip("Show every cell again")
        self.list_clear.clicked.connect(self.clear_list)
        self.list_chip.hide()
        self.list_clear.hide()

        # The model's row: shown once a model's predictions are on the grid.
        self.disagree_check = QCheckBox("Disagrees with label", objectName="filterDisagree")
        self.predicted_combo = QComboBox(objectName="filterPredicted")
        self.prob_min = QDoubleSpinBox(objectName="filterProbMin", minimum=0.0, maximum=1.0, singleStep=0.05,
                                       decimals=2)
        self.prob_max = QDoubleSpinBox(objectName="filterProbMax", minimum=0.0, maximum=1.0, singleStep=0.05,
                                       decimals=2, value=1.0)
        self.prob_min.setToolTip("Show cells whose predicted class has at least this probability")
        self.prob_max.setToolTip("...and at most this one (e.g. 0.5-0.7: the doubtful middle)")

        rows = QVBoxLayout(self)
        rows.setContentsMargins(4, 2, 4, 2)
        rows.setSpacing(2)
        first = QHBoxLayout()
        first.addWidget(self.list_chip)
        first.addWidget(self.list_clear)
        for label, widget in (("Class", self.class_combo), (None, self.changed_check),
                              ("Patient", self.patient_combo), (None, self.search),
                              ("Sort", self.sort_combo)):
            self._add(first, label, widget, 1 if widget is self.search else 0)
        self.model_row = QWidget(objectName="filterModelRow")
        second = QHBoxLayout(self.model_row)
        second.setContentsMargins(0, 0, 0, 0)
        self.model_caption = QLabel("Model:")
        second.addWidget(self.model_caption)
        for label, widget in ((None, self.disagree_check), ("Predicted", self.predicted_combo),
                              ("Probability from", self.prob_min), ("to", self.prob_max)):
            self._add(second, label, widget)
        second.addStretch(1)
        rows.addLayout(first)
        rows.addWidget(self.model_row)  # always there: a first prediction must not move the grid
        self._set_model_enabled(False)

        self._debounce = QTimer(self, singleShot=True, interval=SEARCH_DEBOUNCE_MS)
        self._debounce.timeout.connect(self._emit)
        self.search.textChanged.connect(self._debounce.start)
        self.search.returnPressed.connect(self._emit)  # Enter: filter now
        for combo in (self.class_combo, self.patient_combo, self.sort_combo, self.predicted_combo):
            combo.currentIndexChanged.connect(self._emit)
        self.changed_check.toggled.connect(self._emit)
        self.disagree_check.toggled.connect(self._emit)
        for spin in (self.prob_min, self.prob_max):
            spin.valueChanged.connect(self._debounce.start)
        self._quiet = False
        self.set_choices([], [])

    @staticmethod
    def _add(layout, label, widget, stretch=0) -> None:
        if label:
            caption = QLabel(label)
            caption.setBuddy(widget)
            layout.addWidget(caption)
        layout.addWidget(widget, stretch)

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

    def set_model(self, name: str | None, classes: list[str] | None) -> None:
        """The model whose predictions are shown (None: none): its row of filters, and the doubt
        sorts, are offered only then. Keeps the current choices when the classes stay the same;
        emits the filter only if that changed it."""
        before = self.current_filter()
        self._quiet = True
        try:
            keep = self.predicted_combo.currentData()
            self.predicted_combo.clear()
            self.predicted_combo.addItem("any class", ANY)
            for c in classes or []:
                self.predicted_combo.addItem(c, c)
            index = self.predicted_combo.findData(keep)
            self.predicted_combo.setCurrentIndex(max(0, index))
            self.model_caption.setToolTip(name or "")
            self._set_model_enabled(bool(classes))
            if not classes:
                self.disagree_check.setChecked(False)
                self.prob_min.setValue(0.0)
                self.prob_max.setValue(1.0)
                if self.sort_combo.currentData() in ("margin", "entropy"):
                    self.sort_combo.setCurrentIndex(0)
        finally:
            self._quiet = False
        if self.current_filter() != before:
            self._emit()

    def _set_model_enabled(self, on: bool) -> None:
        self.model_caption.setText("Model:" if on else "Model: none yet (Model ▸ Predict)")
        for w in (self.disagree_check, self.predicted_combo, self.prob_min, self.prob_max):
            w.setEnabled(on)

    # -- driven by the data set tree -------------------------------------------------------------
    def show_class(self, label: str | None) -> None:
        """Show one class (`UNSURE`, None = unlabeled); keeps the other criteria."""
        self._select(self.class_combo, UNLABELED if label is None else label)

    def show_patient(self, patient: str | None) -> None:
        self._select(self.patient_combo, ALL if patient is None else patient)

    def show_all(self) -> None:
        self._quiet = True
        try:
            self._set_list(None, "")
            self._reset_criteria()
        finally:
            self._quiet = False
        self._emit()

    def _reset_criteria(self) -> None:
        """Every criterion back to "all" (signals quiet: the caller emits once)."""
        self.class_combo.setCurrentIndex(0)
        self.patient_combo.setCurrentIndex(0)
        self.changed_check.setChecked(False)
        self.disagree_check.setChecked(False)
        self.predicted_combo.setCurrentIndex(0)
        self.prob_min.setValue(0.0)
        self.prob_max.setValue(1.0)
        self.search.clear()
        self._debounce.stop()

    # -- a list of cells by name ---------------------------------------------------------------
    def show_list(self, name: str, paths) -> None:
        """Only these cells, in this order ("Suggested (24)", "Similar to X (12)"): the other
        criteria are reset, the sort becomes the list's order."""
        self._quiet = True
        try:
            self._reset_criteria()
            self._set_list(tuple(paths), name)
        finally:
            self._quiet = False
        self._emit()

    def clear_list(self) -> None:
        """Back to every cell (the list's chip closed)."""
        if self._listed is None:
            return
        self._quiet = True
        try:
            self._set_list(None, "")
        finally:
            self._quiet = False
        self._emit()

    def listed(self) -> tuple[str, ...] | None:
        return self._listed

    def _set_list(self, paths, name: str) -> None:
        self._listed, self._list_name = paths, name
        index = self.sort_combo.findData(LISTED[0])
        if paths is None:
            if index >= 0:
                if self.sort_combo.currentIndex() == index:
                    self.sort_combo.setCurrentIndex(0)
                self.sort_combo.removeItem(index)
            self.list_chip.hide()
            self.list_clear.hide()
            return
        if index < 0:
            self.sort_combo.addItem(LISTED[1], LISTED[0])
            index = self.sort_combo.count() - 1
        self.sort_combo.setCurrentIndex(index)
        self.list_chip.setText(name)
        self.list_chip.setToolTip(f"{name}: only these cells, in this order; ✕ shows every cell again")
        self.list_chip.show()
        self.list_clear.show()

    def show_case(self, patient: str | None, text: str = "") -> None:
        """Show one case's cells: its patient (None: any) and a path prefix to search for (a
        sub-folder); every other criterion is reset, and one filter is emitted."""
        self._quiet = True
        try:
            self.class_combo.setCurrentIndex(0)
            self.patient_combo.setCurrentIndex(max(0, self.patient_combo.findData(ALL if patient is None else patient)))
            self.changed_check.setChecked(False)
            self.disagree_check.setChecked(False)
            self.predicted_combo.setCurrentIndex(0)
            self.prob_min.setValue(0.0)
            self.prob_max.setValue(1.0)
            self.search.setText(text)
            self._debounce.stop()
        finally:
            self._quiet = False
        self._emit()

    def set_changed_only(self, on: bool) -> None:
        self.changed_check.setChecked(on)

    def set_disagree_only(self, on: bool) -> None:
        self.disagree_check.setChecked(on)

    def set_sort(self, key: str) -> None:
        self._select(self.sort_combo, key)

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
        predicted = self.predicted_combo.currentData()
        lo, hi = self.prob_min.value(), self.prob_max.value()
        return CellFilter(
            classes=frozenset([cls]) if cls not in (None, ALL, UNLABELED, UNSURE) else None,
            changed_only=self.changed_check.isChecked(),
            unlabeled_only=cls == UNLABELED,
            unsure_only=cls == UNSURE,
            patients=frozenset([patient]) if patient not in (None, ALL) else None,
            text=self.search.text(),
            disagree_only=self.disagree_check.isChecked(),
            predicted=frozenset([predicted]) if predicted not in (None, ANY) else None,
            prob_range=(lo, hi) if (lo > 0.0 or hi < 1.0) else None,
            listed=self._listed,
            list_name=self._list_name,
            sort=self.sort_combo.currentData() or "name",
        )

    def _emit(self) -> None:
        if not self._quiet:
            self._debounce.stop()
            self.filterChanged.emit(self.current_filter())
