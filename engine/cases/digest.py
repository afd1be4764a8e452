"""The digest a signature keeps: sha256 over a case's cells and their labels.

Each cell is one UTF-8 line, the JSON array `["<path>", "<label>"]` (path relative to the data
folder with '/', label a class name, "unsure", or null for unlabeled) followed by a newline; the
lines are sorted by path (code point order). Anyone can recompute it from an export:

    python -c 'import csv,hashlib,json,sys; r=sorted((x["path"], x["label"] or None) for x in
    csv.DictReader(open(sys.argv[1]))); print(hashlib.sha256("".join(json.dumps([p, l],
    ensure_ascii=False) + "\\n" for p, l in r).encode()).hexdigest())' labels.csv

(restricted to the case's cells).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable


def digest_lines(cells: Iterable[tuple[str, str | None]]) -> list[str]:
    return [json.dumps([path, label], ensure_ascii=False) + "\n" for path, label in sorted(cells, key=lambda c: c[0])]


def label_digest(cells: Iterable[tuple[str, str | None]]) -> str:
    """sha256 (hex) of `cells` ((path, label) pairs) as described above."""
    h = hashlib.sha256()
    for line in digest_lines(cells):
        h.update(line.encode("utf-8"))
    return h.hexdigest()


__all__ = ["digest_lines", "label_digest"]
