"""The ``pyscheduler`` command line, without running the demo (tests/test_readme.py does)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pyscheduler
from pyscheduler import cli


@pytest.fixture
def demo_calls(monkeypatch):
    """Replace the demo by a stand-in so no scheduler starts; records its durations."""
    calls: list[float] = []

    def fake_demo(duration: float) -> int:
        calls.append(duration)
        return 0

    monkeypatch.setattr(cli, "run_demo", fake_demo)
    return calls


def test_parser_requires_a_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.make_parser().parse_args([])
    assert info.value.code == 2
    assert "command" in capsys.readouterr().err


def test_parser_rejects_an_unknown_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.make_parser().parse_args(["serve"])
    assert info.value.code == 2
    assert "serve" in capsys.readouterr().err


def test_demo_duration_defaults_to_15_seconds():
    args = cli.make_parser().parse_args(["demo"])
    assert args.command == "demo"
    assert args.duration == 15.0


@pytest.mark.parametrize("duration", ["0", "-1", "-0.5"])
def test_non_positive_duration_exits_2_with_a_message(duration, capsys, demo_calls):
    # When the demo is asked to run for no time
    code = cli.main(["demo", "--duration", duration])

    # Then it refuses with exit code 2 and says why on stderr, starting nothing
    assert code == 2
    captured = capsys.readouterr()
    assert "--duration must be positive" in captured.err
    assert captured.out == ""
    assert demo_calls == []


@pytest.mark.parametrize("duration", ["nan", "inf"])
def test_non_finite_duration_exits_2(duration, capsys, demo_calls):
    assert cli.main(["demo", "--duration", duration]) == 2
    assert demo_calls == []


def test_a_valid_duration_reaches_the_demo(demo_calls):
    assert cli.main(["demo", "--duration", "2.5"]) == 0
    assert demo_calls == [2.5]


def test_non_numeric_duration_is_a_usage_error(capsys, demo_calls):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--duration", "soon"])
    assert info.value.code == 2
    assert "--duration" in capsys.readouterr().err
    assert demo_calls == []


def test_version_prints_the_version_and_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyscheduler {pyscheduler.__version__}"


def test_python_dash_m_runs_the_same_command_line():
    result = subprocess.run([sys.executable, "-m", "pyscheduler", "--version"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pyscheduler {pyscheduler.__version__}"
