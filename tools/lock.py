"""Write `constraints.txt`: the exact versions of the environment that last passed CI.

    python tools/lock.py [--out constraints.txt]

Run it inside the environment `.ci/run` made and tested (`.ci/venv`), after a green run:
`.ci/venv/bin/python tools/lock.py`. The file pins every installed distribution except allblast
itself and the packaging tools, so `pip install -e ".[test]" -c constraints.txt` reproduces the
tested set and `installer/build.py` can check that a bundle is built from it. It is a record of
what passed, not a requirement: pyproject.toml keeps its ranges (upper bounds only where a break
is known and explained there).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"allblast", "pip", "setuptools", "wheel"}  # ours, and what every venv brings along


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed() -> dict[str, str]:
    """{canonical name: version} of every distribution in this Python, allblast excluded."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) not in SKIP:
            found[canonical(name)] = dist.version
    return dict(sorted(found.items()))


def render(versions: dict[str, str]) -> str:
    head = [
        "# Known-good versions: the environment in which `bash .ci/run` last passed.",
        f"# Made by `python tools/lock.py` on {date.today().isoformat()}, Python {platform.python_version()}, "
        f"{sys.platform} {platform.machine()}.",
        '# Use: python -m pip install -e ".[test]" -c constraints.txt',
    ]
    return "\n".join(head + [f"{name}=={version}" for name, version in versions.items()]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "constraints.txt")
    args = parser.parse_args(argv)
    versions = installed()
    args.out.write_text(render(versions), encoding="utf-8")
    print(f"wrote {args.out} ({len(versions)} packages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
