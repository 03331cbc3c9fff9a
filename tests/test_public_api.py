"""The public surface: what ``pyscheduler`` exports, documents, imports, and raises."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import pyscheduler
from pyscheduler import errors

PACKAGE = Path(pyscheduler.__file__).resolve().parent
MODULE_FILES = sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__main__.py")


@pytest.mark.parametrize("name", pyscheduler.__all__)
def test_every_exported_name_is_importable(name):
    namespace: dict[str, object] = {}
    exec(f"from pyscheduler import {name}", namespace)
    assert namespace[name] is getattr(pyscheduler, name)


def test_star_import_works():
    namespace: dict[str, object] = {}
    exec("from pyscheduler import *", namespace)
    assert set(pyscheduler.__all__) <= set(namespace)


def test_all_is_sorted_without_duplicates():
    assert pyscheduler.__all__ == sorted(pyscheduler.__all__)
    assert len(pyscheduler.__all__) == len(set(pyscheduler.__all__))


def test_version_is_a_dotted_string():
    assert isinstance(pyscheduler.__version__, str)
    assert all(part.isdigit() for part in pyscheduler.__version__.split("."))


@pytest.mark.parametrize("name", [name for name in pyscheduler.__all__ if name != "__version__"])
def test_every_exported_class_and_function_has_a_docstring(name):
    value = getattr(pyscheduler, name)
    if not (inspect.isclass(value) or inspect.isfunction(value)):
        pytest.skip(f"{name} is neither a class nor a function")
    doc = (value.__doc__ or "").strip()
    assert doc, f"{name} has no docstring"
    if dataclasses.is_dataclass(value):  # @dataclass fills a missing docstring with its signature
        assert not doc.startswith(f"{name}("), f"{name} has only the generated docstring"


@pytest.mark.parametrize("path", MODULE_FILES,
                         ids=[str(path.relative_to(PACKAGE)) for path in MODULE_FILES])
def test_every_module_declares_all(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    declared = [
        node.value for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and any(isinstance(target, ast.Name) and target.id == "__all__"
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]))
    ]
    assert declared, f"{path.name} does not declare __all__"
    names = ast.literal_eval(declared[-1])
    assert all(isinstance(name, str) for name in names)
    assert len(names) == len(set(names)), f"{path.name}: duplicate names in __all__"


def imported_by(modules: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has loaded after ``import <modules>``."""
    code = (f"import sys, {modules}; "
            f"print(','.join(sorted(m for m in {names!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [name for name in result.stdout.strip().split(",") if name]


def test_import_does_not_import_redis():
    assert imported_by("pyscheduler", ("redis",)) == []


def test_import_does_not_import_the_framework_extras():
    assert imported_by("pyscheduler, pyscheduler.contrib",
                       ("django", "flask", "prometheus_client")) == []


# --- the error tree ------------------------------------------------------------------------

ERRORS = [name for name in errors.__all__ if name != "JobCancelled"]


def test_every_error_is_exported():
    assert set(errors.__all__) <= set(pyscheduler.__all__)


@pytest.mark.parametrize("name", ERRORS)
def test_every_error_derives_from_scheduler_error(name):
    error = getattr(pyscheduler, name)
    assert issubclass(error, pyscheduler.SchedulerError)
    assert issubclass(error, Exception)


def test_job_cancelled_is_a_base_exception_outside_the_tree():
    assert issubclass(pyscheduler.JobCancelled, BaseException)
    assert not issubclass(pyscheduler.JobCancelled, Exception)
    assert not issubclass(pyscheduler.JobCancelled, pyscheduler.SchedulerError)


@pytest.mark.parametrize("name, builtin", [
    ("JobNotFoundError", KeyError),
    ("ConfigError", ValueError),
    ("InvalidScheduleError", ValueError),
    ("InvalidJobError", ValueError),
    ("SchedulerStateError", RuntimeError),
])
def test_errors_mix_in_the_builtin_callers_catch(name, builtin):
    assert issubclass(getattr(pyscheduler, name), builtin)


@pytest.mark.parametrize("child, parent", [
    ("BackendUnavailableError", "BackendError"),
    ("CorruptStateError", "BackendError"),
])
def test_error_subtrees(child, parent):
    assert issubclass(getattr(pyscheduler, child), getattr(pyscheduler, parent))


def test_errors_carry_what_they_name():
    not_found = pyscheduler.JobNotFoundError("report")
    assert not_found.job_name == "report"
    assert str(not_found) == "no job named 'report' is registered"
    with pytest.raises(KeyError):
        raise not_found
    config = pyscheduler.ConfigError("lock_ttl", "must be positive")
    assert config.field == "lock_ttl" and str(config) == "lock_ttl: must be positive"
    duplicate = pyscheduler.DuplicateJobError("report")
    assert duplicate.job_name == "report" and "report" in str(duplicate)


@pytest.mark.parametrize("name, parent", [
    ("JobError", "SchedulerError"), ("JobTimeoutError", "JobError"),
    ("LockError", "SchedulerError"), ("LeaseLostError", "LockError"),
])
def test_errors_nothing_raises_are_deprecated_but_still_importable(name, parent):
    # Never raised, so no longer exported; code that named one still imports it, warned.
    assert name not in pyscheduler.__all__
    with pytest.warns(DeprecationWarning, match=f"pyscheduler.{name} is never raised"):
        error = getattr(pyscheduler, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert issubclass(error, getattr(pyscheduler, parent))
    with pytest.warns(DeprecationWarning):
        from pyscheduler.errors import LeaseLostError  # noqa: F401


def test_import_does_not_import_flask():
    # Flask is an optional extra: only pyscheduler.contrib.flask imports it
    assert imported_by("pyscheduler, pyscheduler.contrib", ("flask", "werkzeug", "click")) == []
