"""pyscheduler.terminal: untrusted text made printable, instants with their distance from now,
aligned tables."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta, timezone

import pytest

from pyscheduler import terminal

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, shown", [
    ("report", "report"),
    ("naïve café ✓", "naïve café ✓"),
    ("red \x1b[31mtext", "red \\x1b[31mtext"),
    ("title \x1b]0;pwned\x07", "title \\x1b]0;pwned\\x07"),
    ("two\nlines\r", "two\\nlines\\r"),
    ("tab\tand del\x7f and c1 \x9b", "tab\\tand del\\x7f and c1 \\x9b"),
    ("bidi \u202eevil", "bidi \\u202eevil"),
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("line\u2028sep", "line\\u2028sep"),
    ("no-break\u00a0space", "no-break\u00a0space"),
])
def test_printable_escapes_what_acts_on_the_terminal(text, shown):
    assert terminal.printable(text) == shown


def test_printable_output_holds_no_control_or_format_character():
    # Every code point but the surrogates, in one string
    every = "".join(chr(code) for code in range(0x110000) if not 0xD800 <= code < 0xE000)
    shown = terminal.printable(every)
    left = {unicodedata.category(char) for char in shown}
    assert left.isdisjoint({"Cc", "Cf", "Zl", "Zp", "Co", "Cn"})


@pytest.mark.parametrize("offset, text", [
    (timedelta(0), "now"),
    (timedelta(milliseconds=999), "now"),
    (timedelta(seconds=5), "in 5 s"),
    (timedelta(seconds=-59.5), "59 s ago"),
    (timedelta(minutes=5, seconds=59), "in 5 min"),
    (timedelta(hours=-3, minutes=-1, seconds=-30), "3 h 1 min ago"),
    (timedelta(hours=2), "in 2 h"),
    (timedelta(days=2, hours=23, minutes=59), "in 2 d 23 h"),
    (timedelta(days=-1, minutes=-5), "1 d ago"),
    (timedelta(days=1125), "in 1125 d"),
])
def test_ago_is_whole_units_the_largest_two_for_days_and_hours(offset, text):
    assert terminal.ago(NOW + offset, NOW) == text


def test_when_is_utc_iso_with_z_and_the_distance():
    paris = timezone(timedelta(hours=1))
    at = datetime(2030, 1, 1, 13, 5, tzinfo=paris)  # 12:05 UTC
    assert terminal.when(at, NOW) == "2030-01-01T12:05:00Z (in 5 min)"
    assert terminal.when(None, NOW) == "-"
    later = NOW + timedelta(milliseconds=250)
    assert terminal.instant(later) == "2030-01-01T12:00:00Z"
    assert terminal.instant(later, precise=True) == "2030-01-01T12:00:00.250Z"
    assert terminal.instant(NOW, precise=True) == "2030-01-01T12:00:00Z"


def test_seconds():
    assert [terminal.seconds(value) for value in (None, 0.0123, 9.9994, 95.25)] == [
        "-", "0.012 s", "9.999 s", "95.2 s"]


def test_clip_marks_the_cut():
    assert terminal.clip("abcdef", 6) == "abcdef"
    assert terminal.clip("abcdefg", 6) == "abcde…"


def test_table_aligns_columns_without_trailing_blanks():
    text = terminal.table(["NAME", "STATUS", "NOTE"],
                          [["a", "scheduled", "x"], ["longer-name", "paused", ""]])
    assert text.splitlines() == [
        "NAME         STATUS     NOTE",
        "a            scheduled  x",
        "longer-name  paused",
    ]


def test_ago_of_nothing_is_a_dash():
    assert terminal.ago(None, NOW) == "-"


HEADERS = ["NAME", "SCHEDULE", "NOTE"]
#: natural widths: 20 + 2 + 20 + 2 + 40 = 84
ROWS = [["n" * 20, "s" * 20, "e" * 40], ["short", "every 1h", "-"]]


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_a_fitted_table_that_fits_is_the_table():
    assert terminal.table(HEADERS, ROWS, 84, give_way=(1, 0)) == terminal.table(HEADERS, ROWS)


def test_a_fitted_table_clips_the_last_column_to_what_is_left():
    # When the width leaves the last column 30 of its 40 characters
    text = terminal.table(HEADERS, ROWS, 74, give_way=(1, 0))

    # Then only that column is cut, marked, and the line is exactly as wide as asked
    first, second = text.splitlines()[1:]
    assert first == "n" * 20 + "  " + "s" * 20 + "  " + "e" * 29 + "…"
    assert second.split() == ["short", "every", "1h", "-"]
    assert widest(text) == 74


def test_the_columns_give_way_in_order_once_the_last_is_down_to_20():
    # When the last column's 20 are not enough: the second column gives way first...
    text = terminal.table(HEADERS, ROWS, 60, give_way=(1, 0))
    assert text.splitlines()[1] == "n" * 20 + "  " + "s" * 15 + "…  " + "e" * 19 + "…"
    assert widest(text) == 60

    # ... down to 12 characters, and only then the first
    text = terminal.table(HEADERS, ROWS, 50, give_way=(1, 0))
    assert text.splitlines()[1] == "n" * 13 + "…  " + "s" * 11 + "…  " + "e" * 19 + "…"
    assert text.splitlines()[2] == "short" + " " * 11 + "every 1h" + " " * 6 + "-"
    assert widest(text) == 50


def test_a_fitted_table_is_wider_than_asked_only_when_every_column_is_down_to_its_floor():
    text = terminal.table(HEADERS, ROWS, 10, give_way=(1, 0))
    assert text.splitlines()[1] == "n" * 11 + "…  " + "s" * 11 + "…  " + "e" * 19 + "…"
    # a column that does not give way keeps its width; short cells are never cut
    text = terminal.table(HEADERS, ROWS, 10, give_way=(1,))
    assert text.splitlines()[1] == "n" * 20 + "  " + "s" * 11 + "…  " + "e" * 19 + "…"
    assert terminal.table(["A", "LONGER HEADER"], [["x", "y"]], 5) == "A  LONGER HEADER\nx  y"
