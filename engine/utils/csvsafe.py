"""CSV files that a spreadsheet opens as text: the one writer (and reader fix-up) of the project.

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` as a formula (and tab / CR are
used to smuggle one in), so a file name or an annotator's name such as `=HYPERLINK(...)` would
become a live formula in the file a hematologist opens. Every text cell that starts with one of
those characters is written with a leading `'` (OWASP's "CSV injection" advice); numbers are
written as numbers. Reading our own files back, `unneutralise` removes exactly that prefix. So
that this is exact, a cell that starts with `'` itself, or with white space, gets the prefix too:
every value, `'=x.bmp` and a name starting with a tab included, reads back as it was written.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence

from .files import atomic_write_text

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
PREFIX = "'"


def _needs_prefix(value: str) -> bool:
    # A formula trigger; the prefix itself (so that removing one prefix on reading gives the value
    # back: `'=x.bmp` is written `''=x.bmp`); or leading white space, which readers strip.
    return value.startswith(TRIGGERS) or value.startswith(PREFIX) or value[:1].isspace()


def neutralise(value: object) -> object:
    """`value` as a spreadsheet shows it literally: text starting with a formula trigger (or with
    `'` or white space, so that `unneutralise` is exact) gets a leading `'`."""
    if isinstance(value, str) and _needs_prefix(value):
        return PREFIX + value
    return value


def unneutralise(value: str) -> str:
    """Undo `neutralise` on a cell read from a CSV: one leading `'` is removed when what follows
    needed it, nothing else (read a cell before stripping its white space)."""
    if value.startswith(PREFIX) and _needs_prefix(value[1:]):
        return value[1:]
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([neutralise(h) for h in header])
    for row in rows:
        writer.writerow([neutralise(v) for v in row])
    return buf.getvalue()


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV atomically with every text cell neutralised."""
    atomic_write_text(path, csv_text(header, rows))


__all__ = ["TRIGGERS", "neutralise", "unneutralise", "csv_text", "write_csv"]
