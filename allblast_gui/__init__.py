"""allblast's PySide6 desktop GUI: thin Qt adapters and views over the Qt-free engine."""
