"""What `pip install` ships: every package, the resources, and both console scripts."""
from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_is_listed_for_installation():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("engine", "allblast_gui") for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_resources_are_installed_as_a_package():
    from allblast_resources import resource_path

    icon = resource_path("icons", "allblast.svg")
    assert icon.is_file() and b"<svg" in icon.read_bytes()


def test_console_scripts():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    gui = {e.name: e.value for e in entry_points(group="gui_scripts")}
    assert scripts.get("allblast-engine") == "engine.cli:main"
    assert gui.get("allblast") == "allblast_gui.app:main"
