"""Text from the user's files made safe to print on a terminal."""
from __future__ import annotations

import re

# What must not reach a terminal raw: C0/C1 control characters (escape sequences, newlines, carriage
# returns that rewrite the line), Unicode line/paragraph separators, bidirectional overrides that
# reorder what is shown ("Trojan Source"), and lone surrogates (undecodable bytes in a file name,
# which would make `print` raise UnicodeEncodeError). Letters of any script are left as they are.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    return repr(match.group())[1:-1]  # \n, \x1b, \u202e, \udcff: what Python itself would show


def printable(text: object) -> str:
    """`text` (a file name, a path, a reason naming one) with control characters escaped as
    Python writes them, so a name cannot move the cursor, recolour or rewrite the terminal."""
    return _UNSAFE.sub(_escape, str(text))
