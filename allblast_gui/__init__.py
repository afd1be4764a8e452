"""allblast's PySide6 desktop GUI: thin Qt adapters and views over the Qt-free engine."""
from ._compat import pin_singletons

# Before any Qt object calls back into Python: see _compat for the PySide6 6.12 bug.
pin_singletons()
