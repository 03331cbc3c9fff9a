"""README.rst is part of the product: every Python sample in it runs, and its commands work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_samples import README, python_samples

SAMPLES = python_samples()


def test_the_readme_has_samples():
    assert len(SAMPLES) >= 8


@pytest.mark.parametrize("line, code", SAMPLES, ids=[f"line{n}" for n, _ in SAMPLES])
def test_sample_runs(line, code, request, monkeypatch):
    if "REDIS_URL" in code:  # Redis samples run against a server of the test's own
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_server").url)
    exec(compile(code, f"README.rst:{line}", "exec"), {"__name__": "readme_sample"})


def install_commands() -> list[str]:
    """The commands README.rst's first section, "Install and try it", gives (its literal blocks)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("Install and try it\n------")
    end = re.compile(r"^\S.*\n-{3,}$", re.MULTILINE).search(text, start + 30)
    assert end is not None
    return re.findall(r"^    (\S.*)$", text[start:end.start()], re.MULTILINE)


def ci_commands() -> list[str]:
    """The command lines of .ci/run, without comments and blank lines."""
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    return [line.strip() for line in ci.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_readme_gives_two_commands_one_for_the_demo_one_for_the_tests():
    assert install_commands() == ["make demo", "make test"]
    makefile = (README.parent / "Makefile").read_text(encoding="utf-8")
    assert "\t$(venv_python) -m pyscheduler demo $(ARGS)\n" in makefile
    assert "\t$(venv_python) -m pytest $(ARGS)\n" in makefile
    assert """make test ARGS='-m "not slow"'""" in README.read_text(encoding="utf-8")


def test_readme_gives_the_commands_ci_runs():
    # CI runs the README's test command, and runs the tests no other way
    test_command = install_commands()[-1]
    commands = ci_commands()
    assert test_command in commands
    assert [command for command in commands if "pytest" in command] == []
    assert "export PYSCHEDULER_REQUIRE_REDIS=1" in commands
    assert commands.index("export PYSCHEDULER_REQUIRE_REDIS=1") < commands.index(test_command)


def test_make_test_runs_pytest_from_the_virtual_environment_with_the_args():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # Under `make test` itself, the outer make's flags, level and variables would reach this one.
    env = {key: value for key, value in os.environ.items()
           if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "VENV", "PYTHON")}
    result = subprocess.run(["make", "--no-print-directory", "-n", "test", "ARGS=-m 'not slow'"],
                            cwd=README.parent, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == ".venv/bin/python -m pytest -m 'not slow'"


def test_demo_command_runs_and_exits_by_itself():
    result = subprocess.run([sys.executable, "-m", "pyscheduler", "demo", "--duration", "7"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "job started" in result.stdout and "job succeeded" in result.stdout
    assert "job failed; will retry" in result.stdout
    # each heartbeat (at 2, 4 and 6 s) says which one it is, and its fence, which grows
    beats = re.findall(r"heartbeat #(\d+) scheduled \S+, fence (\d+)", result.stdout)
    assert len(beats) >= 2, result.stdout
    assert [int(count) for count, _ in beats] == list(range(1, len(beats) + 1))
    fences = [int(fence) for _, fence in beats]
    assert fences == sorted(fences) and len(set(fences)) == len(fences), result.stdout


def run_tests_without_redis_server(*args: str) -> subprocess.CompletedProcess[str]:
    """The test command on some tests, with no redis-server on PATH and none required."""
    path = [directory for directory in os.environ.get("PATH", "").split(os.pathsep)
            if directory and not (Path(directory) / "redis-server").exists()]
    env = {key: value for key, value in os.environ.items() if key != "PYSCHEDULER_REQUIRE_REDIS"}
    env["PATH"] = os.pathsep.join(path)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=README.parent, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_test_command_says_when_redis_tests_were_skipped_and_what_to_do():
    # When the Redis tests run on a machine without redis-server
    result = run_tests_without_redis_server("tests/backends/test_contract.py", "-k", "redis")

    # Then the run passes, skipping them, and its last lines say so, and how to run them
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.rstrip().splitlines()
    note = "\n".join(lines[-7:-1])  # just above pytest's final line
    count = re.search(r"^(\d+) Redis tests were skipped: no redis-server binary on PATH",
                      note, re.MULTILINE)
    assert count and int(count.group(1)) >= 10, result.stdout
    assert "apt-get install redis-server" in note and "brew install redis" in note
    assert "PYSCHEDULER_REQUIRE_REDIS=1" in note
    assert lines[-1].startswith(f"{count.group(1)} skipped")


def test_no_redis_note_when_no_redis_test_was_skipped():
    result = run_tests_without_redis_server("tests/backends/test_contract.py", "-k", "memory")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout
    assert "Redis test" not in result.stdout


@pytest.mark.parametrize("path", ["README.rst", "benchmarks/README.rst"])
def test_rst_renders_without_warnings(path):
    docutils_core = pytest.importorskip("docutils.core")
    text = (README.parent / path).read_text(encoding="utf-8")
    docutils_core.publish_string(text, writer="null",
                                 settings_overrides={"report_level": 2, "halt_level": 2})
