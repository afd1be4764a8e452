"""The Python console (View ▸ Python Console) and `allblast --script FILE.py`: both run Python on
the GUI thread of the real window with `app` (scripting.ScriptApp, docs/scripting.md) in scope.

The console is a tab of the bottom area, hidden until asked for. A script that raises writes its
traceback here (and to the log), and the console is shown so the user sees it.
"""
from __future__ import annotations

from pathlib import Path

from ..feature import BOTTOM, Dock, Feature
from .panel import ConsolePanel


class ConsoleFeature(Feature):
    name = "console"

    def __init__(self, session, window) -> None:
        super().__init__(session, window)
        self.panel = ConsolePanel()
        self.app = None  # scripting.ScriptApp, once the window has made it (set_app)
        self._dock = self.make_dock("consoleDock", "Python Console", self.panel)

    def docks(self) -> list[Dock]:
        return [Dock("console", self._dock, BOTTOM, 280, 180, action="console", visible=False)]

    def set_app(self, app) -> None:
        """The `app` object scripts and the console get (the window builds it over the features)."""
        self.panel.namespace["app"] = app
        self.app = app

    def write(self, text: str) -> None:
        self.panel.write(text)

    def run_script(self, path: str | Path) -> bool:
        """Run a Python file with `app` in scope; False (the traceback shown here) when it raised."""
        from ..scripting import run_script

        if run_script(Path(path).expanduser(), self.app, write=self.panel.write):
            return True
        self._dock.show()  # the traceback is there (and in the log)
        self._dock.raise_()
        return False
