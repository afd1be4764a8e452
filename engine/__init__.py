"""allblast engine: cell data sets, EfficientNet transfer learning, evaluation, label store.

Plain Python and torch; never imports Qt (the GUI in `allblast_gui` builds on this library).
"""
__version__ = "0.1.0"
