"""The session: what the window has open, in one place every feature asks and listens to.

One data set is open at a time: its rows, its class set and its label store (`dataset`), the
runs catalog of that folder (`catalog`: which model is active) and the model whose predictions
the rows show (`predictions`). A feature never asks another feature; it asks the session, and it
hears about changes from the session's signals. Slots run in the order the features were mounted,
so the review feature (which owns the grid's rows) has taken a new data set before the features
that count over its rows hear of it. Anchor: napari's components/viewer_model.py.

Who changes what: opening sets the data set; classes (and review, after an undo) reread the
class set; training and predictions change the active model; predictions says which predictions
the rows show; review sets the annotator and says which labels changed. What a script wants
(`unattended`, a call it waits on) is said here too, so a feature decides whether to open a
dialog without knowing about scripts.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.labels.classes import class_set
from engine.utils.places import user_documents_dir
from engine.workspace.catalog import RunsCatalog

from .weights_cache import WeightsCache


class Session(QObject):
    datasetChanged = Signal(object)  # LoadedDataset: a folder was opened (rows, classes, store)
    classesChanged = Signal(str)  # the class set was reread after an edit: what was done ("" for an undo)
    labelsChanged = Signal(object)  # {path: label} the expert just changed (the rows already show it)
    reviewsChanged = Signal(object)  # paths whose review marks (confirmation, kept disagreement, signature) were
    #                                  written, or None: the cases recount
    reviewMarksChanged = Signal(object)  # paths whose rows' `reviewed` mark changed: their tiles are repainted
    annotatorChanged = Signal(str)
    activeModelChanged = Signal(object)  # the model file predictions now use (Path), or None
    predictionsChanged = Signal(object)  # ModelRecord | None: whose predictions the rows show (all may change)
    predictionsArrived = Signal(list)  # paths whose rows got predictions while a prediction streams in
    predictionsFinished = Signal()  # a prediction ended: counts and sorts over every row are due
    openFailed = Signal(str)  # a folder could not be opened, or its opening was cancelled: why
    # Requests from one feature's widgets to another feature's work.
    patientRequested = Signal(object)  # show this patient's cells in the grid (None: every cell)
    caseRequested = Signal(object, str)  # show a case's cells: its patient (or None) and a path prefix (or "")
    saliencyRequested = Signal(str)  # the Cell dock wants the heat map of this cell
    saliencyReady = Signal(str, object, str)  # path, heat map (H, W float32), the class it explains
    saliencyFailed = Signal(str, str)  # path, why not
    modelReportRequested = Signal(object)  # the run folder whose model report to write
    weightsManagerRequested = Signal()  # show Model ▸ ImageNet Weights… (the Train dialog's button)
    weightsChanged = Signal()  # ImageNet weights were imported, fetched or removed: look them up again
    cellsListed = Signal(str, list)  # show only these cells, in this order, under this name ("Suggested (24)")
    similarRequested = Signal(str)  # the Cell dock wants the look-alikes of this cell

    def __init__(self, prefs, runner, *, db_dir: Path | None = None, thumbnail_cache: Path | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.prefs = prefs  # settings.Prefs: what the window remembers between runs
        self.runner = runner  # the window's TaskRunner (opening folders, full-size images)
        # Which backbones have ImageNet weights here, looked up on the runner's threads (issue 28).
        self.weights = WeightsCache(runner, parent=self)
        self.weightsChanged.connect(self.weights.invalidate)
        self.db_dir = db_dir  # label databases here instead of the default place (tests, demos, shares)
        self.thumbnail_cache = thumbnail_cache  # None: the user cache
        self.dataset = None  # opening.dataset.LoadedDataset
        self.catalog = None  # the open folder's RunsCatalog: its runs and active model
        self.predictions = None  # engine.labels.predictions.ModelRecord whose predictions the rows carry
        self.annotator = prefs.annotator()
        # The review feature's question for a name (None: cancelled); never asked when unattended.
        self.ask_annotator: Callable[[], str | None] | None = None
        self.unattended = False  # --exit-after: nobody is there to answer a dialog
        self.script_waiting = False  # a script waits on this call (app.open): it takes the error itself
        self.closing = False  # app.quit(): close without asking
        self._selection: Callable[[], list[str]] = list

    @property
    def quiet(self) -> bool:
        """Ask nothing and open no error box: nobody would answer, or a script takes the error."""
        return self.unattended or self.script_waiting or self.closing

    # ---- the data set ---------------------------------------------------------------------------
    def set_dataset(self, dataset) -> None:
        """A folder is open: its catalog and stored predictions come with it (opening calls this)."""
        self.dataset = dataset
        self.catalog = RunsCatalog(dataset.store)
        self.predictions = dataset.predictions
        self.datasetChanged.emit(dataset)

    @property
    def classes(self):
        """The open folder's ClassSet (names in order, keys, colours); [] with no folder."""
        return self.dataset.classes if self.dataset is not None else []

    def rows(self) -> list:
        """The grid's rows (cells.rows.CellRow), the same objects every view shows."""
        return self.dataset.rows if self.dataset is not None else []

    def reload_classes(self, what: str = "") -> None:
        """Read the class set from the label store again (an edit, or its undo, changed it)."""
        if self.dataset is not None:
            self.dataset.classes = class_set(self.dataset.store)
            self.classesChanged.emit(what)

    def output_dir(self) -> Path:
        """Where reports and exported tables go unless the user says otherwise: the user's
        documents, never the data folder (nothing is written there but labels)."""
        base = user_documents_dir()
        return base / self.dataset.root.name if self.dataset is not None else base

    # ---- the model ------------------------------------------------------------------------------
    @property
    def active_model(self) -> Path | None:
        """The model file predictions use (a run's model.pt, or a file made elsewhere)."""
        return self.catalog.active_model_file() if self.catalog is not None else None

    def set_active_model(self, path) -> Path | None:
        """Make a run folder or model file the active one; raises FileNotFoundError without a model."""
        if self.catalog is None:
            raise RuntimeError("open a folder of cells first")
        self.catalog.set_active(path)
        model = self.catalog.active_model_file()
        self.activeModelChanged.emit(model)
        return model

    def set_predictions(self, record) -> None:
        """The rows now carry `record`'s predictions (None: none)."""
        self.predictions = record
        self.predictionsChanged.emit(record)

    # ---- who reviews, and what is selected ------------------------------------------------------
    def set_annotator(self, name: str) -> None:
        self.annotator = name.strip()
        self.prefs.set_annotator(self.annotator)
        self.annotatorChanged.emit(self.annotator)

    def ensure_annotator(self) -> str | None:
        """The name to record with a change, asked once when none was ever given (None: refused).
        A read-only folder asks nothing: it refuses the change itself, with its own message."""
        read_only = getattr(getattr(self.dataset, "store", None), "read_only", False)
        if not self.annotator and not read_only and self.ask_annotator is not None:
            self.ask_annotator()
        return self.annotator if self.annotator or read_only else None

    def provide_selection(self, selected_paths: Callable[[], list[str]]) -> None:
        self._selection = selected_paths  # the review feature's grid

    def selected_paths(self) -> list[str]:
        return self._selection()

    def list_cells(self, name: str, paths: list[str]) -> None:
        """Show only `paths`, in that order, as a list named `name` (the review feature's grid)."""
        self.cellsListed.emit(name, list(paths))
