"""What `pip install` ships, read from this checkout (never from installed metadata, which may
belong to another checkout): a wheel is built from pyproject.toml and its contents checked."""
from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("allblast-*.whl")
    with zipfile.ZipFile(built) as zf:
        yield zf


def test_every_python_package_is_listed_for_installation():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("engine", "allblast_gui") for init in (ROOT / top).rglob("__init__.py")
    } | {"allblast_resources"}
    assert listed == on_disk, f"listed but missing: {sorted(listed - on_disk)}; unlisted: {sorted(on_disk - listed)}"


def test_the_wheel_holds_every_module_and_resource(wheel):
    names = set(wheel.namelist())
    for top in ("engine", "allblast_gui"):
        for path in (ROOT / top).rglob("*.py"):
            assert path.relative_to(ROOT).as_posix() in names, path
    # Every resource pattern pyproject promises matches real files, and they are in the wheel.
    for pattern in PYPROJECT["tool"]["setuptools"]["package-data"]["allblast_resources"]:
        matched = [p for p in (ROOT / "resources").glob(pattern) if p.is_file()]
        assert matched, f"package-data promises resources/{pattern}, but nothing matches"
        for p in matched:
            assert f"allblast_resources/{p.relative_to(ROOT / 'resources').as_posix()}" in names, p


def test_console_scripts_point_at_callables_of_this_checkout(wheel):
    (ep_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(ep_name).decode())
    assert dict(entry_points["console_scripts"]) == {"allblast-engine": "engine.cli:main"}
    assert dict(entry_points["gui_scripts"]) == {"allblast": "allblast_gui.app:main"}
    for target in ("engine.cli:main", "allblast_gui.app:main"):
        module, func = target.split(":")
        mod = importlib.import_module(module)
        assert Path(mod.__file__).resolve().is_relative_to(ROOT) and callable(getattr(mod, func))


def test_the_version_has_one_home(wheel):
    from engine import __version__

    assert any(n == f"allblast-{__version__}.dist-info/METADATA" for n in wheel.namelist())
