"""Shared widgets: the cell grid and its tile delegate, the data set tree, the filter bar, the Cell
inspector (with its prediction view), the status bar and the panels' row table. They know no
feature: a feature builds them and connects them to the session."""
