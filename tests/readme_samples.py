"""The code samples of README.rst, for the tests that run them.

A ``.. code-block:: python`` sample runs as it is (tests/test_readme.py), unless its first line
is ``# file: <path>``: then it is a file of an example project (a Flask app, a Django
project's ``settings.py`` or ``jobs.py``, a ``gunicorn.conf.py``), which the tests of that
integration write out with :func:`write_sample_files` and run for real. Shell commands come in
``.. code-block:: console`` samples, one ``$ command`` per line.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.rst"

__all__ = ["README", "console_commands", "python_samples", "sample_files", "write_sample_files"]

_FILE_MARK = re.compile(r"^# file: (\S+)$")


def _blocks(language: str) -> list[tuple[int, str]]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != f".. code-block:: {language}":
            continue
        body: list[str] = []
        for following in lines[number + 1:]:
            if following.strip() and not following.startswith("    "):
                break
            body.append(following[4:])
        blocks.append((number + 1, "\n".join(body).strip("\n") + "\n"))
    return blocks


def python_samples() -> list[tuple[int, str]]:
    """(line number, code) of every runnable Python sample (not a project file)."""
    return [(line, code) for line, code in _blocks("python")
            if not _FILE_MARK.match(code.splitlines()[0])]


def sample_files() -> dict[str, str]:
    """Project files given in the README: path -> text (without the ``# file:`` line)."""
    files: dict[str, str] = {}
    for _, code in _blocks("python"):
        first, _, rest = code.partition("\n")
        match = _FILE_MARK.match(first)
        if match:
            files[match.group(1)] = rest
    return files


def write_sample_files(directory: Path, prefix: str = "") -> list[Path]:
    """Write the README's project files whose path starts with ``prefix`` under ``directory``."""
    written = []
    for path, text in sample_files().items():
        if path.startswith(prefix):
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.append(target)
    return written


def console_commands() -> list[str]:
    """Every ``$ command`` line of the README's console samples."""
    return [line[2:].strip() for _, block in _blocks("console")
            for line in block.splitlines() if line.startswith("$ ")]
