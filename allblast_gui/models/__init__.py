"""Qt item models: thin adapters over plain Python rows (see `cell_rows`)."""
