"""Qt item models: thin adapters over the plain rows in `allblast_gui.cells` (nothing else lives here)."""
