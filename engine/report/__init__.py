"""Report content: case reports (a folder, a patient, a selection) and model reports (a run).

The numbers and tables are built here, without Qt; `html` renders them through the packaged
templates. Figures and PDF pages are drawn on the GUI side (allblast_gui.report), which the CLI
loads only for the `report` command.
"""
