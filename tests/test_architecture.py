"""The import graph is the architecture: import-linter contracts in pyproject.toml say that the
engine never imports Qt, that its packages are layered (cli > learn | labels > data > utils), and
that no sibling modules import each other in a circle. This runs them."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    proc = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    declared = len(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"])
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", proc.stdout)
    assert kept and (int(kept[1]), int(kept[2])) == (declared, 0), proc.stdout
    assert declared >= 4
