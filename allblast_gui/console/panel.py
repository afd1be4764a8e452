"""The Python console dock (View ▸ Python Console): pyqtgraph's ConsoleWidget with `app` in scope,
the same object `allblast FOLDER --script FILE.py` gives a script (docs/scripting.md)."""
from __future__ import annotations

from pyqtgraph.console import ConsoleWidget
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QVBoxLayout, QWidget

INTRO = ("allblast console: `app` is the running application (see docs/scripting.md), e.g.\n"
         "    app.train(backbone='tf_efficientnet_lite0', epochs=2, ask_every=0)\n"
         "    app.screenshot('window.png')\n\n")


class ConsolePanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("consolePanel")
        self.namespace: dict = {}  # `app` goes in once the window has made it
        self.widget = ConsoleWidget(namespace=self.namespace, text=INTRO)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.widget)

    def write(self, text: str) -> None:
        """Append text (a script's traceback, ...) to the console's output."""
        output = self.widget.output
        output.moveCursor(QTextCursor.MoveOperation.End)
        output.insertPlainText(text if text.endswith("\n") else text + "\n")
        output.ensureCursorVisible()

    def text(self) -> str:
        return self.widget.output.toPlainText()
