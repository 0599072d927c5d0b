"""Plain-text output of the operator commands: aligned tables and UTC times."""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence


def when(ts: float | None) -> str:
    """``2026-12-07 04:15:26Z``, or ``-`` for no time."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Left-aligned columns two spaces apart, for every ``list`` command. The header is bold on
    a terminal (unless ``NO_COLOR`` is set); piped output is plain text."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [list(header), *cells]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    top = line(header)
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        top = f"\x1b[1m{top}\x1b[0m"
    print(top)
    for row in cells:
        print(line(row))
