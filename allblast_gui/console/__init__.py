"""The Python console and --script: the dock (`panel`) and running a script (`feature`)."""
