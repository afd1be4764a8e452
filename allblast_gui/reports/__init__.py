"""Reports: File ▸ Export Report… and the Runs dock's Model Report… (`feature`, `report_dialog`);
the pages themselves are drawn by `allblast_gui.report`."""
