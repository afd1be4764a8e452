"""Dock panels of the window: the training dashboard and the runs list."""
