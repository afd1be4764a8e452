"""The mounting API: what a feature gives the window, and what it gets from it.

A feature is one folder, `allblast_gui/<name>/`, holding everything one job of the window needs:
its presenter (`feature.py`, a `Feature`), its controller, dialogs and docks. The window builds
each feature with the session and itself, then asks it for its docks, its central widget (only
the review feature has one: the grid), the handlers of its menu commands and, once the actions
exist, lets it enable and rename its own (`bind`). A feature talks to the rest of the window only
through the session: it never imports another feature, and uses the window only as the Qt parent
of its dialogs and for its status bar. Anchor: ilastik's applets/<name>/.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDockWidget, QMenu, QWidget

from .actions import ActionSpec

LEFT = Qt.DockWidgetArea.LeftDockWidgetArea
RIGHT = Qt.DockWidgetArea.RightDockWidgetArea
BOTTOM = Qt.DockWidgetArea.BottomDockWidgetArea


@dataclass
class Dock:
    """A dock a feature offers. The window puts it in `area`; docks of one area share it as tabs
    (the bottom area: Training, Runs, Patients, Python Console)."""

    name: str  # the window's key for it (`window.show_dock(name)`)
    dock: QDockWidget
    area: Qt.DockWidgetArea
    size: int  # on a first start: px across (left, right) or high (bottom)
    minimum: int  # px across or high it never gets below (names in the tree stay readable)
    action: str | None = None  # the menu command that shows it (View ▸ Python Console, ...)
    visible: bool = True  # False: hidden until its menu command shows it


class Feature(QObject):
    name = ""  # the window's attribute for it: window.training, window.predictions, ...
    message = Signal(str)  # a line for the status bar
    message_ms = 15_000  # how long a message stays there
    # Menu commands beyond actions.ACTIONS, as (menu title, spec): a new feature brings its own.
    own_actions: tuple[tuple[str, ActionSpec], ...] = ()

    def __init__(self, session, window: QWidget) -> None:
        super().__init__(window)
        self.session = session
        self.window = window  # the Qt parent of the feature's dialogs; nothing else is read from it
        self.message.connect(lambda text: self.status.showMessage(text, self.message_ms))

    @property
    def status(self):
        """The window's status bar (views.status_bar.StatusPanel)."""
        return self.window.statusBar()

    def make_dock(self, object_name: str, title: str, widget: QWidget) -> QDockWidget:
        dock = QDockWidget(title, self.window, objectName=object_name)  # the name saves its place
        dock.setWidget(widget)
        return dock

    # ---- what the window asks -------------------------------------------------------------------
    def docks(self) -> list[Dock]:
        return []

    def central(self) -> QWidget | None:
        """The window's central widget, for the one feature that has it."""
        return None

    def handlers(self) -> dict[str, Callable[[], object]]:
        """Menu command name (actions.ActionSpec.name) -> what it does."""
        return {}

    def bind(self, actions: dict[str, QAction], menus: dict[str, QMenu]) -> None:
        """The window's actions and its filled-in submenus ("@recent"), once built: a feature
        enables, checks and renames its own commands from here on."""

    def preload(self) -> None:
        """After the window's first paint: load what the feature's first use would wait for."""

    def confirm_close(self) -> bool:
        """The window is closing: False keeps it open (asked only when someone can answer)."""
        return True

    def shutdown(self) -> None:
        """The window closes: stop work and wait for threads (features shut down last-mounted first)."""
