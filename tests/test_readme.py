"""README.rst is part of the product: every Python sample in it runs, and its commands work."""

from __future__ import annotations

import re
import subprocess
import sys

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


def test_readme_gives_the_commands_ci_runs():
    text = README.read_text(encoding="utf-8")
    assert "python -m pyscheduler demo" in text
    assert re.search(r"^    python -m pytest$", text, re.MULTILINE)
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^python -m pytest$", ci, re.MULTILINE)


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
    assert fences == sorted(fences) and len(set(fences)) == len(fences)


@pytest.mark.parametrize("path", ["README.rst", "benchmarks/README.rst"])
def test_rst_renders_without_warnings(path):
    docutils_core = pytest.importorskip("docutils.core")
    text = (README.parent / path).read_text(encoding="utf-8")
    docutils_core.publish_string(text, writer="null",
                                 settings_overrides={"report_level": 2, "halt_level": 2})
