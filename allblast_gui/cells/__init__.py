"""The cells in the window's memory, shared by every feature and view: the grid's plain rows and
filters (`rows`, no Qt), a model's output on those rows (`predictions`), and their thumbnails
(`thumbnails`: decoding, caches, display levels; `thumbnail_scheduler`: when to ask and repaint)."""
