"""Work around a reference-count bug of PySide6 6.12 on CPython 3.11.

PySide6 6.12's abi3 wheels drop one reference to the value a Python override returns to C++
when that value is None (every `paint`, `run`, `customEvent`, a `data()` that returns None...).
CPython 3.12+ makes None immortal, so nothing happens there; on 3.11 None's count (a few
thousand at start) reaches zero after a few seconds of scrolling the grid, and the interpreter
aborts with "none_dealloc". PySide6 6.11 does not have the bug (checked with the same tests).

The proper fix is `PySide6-Essentials<6.12` or Python >= 3.12. Until then, give None (and the
two bools, also seen hit) the immortality 3.12 gives them: a huge reference count, so the lost
references never matter. They are statically allocated and never freed anyway.
"""
from __future__ import annotations

import ctypes
import sys
from importlib import metadata

_applied = False


def _affected() -> bool:
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    # The distribution's version, not `import PySide6`: plain modules (cell_rows) that import
    # this package must stay free of Qt.
    try:
        version = metadata.version("shiboken6")
    except metadata.PackageNotFoundError:
        return False
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return True  # an unparsable (dev) version: assume the worst, the pin is harmless
    return (major, minor) >= (6, 12)


def pin_singletons() -> bool:
    """Apply the workaround once where needed; True when it is (now or already) in place."""
    global _applied
    if _applied:
        return True
    if not _affected():
        return False
    for obj in (None, True, False):
        # ob_refcnt is the first field of every CPython 3.11 object.
        ctypes.c_ssize_t.from_address(id(obj)).value += 1 << 40
    _applied = True
    return True
