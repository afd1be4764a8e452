"""Run code as a user who cannot write a folder: the one way tests check real permissions.

CI runs as root, and root ignores permission bits: a chmod-ed folder stays writable to it, so a
test that only chmods (or skips as root, or monkeypatches the writability probe) never meets a
real read-only folder. Here a child process imports what it needs, then, when it runs as root,
drops to `nobody` before the code under test runs; as any other user it simply runs. Its files
must lie in a folder `nobody` can traverse (`world_readable_tmp`), and it gets a home of its own.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534
REPO = Path(__file__).resolve().parents[1]
# Imported before the drop: the child may not be able to read them afterwards (root's home).
PRELOAD = ("engine.cli", "engine.cli.labels", "engine.labels.project", "engine.labels.csv_io",
           "engine.labels.outputs", "engine.labels.store", "engine.labels.location", "engine.data.scan",
           "engine.utils.files", "engine.workspace.lock", "encodings.ascii", "platformdirs", "sqlite3", "csv", "json")


@contextmanager
def world_readable_tmp(tag: str = "ro"):
    """A fresh folder under $TMPDIR (not pytest's 0700 tmp_path) that every user can traverse, with
    an empty `home/` the other user may write; everything in it is made removable and removed."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix=f"allblast-{tag}-"))
    os.chmod(base, 0o755)
    home = base / "home"
    home.mkdir()
    os.chmod(home, 0o777)
    try:
        yield base
    finally:
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
        shutil.rmtree(base, ignore_errors=True)


def make_read_only(root: Path) -> None:
    """Every file 0444 and every folder 0555, the folder itself included."""
    for path in [*root.rglob("*"), root]:
        if not path.is_symlink():
            os.chmod(path, 0o555 if path.is_dir() else 0o444)


def user_env(home: Path) -> dict[str, str]:
    """The other user's environment: its own home, user data, cache, state and config folders."""
    return {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
            "XDG_STATE_HOME": str(home / "state"), "XDG_CACHE_HOME": str(home / "cache"),
            "XDG_CONFIG_HOME": str(home / "config"), "ALLBLAST_TEST_CACHE": str(home / "cache")}


def run_as_other_user(code: str, home: Path, *args: str, timeout: float = 300,
                      preload: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`code` (Python source; `sys.argv[1:]` are `args`) run by a user who cannot write what root
    made read-only. `preload`: more modules to import before the drop (as `nobody` the standard
    library under root's home cannot be read: every module the code needs, lazily imported ones
    included, must be loaded by then). The return value's stdout is what the code printed."""
    driver = "\n".join([
        "import importlib, os, sys",
        f"for _m in {PRELOAD + tuple(preload)!r}: importlib.import_module(_m)",
        "import engine.cli; engine.cli.build_parser()  # every command module, while it can be read",
        f"if os.geteuid() == 0:\n    os.setgid({NOBODY}); os.setuid({NOBODY})",
        textwrap.dedent(code),
    ])
    return subprocess.run([sys.executable, "-c", driver, *args], capture_output=True, text=True, cwd=REPO,
                          env=user_env(home), timeout=timeout)


def engine_as_other_user(home: Path, *args: str) -> subprocess.CompletedProcess:
    """`allblast-engine -q ARGS` run by a user who cannot write the folder."""
    return run_as_other_user("sys.exit(engine.cli.main(sys.argv[1:]))", home, "-q", *args)
