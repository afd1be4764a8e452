"""What installer/build.py checks before it builds: that this Python has the versions CI passed
with (constraints.txt, issue 21), and that the fast backends are there unless left out on purpose.
Each failure is a BuildError, printed by build.py as one line."""
from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"  # what CI last passed with (tools/lock.py)
FAST_BACKENDS = ("openvino", "onnxruntime", "onnx")  # the `fast` extra: bundled unless --no-fast-backends
INSTALL_BUILD_ENV = 'python -m pip install -e ".[installer,fast]" -c constraints.txt'


class BuildError(Exception):
    """A problem the person building can fix; printed as one line."""


def _lock_tool():
    """tools/lock.py, the one home of how installed versions are read and names compared."""
    spec = importlib.util.spec_from_file_location("allblast_lock", ROOT / "tools" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_constraints(path: Path) -> dict[str, str]:
    """{canonical name: version} of a constraints file's `name==version` lines."""
    lock = _lock_tool()
    pinned = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pinned[lock.canonical(name.strip())] = version.strip()
    return pinned


def untested_versions(pinned: dict[str, str], installed: dict[str, str]) -> list[str]:
    """'name installed (tested pinned)' for each pinned package installed at another version.
    Packages the file does not name (PyInstaller and its own dependencies) are build tools, not
    bundled; pinned ones that are not installed are not bundled either."""
    from packaging.version import InvalidVersion, Version

    def same(a: str, b: str) -> bool:
        try:
            return Version(a) == Version(b)  # 2.4.6 == 2.4.6.0; a local label (+cpu) differs
        except InvalidVersion:
            return a == b

    return [f"{name} {installed[name]} (tested {version})" for name, version in sorted(pinned.items())
            if name in installed and not same(installed[name], version)]


def check_tested_versions(allow_untested: bool, constraints: Path | None = None) -> list[str]:
    """Stop (BuildError) unless this Python has the versions CI passed with; with `allow_untested`
    go on and return the differences (printed as a warning)."""
    constraints = constraints or CONSTRAINTS
    how = f"make the build environment with {INSTALL_BUILD_ENV}, or pass --allow-untested"
    if not constraints.is_file():
        if allow_untested:
            return [f"no {constraints.name}: nothing to check against"]
        raise BuildError(f"{constraints} is missing, so the versions cannot be checked ({how})")
    differ = untested_versions(read_constraints(constraints), _lock_tool().installed())
    if differ and not allow_untested:
        raise BuildError(f"{len(differ)} package(s) differ from the tested versions in {constraints.name}: "
                         f"{', '.join(differ)}; {how}")
    return differ


def check_fast_backends(bundled: bool) -> None:
    """The fast backends are bundled on purpose or left out on purpose, never by accident of what
    this Python happens to have."""
    if not bundled:
        return
    missing = [name for name in FAST_BACKENDS if not _installed(name)]
    if missing:
        raise BuildError(f"the fast backends are not installed ({', '.join(missing)} missing): "
                         f"{INSTALL_BUILD_ENV}, or --no-fast-backends for a bundle that predicts with torch only")


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
