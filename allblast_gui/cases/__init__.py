"""Cases and their sign-off in the window: the Cases dock (per patient or folder: cells, reviewed,
open disagreements, differential, blast fraction with its 95% interval, status; a click filters
the grid) and the Sign Off… dialog (engine.cases)."""
