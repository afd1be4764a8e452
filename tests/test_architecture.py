"""The import graph is the architecture: import-linter contracts in pyproject.toml say that the
engine never imports Qt, that its packages are layered (cli > report > workspace > learn | labels >
data > utils), and that no sibling modules import each other in a circle. This runs them, and
checks that each engine notion has one home (no second definition of it elsewhere)."""
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


def test_the_engine_layers_name_the_workspace_between_report_and_learn_labels():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers" and "engine.cli" in c["layers"])
    assert layers.index("engine.report") < layers.index("engine.workspace") < layers.index("engine.learn | engine.labels")


# Each notion has one home; a use elsewhere is a second definition of it (issue 23).
ONE_HOME = {
    # user folders: one appauthor choice (two homes computed different Windows paths)
    r"platformdirs\.user_|from platformdirs import|import platformdirs": "engine/utils/places.py",
    # "is this folder writable": tried with a file (os.access lies to root, on read-only mounts, with ACLs)
    r"os\.access\(": "engine/utils/files.py",
    # "is this process alive" needs this computer's name: one function for it
    r"gethostname|platform\.node\(": "engine/utils/process.py",
}


def test_each_notion_has_one_home():
    stray = []
    for folder in ("engine", "allblast_gui", "installer"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for pattern, home in ONE_HOME.items():
                    if rel != home and re.search(pattern, line):
                        stray.append(f"{rel}:{n}: {line.strip()}  (its home: {home})")
    assert not stray, "\n".join(stray)
