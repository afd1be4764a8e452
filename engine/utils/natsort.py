"""Natural sort order ('UID_2' before 'UID_10'): the one definition every list in allblast uses."""
from __future__ import annotations

import re

_DIGITS = re.compile(r"(\d+)")


def natural_key(s: str) -> str:
    """A string that sorts naturally: digit runs are zero-padded to a fixed width, case is folded.

    A str rather than a tuple because str comparison runs in C, which keeps sorting 15,000 grid
    rows at a few milliseconds; mixed digit/letter ids (`H3`, `12`) compare consistently.
    """
    parts = _DIGITS.split(s.lower())
    parts[1::2] = [p.rjust(20, "0") for p in parts[1::2]]
    return "".join(parts)
