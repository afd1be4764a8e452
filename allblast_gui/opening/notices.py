"""What the window says about a folder it has just opened, in non-modal boxes: someone else has it
open too, it holds no cell images, or its labels are read-only here. Each box is parented to the
window under a stable object name (tests and scripts find it); the opening feature decides whether
to show it (nobody is asked while a script runs unattended)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget


def also_open_box(parent: QWidget, root: Path, holders: str) -> QMessageBox:
    """Another window or program has this folder open (`holders` says who). SQLite keeps
    concurrent label changes safe; each window shows the other's after a refresh."""
    box = QMessageBox(
        QMessageBox.Icon.Information, "Folder open elsewhere too",
        f"{root} is also open by {holders}.\n\nBoth can label: every change is saved at once, but you "
        "may label the same cells twice. Coordinate with them.", QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("alsoOpenBox")
    return box


def empty_folder_box(parent: QWidget, root: Path) -> QMessageBox:
    """An empty (or wrong) folder: say what allblast expects."""
    box = QMessageBox(
        QMessageBox.Icon.Information, "No cell images here",
        f"No cell images were found in {root}.\n\n"
        "allblast opens a folder of single-cell images (bmp, png, jpg, tif), laid out as:\n"
        " • C-NMC: fold_0/all/UID_11_3_1_all.bmp and fold_0/hem/UID_H10_4_2_hem.bmp (classes all and "
        "hem in fold_N folders; the patient id, 11 or H10, in the file name)\n"
        " • class folders: one folder per class (e.g. basophil/, neutrophil/, …) holding its images\n"
        " • any folder of images with a labels CSV (path,label[,patient]; allblast --labels FILE.csv)\n\n"
        "Choose the folder that holds them with File ▸ Open Folder…", QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("emptyFolderBox")
    return box


def read_only_box(parent: QWidget, root: Path, db_path: Path, continue_in_copy) -> QMessageBox:
    """A read-only folder with its own labels: they are shown; labelling needs a writable copy,
    which "Continue in a Copy" makes (`continue_in_copy()`)."""
    box = QMessageBox(
        QMessageBox.Icon.Information, "Labels are read-only here",
        f"{root} cannot be written by you. Its labels are shown (from {db_path}), but changes cannot be "
        "saved there.\n\nContinue in a copy in your user data folder? The copy starts with every label "
        "and its history; the folder's own database is left as it is.", parent=parent)
    box.setObjectName("readOnlyBox")
    copy = box.addButton("Continue in a Copy", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Only Look", QMessageBox.ButtonRole.RejectRole)
    box.buttonClicked.connect(lambda button: button is copy and continue_in_copy())
    return box
