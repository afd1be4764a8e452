"""Helper for the SIGKILL durability test: write labels in a loop, print each acknowledged write.

usage: python store_writer.py DATA_ROOT DB_PATH N_PATHS ROUND
Prints "ready", then one "path<TAB>label" line per set_label call that returned.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.labels.store import LabelStore  # noqa: E402


def main() -> None:
    root, db, n, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = LabelStore.open(root, db_path=db)
    print("ready", flush=True)
    i = 0
    while True:
        path, label = f"c{i % n}.png", f"r{rnd}_{i}"
        store.set_label(path, label, annotator="writer", source="cli")
        print(f"{path}\t{label}", flush=True)
        i += 1


if __name__ == "__main__":
    main()
