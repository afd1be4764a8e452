"""Every menu command and keyboard shortcut, defined once.

The window builds its QActions from `ACTIONS` and the help dialog prints its table from the same
list, so the shortcuts the user reads are the shortcuts that work.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QWidget

MAX_CLASS_KEYS = 9


@dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str  # stable id: the window looks actions up by it
    text: str  # menu text (with & mnemonic)
    shortcuts: tuple[str, ...] = ()  # portable key sequences, e.g. "Ctrl+Shift+Z"
    group: str = "General"  # heading in the help dialog
    help: str = ""  # longer description for the help dialog; defaults to the text


def _label_specs() -> list[ActionSpec]:
    specs = [
        ActionSpec(f"label_{i}", f"Label as class {i}", (str(i),), "Labeling",
                   f"Set the class whose number key is {i} (Label ▸ Classes… shows and changes the keys)")
        for i in range(1, MAX_CLASS_KEYS + 1)
    ]
    specs += [
        ActionSpec("classes", "C&lasses…", ("Ctrl+K",), "Labeling",
                   "The data set's classes: add, rename, recolour, reorder, number keys, presets, delete"),
        ActionSpec("label_unsure", "Mark &Unsure", ("U",), "Labeling", "Mark the selected cells unsure"),
        ActionSpec("label_clear", "&Clear Label", ("0", "Backspace"), "Labeling",
                   "Remove the label (unlabeled)"),
    ]
    return specs


ACTIONS: tuple[ActionSpec, ...] = tuple([
    ActionSpec("open", "&Open Folder…", ("Ctrl+O",), "File", "Open a folder of cell images"),
    ActionSpec("import", "&Import Labels…", ("Ctrl+I",), "File", "Apply labels from a CSV file"),
    ActionSpec("export_report", "Export &Report…", ("Ctrl+E",), "File",
               "A printable case report (PDF or HTML) of the folder, a patient or the selection"),
    ActionSpec("export_generic", "Export Labels (generic CSV)…", ("Ctrl+Shift+E",), "File",
               "Write path,label,patient for every cell"),
    ActionSpec("export_cnmc", "Export Labels (C-NMC CSV)…", (), "File",
               "Write Patient_ID,new_names,labels (1 = all, 0 = hem)"),
    ActionSpec("export_history", "Export Label History…", (), "File", "Write every change with who and when"),
    ActionSpec("quit", "&Quit", ("Ctrl+Q",), "File", "Close allblast"),
    ActionSpec("undo", "&Undo", ("Ctrl+Z",), "Edit", "Undo the last label change (a batch is one step)"),
    ActionSpec("redo", "&Redo", ("Ctrl+Shift+Z",), "Edit", "Redo"),
    ActionSpec("select_all", "Select &All", ("Ctrl+A",), "Edit", "Select every visible cell"),
    ActionSpec("find", "&Find by Name", ("Ctrl+F",), "Edit", "Jump to the file-name search"),
    ActionSpec("annotator", "Set &Annotator…", (), "Edit", "Name recorded with every label change"),
    ActionSpec("bigger", "&Bigger Tiles", ("Ctrl+=", "Ctrl++"), "View", "Larger thumbnails"),
    ActionSpec("smaller", "&Smaller Tiles", ("Ctrl+-",), "View", "Smaller thumbnails"),
    ActionSpec("zoom_in", "Zoom Inspector In", ("+",), "View", "Zoom the full-resolution cell in"),
    ActionSpec("zoom_out", "Zoom Inspector Out", ("-",), "View", "Zoom the full-resolution cell out"),
    ActionSpec("zoom_fit", "Fit Inspector", ("F",), "View", "Fit the cell into the inspector"),
    ActionSpec("actual_size", "Inspector &Actual Size (1:1)", ("Ctrl+1",), "View",
               "One image pixel on one screen pixel in the inspector"),
    ActionSpec("brighter", "&Brighter", ("B",), "View", "Brighter cells (tiles and inspector; files are not changed)"),
    ActionSpec("darker", "&Darker", ("Shift+B",), "View", "Darker cells (display only)"),
    ActionSpec("more_contrast", "More &Contrast", ("C",), "View", "More contrast (display only)"),
    ActionSpec("less_contrast", "Less Contrast", ("Shift+C",), "View", "Less contrast (display only)"),
    ActionSpec("gamma_up", "Gamma Up (lift the darks)", ("]",), "View",
               "Raise gamma: dark detail brighter (display only)"),
    ActionSpec("gamma_down", "Gamma Down", ("[",), "View", "Lower gamma (display only)"),
    ActionSpec("auto_contrast", "A&uto Contrast", ("Ctrl+L",), "View",
               "Stretch this data set's 1st-99th intensity percentiles (measured on its thumbnails) "
               "to the full range; remembered per folder"),
    ActionSpec("reset_display", "&Reset Brightness/Contrast", ("Ctrl+0",), "View",
               "Show the pixels as they are in the files"),
    ActionSpec("patient_on_tiles", "&Patient on Tiles", (), "View",
               "Write the patient id under each tile (folders with patients)"),
    ActionSpec("console", "Python &Console", ("Ctrl+Shift+P",), "View",
               "Show the Python console (`app` is in scope; see docs/scripting.md)"),
    ActionSpec("train", "&Train Model…", ("Ctrl+T",), "Model",
               "Fine-tune an ImageNet network on the expert's current labels"),
    ActionSpec("stop_training", "&Stop Training", (), "Model",
               "Stop after the current batch; the best and last checkpoints are kept"),
    ActionSpec("show_dashboard", "Training &Dashboard", (), "Model", "Show the training curves"),
    ActionSpec("show_runs", "&Runs", (), "Model", "Show every training run of this folder"),
    ActionSpec("add_run", "&Add Run…", (), "Model", "List a run folder made with allblast-engine train"),
    ActionSpec("predict", "&Predict…", ("Ctrl+R",), "Model",
               "Run the active model (or any model.pt) over the folder; results appear on the tiles"),
    ActionSpec("stop_predict", "Stop Prediction", (), "Model", "Stop; the cells done so far keep their results"),
    ActionSpec("show_patients", "P&atients", (), "Model",
               "Per patient: expert and model counts, and the share of a chosen class"),
    ActionSpec("accept_prediction", "&Accept Prediction", ("A",), "Review",
               "The model's class becomes the expert label (a selection is one undo step)"),
    ActionSpec("confirm_label", "C&onfirm Label", ("Y",), "Review",
               "The label shown is right: the cell counts as reviewed for sign-off (the label does not change; "
               "an unsure cell asks for a note, a cell the model disagrees with for the reason to keep it)"),
    ActionSpec("saliency", "Show &Saliency", ("G",), "View",
               "Grad-CAM heat map of the model's class over the cell in the inspector"),
    ActionSpec("shortcuts", "&Keyboard Shortcuts", ("F1",), "Help", "This table"),
    ActionSpec("log_folder", "Show &Log Folder", (), "Help", "Open the folder of allblast's log files"),
    ActionSpec("about", "&About allblast", (), "Help", ""),
] + _label_specs())


def build_actions(parent: QWidget, handlers: dict[str, Callable[[], None]],
                  specs: tuple[ActionSpec, ...] = ACTIONS) -> dict[str, QAction]:
    """QActions for every spec, added to `parent` so their shortcuts work window-wide."""
    actions: dict[str, QAction] = {}
    for spec in specs:
        action = QAction(spec.text, parent)
        action.setObjectName(f"action_{spec.name}")
        if spec.shortcuts:
            action.setShortcuts([QKeySequence(s) for s in spec.shortcuts])
        if spec.help:
            action.setStatusTip(spec.help)
        if spec.name in handlers:
            action.triggered.connect(lambda _checked=False, f=handlers[spec.name]: f())
        parent.addAction(action)
        actions[spec.name] = action
    return actions


def shortcut_text(spec: ActionSpec) -> str:
    """Shortcuts as the platform writes them ("Ctrl+Shift+Z", "⌘⇧Z" on macOS)."""
    return ", ".join(QKeySequence(s).toString(QKeySequence.SequenceFormat.NativeText) for s in spec.shortcuts)


def label_key_text(classes) -> list[tuple[str, str]]:
    """(key, meaning) rows for the labeling keys of the open data set (its stable number keys)."""
    from .style import class_key

    keyed = sorted((k, name) for name in classes if (k := class_key(classes, name)))
    rows = [(str(k), name) for k, name in keyed]
    return rows + [("U", "unsure"), ("0 / Backspace", "clear (unlabeled)")]


# Menu layout: action names, "-" for a separator, ("Title", [...]) for a submenu, and "@name" for
# a submenu the window fills itself (recent folders).
MENUS: tuple[tuple[str, tuple], ...] = (
    ("&File", ("open", "@recent", "-", "import",
               ("&Export Labels", ("export_generic", "export_cnmc", "export_history")), "export_report", "-",
               "quit")),
    ("&Edit", ("undo", "redo", "-", "select_all", "find", "-", "annotator")),
    ("&Label", ("classes", "-") + tuple(f"label_{i}" for i in range(1, MAX_CLASS_KEYS + 1))
     + ("-", "label_unsure", "label_clear", "-", "accept_prediction", "confirm_label")),
    ("&View", ("bigger", "smaller", "patient_on_tiles", "-", "zoom_in", "zoom_out", "zoom_fit", "actual_size",
               "saliency", "-", "brighter", "darker", "more_contrast", "less_contrast", "gamma_up", "gamma_down",
               "auto_contrast", "reset_display", "-", "console")),
    ("&Model", ("train", "stop_training", "-", "predict", "stop_predict", "-", "show_dashboard", "show_runs",
                "show_patients", "add_run")),
    ("&Help", ("shortcuts", "log_folder", "-", "about")),
)
DYNAMIC_MENUS = {"@recent": "Open &Recent"}


def build_menus(menubar, actions: dict[str, QAction], extra=()) -> dict[str, object]:
    """Fill `menubar` from MENUS, then `extra` ((menu title, action name): a feature's own commands,
    at the end of that menu, or in a new menu before Help); returns the dynamic submenus by name
    (e.g. "@recent")."""
    dynamic: dict[str, object] = {}

    def fill(menu, items) -> None:
        for item in items:
            if item == "-":
                menu.addSeparator()
            elif isinstance(item, tuple):
                fill(menu.addMenu(item[0]), item[1])
            elif item.startswith("@"):
                sub = menu.addMenu(DYNAMIC_MENUS[item])
                sub.setObjectName(f"menu_{item[1:]}")
                dynamic[item] = sub
            else:
                menu.addAction(actions[item])

    menus = {title: menubar.addMenu(title) for title, _ in MENUS}
    for title, items in MENUS:
        fill(menus[title], items)
    for title, name in extra:
        if title not in menus:
            menus[title] = QMenu(title, menubar)
            menubar.insertMenu(menus["&Help"].menuAction(), menus[title])
        menus[title].addAction(actions[name])
    return dynamic
