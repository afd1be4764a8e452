"""Qt views and delegates that paint the models in `allblast_gui.models`."""
