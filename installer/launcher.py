"""Entry point of both frozen programs: the name the program was started as says which one it is.

PyInstaller makes `allblast` (the window) from this script; on Linux `allblast-engine` (the command
line) is a link to it, elsewhere a second executable from the same analysis. Either way the two
share one `_internal/` folder instead of two copies of torch. The name is taken from argv[0], not
sys.executable: a link's own name survives there, while the executable path is the link's target.
"""
import multiprocessing
import sys
from pathlib import Path

ENGINE_NAME = "allblast-engine"


def program_name(argv0: str) -> str:
    """'allblast-engine' for `allblast-engine`, `/x/allblast-engine`, `allblast-engine.exe`."""
    return Path(argv0).stem if argv0.lower().endswith(".exe") else Path(argv0).name


def main() -> int:
    # DataLoader workers and the app's fork server start this executable again; PyInstaller's
    # freeze_support turns such a start into the worker instead of a second program.
    multiprocessing.freeze_support()
    if program_name(sys.argv[0]) == ENGINE_NAME:
        from engine.cli import main as run
    else:
        from allblast_gui.app import main as run
    return run()


if __name__ == "__main__":
    sys.exit(main())
