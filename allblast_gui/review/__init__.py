"""Reviewing cells: the grid, filter bar, Data Set tree and Cell dock (`feature`), the label loop
with undo (`controller`), how cells look (`display`) and label files (`label_files`)."""
