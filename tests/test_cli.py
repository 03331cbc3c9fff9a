"""The ``pyscheduler`` command line: ``run`` through real processes and signals, ``--help``,
and the ``demo`` options (tests/test_readme.py runs the demo itself)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

import pyscheduler
from pyscheduler import cli
from tests.readme_samples import console_commands, write_sample_files
from tests.redis_server import RedisServer, free_port


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
    assert "COMMAND" in capsys.readouterr().err


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


# -- --help ----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["demo", "--help"],
                                  ["jobs", "--help"], ["remove", "--help"],
                                  ["next", "--help"]])
def test_help_is_for_users(argv, capsys):
    # When a user asks for help
    with pytest.raises(SystemExit) as info:
        cli.main(argv)

    # Then it is plain text for them: no RST markup, no note for the library's developers
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":mod:" not in out and ":class:" not in out
    assert "Logging is configured" not in out
    assert "usage: pyscheduler" in out


def test_top_level_help_lists_the_commands_with_examples(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "run " in out and "demo " in out
    assert "examples:" in out
    assert "pyscheduler run myapp.jobs:scheduler" in out
    for command in ("jobs", "show", "history", "instances", "pause", "resume", "trigger",
                    "remove", "next"):
        assert f"    {command} " in out or f"    {command}\n" in out, command
        assert f"pyscheduler {command} " in out, command


def test_run_options_default_to_info_and_25_seconds():
    args = cli.make_parser().parse_args(["run", "app:scheduler"])
    assert (args.target, args.log_level, args.stop_timeout, args.traceback) == (
        "app:scheduler", "INFO", 25.0, False)
    assert cli.make_parser().parse_args(["run", "a:b", "--log-level", "debug"]).log_level == "DEBUG"


@pytest.mark.parametrize("timeout", ["-1", "nan", "inf"])
def test_a_bad_stop_timeout_exits_2(timeout, capsys):
    assert cli.main(["run", "app:scheduler", "--stop-timeout", timeout]) == 2
    assert "--stop-timeout" in capsys.readouterr().err


# -- pyscheduler run, through real processes -------------------------------------------------

#: generous: a loaded CI machine may take long to start a Python process
WAIT = 60.0

TARGET = '''
from pathlib import Path

from pyscheduler import IntervalSchedule, Job, JobContext, Scheduler, SchedulerConfig

OUT = Path(__file__).with_name("runs.txt")

def tick(ctx: JobContext) -> None:
    with OUT.open("a") as out:
        out.write(f"{ctx.fencing_token}\\n")

def stubborn(ctx: JobContext) -> None:
    with OUT.open("a") as out:
        out.write("stubborn\\n")
    ctx.sleep(120)  # returns as soon as the token is cancelled

scheduler = Scheduler(config=SchedulerConfig(tick_interval=0.2))
scheduler.register(Job("tick", IntervalSchedule(0.05), tick))

def make_scheduler() -> Scheduler:
    made = Scheduler(config=SchedulerConfig(tick_interval=0.2))
    made.register(Job("tick", IntervalSchedule(0.05), tick))
    return made

def make_stubborn() -> Scheduler:
    made = Scheduler(config=SchedulerConfig(tick_interval=0.2))
    made.register(Job("stubborn", IntervalSchedule(0.05), stubborn))
    return made

class Holder:
    scheduler = scheduler

holder = Holder()
'''


@pytest.fixture
def app_dir(tmp_path):
    """A directory holding ``app.py`` (the target module), the current directory of the runs."""
    (tmp_path / "app.py").write_text(TARGET, encoding="utf-8")
    return tmp_path


def console_script() -> str:
    """The installed ``pyscheduler`` script next to this interpreter (where pip puts it)."""
    script = Path(sys.executable).with_name("pyscheduler")
    if not script.exists():
        pytest.skip("the pyscheduler console script is not installed next to sys.executable")
    return str(script)


def start(directory: Path, *args: str, script: bool = False,
          env: Optional[dict[str, str]] = None) -> subprocess.Popen[str]:
    """``pyscheduler run ARGS`` in ``directory``, its stderr going to ``stderr.txt`` there."""
    command = [console_script()] if script else [sys.executable, "-m", "pyscheduler"]
    env = {key: value for key, value in (env or os.environ).items() if key != "PYTHONPATH"}
    with open(directory / "stderr.txt", "w") as stderr:
        return subprocess.Popen([*command, "run", *args], cwd=directory, env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=stderr)


def wait_for_text(path: Path, text: str, process: subprocess.Popen[str]) -> str:
    """Wait until ``path`` holds ``text`` (the process must not end first); returns the content."""
    deadline = time.monotonic() + WAIT
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        stderr = path.parent / "stderr.txt"
        assert process.poll() is None, (process.returncode, stderr.read_text())
        assert time.monotonic() < deadline, f"{path.name} never held {text!r}: {content!r}"
        time.sleep(0.05)


def finish(process: subprocess.Popen[str], directory: Path) -> tuple[int, str]:
    """Wait for the process to end; its exit code and stderr."""
    try:
        code = process.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    return code, (directory / "stderr.txt").read_text()


@pytest.mark.parametrize("target", ["app:scheduler", "app:make_scheduler", "app:holder.scheduler"])
def test_run_runs_the_jobs_and_a_sigterm_stops_it_cleanly(app_dir, target):
    # Given a scheduler process running the application's scheduler
    process = start(app_dir, target)

    # When its job has run, and the process gets SIGTERM
    wait_for_text(app_dir / "runs.txt", "\n", process)
    process.send_signal(signal.SIGTERM)

    # Then it stops gracefully, says so, and exits 0
    code, stderr = finish(process, app_dir)
    assert code == 0, stderr
    assert "SIGTERM received: stopping" in stderr
    assert "stopped cleanly" in stderr
    assert "Traceback" not in stderr
    # the jobs ran one after the other, with increasing fences
    fences = [int(line) for line in (app_dir / "runs.txt").read_text().split()]
    assert fences == sorted(fences) and len(set(fences)) == len(fences)


def test_sigint_stops_it_like_sigterm(app_dir):
    process = start(app_dir, "app:scheduler")
    wait_for_text(app_dir / "runs.txt", "\n", process)

    process.send_signal(signal.SIGINT)

    code, stderr = finish(process, app_dir)
    assert code == 0, stderr
    assert "SIGINT received: stopping" in stderr and "stopped cleanly" in stderr
    assert "KeyboardInterrupt" not in stderr


def test_the_console_script_imports_from_the_current_directory(app_dir):
    # Given the installed script, whose sys.path holds its own directory, not the current one
    process = start(app_dir, "app:scheduler", script=True)

    # Then app.py of the current directory is still found and run
    wait_for_text(app_dir / "runs.txt", "\n", process)
    process.send_signal(signal.SIGTERM)
    code, stderr = finish(process, app_dir)
    assert code == 0, stderr


def test_jobs_still_running_at_the_stop_timeout_are_reported_and_exit_1(app_dir):
    # Given a job that runs until its token is cancelled
    process = start(app_dir, "app:make_stubborn", "--stop-timeout", "0.2")
    wait_for_text(app_dir / "runs.txt", "stubborn", process)

    # When the process is asked to stop
    process.send_signal(signal.SIGTERM)

    # Then the stop says which job was still running at the deadline, and the exit code is 1
    code, stderr = finish(process, app_dir)
    assert code == 1, stderr
    assert "still running at the 0.2 s deadline" in stderr
    assert "stubborn" in stderr.rsplit("deadline", 1)[1]


def test_a_second_signal_exits_at_once(app_dir):
    # Given a graceful stop waiting (up to a minute) for a job that does not finish
    process = start(app_dir, "app:make_stubborn", "--stop-timeout", "60")
    wait_for_text(app_dir / "runs.txt", "stubborn", process)
    process.send_signal(signal.SIGTERM)
    wait_for_text(app_dir / "stderr.txt", "received: stopping", process)

    # When a second signal comes
    process.send_signal(signal.SIGTERM)

    # Then the process exits at once, as killed by that signal
    code, stderr = finish(process, app_dir)
    assert code == 128 + signal.SIGTERM, stderr
    assert "second signal (SIGTERM): exiting at once" in stderr


BAD_TARGETS = {
    "no-colon": ("app", {}, 2, "app: expected MODULE:ATTR"),
    "empty-attr": ("app:", {}, 2, "expected MODULE:ATTR"),
    "not-identifiers": ("my app:x-y", {}, 2, "expected MODULE:ATTR"),
    "missing-module": ("nowhere:scheduler", {}, 1, "no module named 'nowhere'"),
    "missing-submodule": ("app.sub:scheduler", {}, 1, "no module named 'app.sub'"),
    "missing-attr": ("app:missing", {}, 1, "module app has no attribute 'missing'"),
    "missing-nested-attr": ("app:holder.nope", {}, 1, "app:holder has no attribute 'nope'"),
    "not-a-scheduler": ("bad:value", {"bad.py": "value = 42\n"}, 1,
                        "bad:value: is an int, not a pyscheduler.Scheduler or a callable"),
    "returns-other": ("bad:make", {"bad.py": "def make():\n    return {}\n"}, 1,
                      "bad:make: returned a dict, not a pyscheduler.Scheduler"),
    "returns-none": ("bad:make", {"bad.py": "def make():\n    pass\n"}, 1,
                     "returned None, not a pyscheduler.Scheduler"),
    "factory-raises": ("bad:make", {"bad.py": "def make():\n    raise RuntimeError('no conf')\n"},
                       1, "bad:make: calling it raised RuntimeError: no conf"),
    "import-fails": ("bad:x", {"bad.py": "import not_installed_anywhere\n"}, 1,
                     "importing bad failed: ModuleNotFoundError: No module named "
                     "'not_installed_anywhere'"),
    "import-raises": ("bad:x", {"bad.py": "raise ValueError('bad\\nsetting')\n"}, 1,
                      "importing bad failed: ValueError: bad setting"),
    "syntax-error": ("bad:x", {"bad.py": "def f(:\n"}, 1, "importing bad failed: SyntaxError"),
    "start-fails": ("bad:scheduler", {"bad.py": (
        "from pyscheduler import RedisBackend, Scheduler\n"
        "scheduler = Scheduler(RedisBackend.from_url('redis://127.0.0.1:{port}/0'))\n")}, 1,
        "bad:scheduler: could not start: BackendUnavailableError: cannot reach Redis"),
}


@pytest.mark.parametrize("case", BAD_TARGETS)
def test_a_bad_target_is_one_clear_line_without_a_traceback(case, app_dir):
    # Given a target that cannot run
    target, files, expected_code, expected = BAD_TARGETS[case]
    for name, text in files.items():
        (app_dir / name).write_text(text.replace("{port}", str(free_port())), encoding="utf-8")

    # When pyscheduler run is given it
    code, stderr = finish(start(app_dir, target), app_dir)

    # Then it exits non-zero with one line on stderr naming the target and what is wrong
    assert code == expected_code, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"pyscheduler run: error: {target}: "), stderr
    assert expected in lines[0]
    assert "Traceback" not in stderr


def test_traceback_shows_where_a_factory_failed(app_dir):
    (app_dir / "bad.py").write_text("def make():\n    raise RuntimeError('no conf')\n")

    code, stderr = finish(start(app_dir, "bad:make", "--traceback"), app_dir)

    assert code == 1
    assert "Traceback" in stderr and 'bad.py", line 2, in make' in stderr
    assert stderr.splitlines()[-1] == ("pyscheduler run: error: bad:make: calling it raised "
                                       "RuntimeError: no conf")


def test_run_in_process_restores_the_signal_handlers(app_dir, monkeypatch, capsys):
    # A bad target returns at once: the handlers installed for the run are put back.
    monkeypatch.setattr(cli.logging, "basicConfig", lambda **options: None)  # pytest's logging
    monkeypatch.chdir(app_dir)
    monkeypatch.syspath_prepend(str(app_dir))
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    (app_dir / "bad_in_process.py").write_text("value = None\n")

    assert cli.main(["run", "bad_in_process:value"]) == 1

    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert "is None, not a pyscheduler.Scheduler" in capsys.readouterr().err


@pytest.mark.redis
def test_the_readme_dedicated_process_runs_its_jobs_on_redis(tmp_path, redis_server: RedisServer):
    # Given the README's jobs.py, and its command line with the test's own Redis
    write_sample_files(tmp_path, prefix="schedulerapp/")
    (line,) = [command for command in console_commands() if " run jobs:" in command]
    words = shlex.split(line)
    env = dict(os.environ)
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    env["PYSCHEDULER_REDIS_URL"] = redis_server.url
    assert words[:2] == ["pyscheduler", "run"]

    # When it runs
    directory = tmp_path / "schedulerapp"
    process = start(directory, *words[2:], script=True, env=env)
    wait_for_text(directory / "stderr.txt", "running jobs:make_scheduler", process)

    # Then its job is in Redis, for every process of the group to see, and SIGTERM stops it
    client = redis_server.client()
    try:
        assert client.smembers("{pyscheduler}:jobs") == {b"cleanup"}
    finally:
        client.close()
    process.send_signal(signal.SIGTERM)
    code, stderr = finish(process, directory)
    assert code == 0, stderr
    assert "stopped cleanly" in stderr
