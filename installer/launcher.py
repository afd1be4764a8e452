"""Entry point of both frozen programs: the executable's own name says which one it is.

PyInstaller makes `allblast` (the window) and `allblast-engine` (the command line) from this one
script, so the two share one analysis and one `_internal/` folder instead of two copies of torch.
"""
import multiprocessing
import sys
from pathlib import Path

ENGINE_NAME = "allblast-engine"


def main() -> int:
    # DataLoader workers and the app's fork server start this executable again; PyInstaller's
    # freeze_support turns such a start into the worker instead of a second program.
    multiprocessing.freeze_support()
    if Path(sys.executable).stem == ENGINE_NAME:
        from engine.cli import main as run
    else:
        from allblast_gui.app import main as run
    return run()


if __name__ == "__main__":
    sys.exit(main())
