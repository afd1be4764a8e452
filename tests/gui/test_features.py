"""The window as a house to move into (issue 23): a new feature is one folder plus one line in the
window, it hears the session like the others, and the default layout a newcomer sees is readable
(class names whole in the Data Set tree, the console a tab of the bottom area)."""
from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget

from .conftest import open_and_wait

# A sign-off panel, as a newcomer would write it: one folder, `signoff/feature.py`, that knows the
# mounting API (allblast_gui.feature) and the session, and no other feature.
SIGN_OFF = '''
from PySide6.QtWidgets import QLabel

from allblast_gui.actions import ActionSpec
from allblast_gui.feature import RIGHT, Dock, Feature


class SignOffFeature(Feature):
    name = "signoff"
    own_actions = (("&Review", ActionSpec("sign_off", "&Sign Off", ("Ctrl+Shift+S",), "Review",
                                          "Sign the open folder off as reviewed")),)

    def __init__(self, session, window):
        super().__init__(session, window)
        self.label = QLabel("No folder open")
        self.signed = []
        self._dock = self.make_dock("signOffDock", "Sign-off", self.label)
        session.datasetChanged.connect(self._on_dataset)

    def docks(self):
        return [Dock("signoff", self._dock, RIGHT, 300, 200)]

    def handlers(self):
        return {"sign_off": self.sign_off}

    def _on_dataset(self, ds):
        self.label.setText(f"{ds.root.name}: {len(self.session.rows())} cells to sign off")

    def sign_off(self):
        self.signed.append((self.session.dataset.root.name, self.session.annotator))
        self.message.emit("Signed off")
'''


def make_images(root: Path, classes=("erythroblast", "eosinophil", "basophil")) -> Path:
    for i, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (40 * i, 80, 200 - 40 * i)).save(root / cls / f"{cls}_1.png")
    return root


def test_a_new_feature_is_one_folder_and_one_line_in_the_window(qtbot, make_window, tmp_path, monkeypatch):
    package = tmp_path / "plugins" / "signoff"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""A sign-off panel."""\n')
    (package / "feature.py").write_text(textwrap.dedent(SIGN_OFF))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    from signoff.feature import SignOffFeature
    from allblast_gui import main_window

    # The one line: the window's list of features, with the new one at its end.
    monkeypatch.setattr(main_window.MainWindow, "FEATURES", main_window.FEATURES + (SignOffFeature,))
    window = make_window()

    feature = window.signoff
    dock = window.findChild(QDockWidget, "signOffDock")
    assert window.docks["signoff"].dock is dock and window.dockWidgetArea(dock) == Qt.DockWidgetArea.RightDockWidgetArea
    assert window.docks["cell"].dock in window.tabifiedDockWidgets(dock)  # one area, one tab group
    review_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Review")
    assert window.actions["sign_off"] in review_menu.actions()
    assert window.actions["sign_off"].shortcut().toString() == "Ctrl+Shift+S"

    ds = open_and_wait(qtbot, window, make_images(tmp_path / "cells"))
    assert feature.label.text() == "cells: 3 cells to sign off"  # it heard the session, as every feature does
    assert window.model.visible_count() == len(ds.rows) == 3  # and the others are as they were
    window.actions["sign_off"].trigger()
    assert feature.signed == [("cells", "tester")] and window.status.currentMessage() == "Signed off"


def test_the_default_layout_at_1400x900(qtbot, window, tmp_path):
    open_and_wait(qtbot, window, make_images(tmp_path / "cells"))
    window.resize(1400, 900)
    qtbot.wait(50)
    docks = {name: d.dock for name, d in window.docks.items()}
    # The console opens as one more tab of the bottom area, never as a half of the window.
    assert not docks["console"].isVisible()
    window.actions["console"].trigger()
    qtbot.wait(50)
    console = docks["console"]
    assert console.isVisible() and not console.isFloating()
    assert window.dockWidgetArea(console) == Qt.DockWidgetArea.BottomDockWidgetArea
    assert {docks["dashboard"], docks["runs"], docks["patients"]} <= set(window.tabifiedDockWidgets(console))
    assert console.height() < window.height() // 2
    # The Data Set tree shows every class name whole ("erythroblast  [1]", not "e…").
    tree = window.tree
    classes = tree.topLevelItem(1)
    for i in range(classes.childCount()):
        item = classes.child(i)
        rect = tree.visualItemRect(item)
        needed = tree.fontMetrics().horizontalAdvance(item.text(0)) + tree.iconSize().width() + 8
        assert rect.width() >= needed, (item.text(0), rect.width(), needed)
