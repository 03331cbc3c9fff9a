"""Text for a terminal: aligned tables (fitted to a width if asked), instants with how long ago
or from now, and untrusted text made safe to print.

What the operator commands show is read from a backend that anything may have written: a
job name or an error text holding terminal escape sequences must print as visible text, not
move the cursor, retitle the window or hide the rest of the line. Everything from a backend
goes through :func:`printable` before it is shown. This module only formats; it reads
nothing (not even the terminal's width: the caller passes it), and the JSON output
(``--json``) does not use it (``json`` escapes control characters itself).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone
from typing import Optional, Sequence

__all__ = ["ago", "clip", "instant", "printable", "seconds", "table", "when"]

#: Unicode categories that print nothing or act on the terminal: controls (C0, DEL, C1 with
#: ESC among them), format characters (bidirectional overrides that reorder the line, zero
#: widths) and the line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})

#: Gap between table columns.
_GAP = "  "
#: Narrowest the last column of a fitted table is clipped to, however narrow the width: an
#: error text cut shorter says nothing, and a line that wraps is better than that.
_LAST_COLUMN_MINIMUM = 20
#: Narrowest a column that gives way is clipped to (its header's width if that is more): a
#: name cut shorter no longer tells the rows apart.
_GIVE_WAY_MINIMUM = 12

#: (seconds in the unit, its name), largest first, for :func:`ago`.
_UNITS = ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s"))
#: Units shown with the next smaller one ("2 d 5 h", "1 h 30 min"): "2 d" alone would be a
#: day off, where "5 min" is close enough.
_WITH_NEXT_UNIT = frozenset({"d", "h"})


def printable(text: str) -> str:
    """``text`` with every control, format or unassigned character written as its escape
    (``\\x1b``, ``\\n``, ``\\u202e``), so that it prints as one line of visible text."""
    if text.isprintable():  # the common case, and what str.isprintable allows is safe
        return text
    return "".join(_escape(char) if unicodedata.category(char) in _UNSAFE_CATEGORIES else char
                   for char in text)


def _escape(char: str) -> str:
    return repr(char)[1:-1] if ord(char) < 0x10000 else f"\\U{ord(char):08x}"


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked by an ellipsis."""
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def instant(value: Optional[datetime], precise: bool = False) -> str:
    """An instant as UTC ISO 8601 with a ``Z``, to the second (``2026-12-02T10:00:00Z``;
    ``precise``: to the millisecond when it has a fraction), or ``-`` for none."""
    if value is None:
        return "-"
    utc = value.astimezone(timezone.utc)
    spec = "milliseconds" if precise and utc.microsecond else "seconds"
    return utc.isoformat(timespec=spec).replace("+00:00", "Z")


def when(value: Optional[datetime], now: datetime, precise: bool = False) -> str:
    """:func:`instant` followed by how far it is from ``now``:
    ``2026-12-02T10:00:00Z (in 5 min)``, ``... (3 h ago)``; ``-`` for none."""
    if value is None:
        return "-"
    return f"{instant(value, precise)} ({ago(value, now)})"


def ago(value: Optional[datetime], now: datetime) -> str:
    """How far ``value`` is from ``now``: ``in 5 min``, ``3 h 10 min ago``, ``in 2 d 5 h``,
    ``now`` (within a second); ``-`` for none. Parts are whole units, rounded down."""
    if value is None:
        return "-"
    delta = (value - now).total_seconds()
    left = int(abs(delta))
    if left < 1:
        return "now"
    index = next(index for index, (size, _) in enumerate(_UNITS) if left >= size)
    size, unit = _UNITS[index]
    amount, left = divmod(left, size)
    parts = [f"{amount} {unit}"]
    if unit in _WITH_NEXT_UNIT:
        smaller, smaller_unit = _UNITS[index + 1]
        if left // smaller:
            parts.append(f"{left // smaller} {smaller_unit}")
    text = " ".join(parts)
    return f"in {text}" if delta > 0 else f"{text} ago"


def seconds(value: Optional[float]) -> str:
    """A duration in seconds for people: ``0.012 s``, ``95.2 s``; ``-`` for none."""
    if value is None:
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: Optional[int] = None,
          give_way: Sequence[int] = ()) -> str:
    """``rows`` under ``headers``, each column as wide as its widest cell, two spaces apart;
    the last column is not padded (no trailing blanks). The cells must already be
    :func:`printable`.

    With ``width``, the lines are fitted to that many characters by clipping cells
    (:func:`clip`): the last column gets what the others leave, but never less than 20
    characters; where even that does not fit, the columns ``give_way`` (indices, the last
    column not among them) are clipped too, one after the other in that order, each to no
    less than 12 characters or its header. A line is wider than ``width`` only when all of
    them are down to that.
    """
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    if width is not None:
        widths = _fitted(widths, headers, width, give_way)
        rows = [[clip(cell, size) for cell, size in zip(cells, widths)] for cells in rows]
    lines = []
    for cells in (headers, *rows):
        padded = [cell.ljust(size) for cell, size in zip(cells[:-1], widths)]
        lines.append(_GAP.join([*padded, cells[-1]]).rstrip())
    return "\n".join(lines)


def _fitted(widths: list[int], headers: Sequence[str], width: int,
            give_way: Sequence[int]) -> list[int]:
    """The column widths of :func:`table` fitted to ``width``."""
    fitted = list(widths)
    last_floor = min(fitted[-1], max(_LAST_COLUMN_MINIMUM, len(headers[-1])))
    gaps = len(_GAP) * (len(fitted) - 1)
    excess = sum(fitted[:-1]) + gaps + last_floor - width
    for index in give_way:
        if excess <= 0:
            break
        floor = min(fitted[index], max(_GIVE_WAY_MINIMUM, len(headers[index])))
        cut = min(fitted[index] - floor, excess)
        fitted[index] -= cut
        excess -= cut
    left = width - sum(fitted[:-1]) - gaps
    fitted[-1] = max(min(fitted[-1], left), last_floor)
    return fitted
