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
