"""The operator's commands (``pyscheduler jobs``, ``show``, ``pause``...) through real
processes (``python -m pyscheduler``) against a live group on a real redis-server: a
scheduler in this process has registered and run the jobs, and each command is a separate
process that only reaches Redis, as an operator's shell on another machine would.

``next`` needs no backend; its expectations are worked out by hand, not by croniter.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

import pytest

from pyscheduler import (
    Control,
    CronSchedule,
    FakeClock,
    IntervalSchedule,
    Job,
    JobContext,
    JobNotFoundError,
    RedisBackend,
    RetryPolicy,
    RetryStrategy,
    Scheduler,
)
from pyscheduler.errors import InvalidScheduleError
from tests.helpers import START, Schedulers, step
from tests.readme_samples import README
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
#: generous: a loaded CI machine may take long to start a Python process
WAIT = 60.0
PREFIX = "ops"
HOUR = 3600
#: the first attempt's error: terminal escapes and markup, as untrusted text from a handler
HOSTILE = "disk \x1b[31mfull\x1b[0m <b>\u202e"

JOB_KEYS = {"name", "status", "schedule", "next_run_at", "last_run_at", "last_success_at",
            "last_error", "run_count", "failure_count", "consecutive_failures", "holder"}
ENTRY_KEYS = {"job", "scheduled_at", "attempt", "kind", "instance_id", "fence", "started_at",
              "duration", "outcome", "error"}
INSTANCE_KEYS = {"instance_id", "host", "pid", "started_at", "last_heartbeat_at", "running"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def pyscheduler(*args: str, env: Optional[dict[str, str]] = None,
                stdin: Optional[int] = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """``python -m pyscheduler ARGS`` from this worktree, with no PYSCHEDULER_* variable of
    the outer environment (only those of ``env``), nor its COLUMNS: the tables are as wide as
    on a pipe (120) unless ``env`` says."""
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith("PYSCHEDULER_") and key not in ("COLUMNS", "LINES")}
    clean["PYTHONPATH"] = str(ROOT)
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "pyscheduler", *args], env=clean, stdin=stdin,
                          capture_output=True, text=True, timeout=WAIT, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a command that failed with ``code``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


class Group:
    """A live group on the test's Redis: a stepped scheduler that ran its jobs, and an
    in-process Control to check what the commands did."""

    def __init__(self, server: RedisServer, scheduler: Scheduler, clock: FakeClock,
                 control: Control) -> None:
        self.url = server.url
        self.scheduler = scheduler
        self.clock = clock
        self.control = control

    def options(self) -> list[str]:
        return ["--redis-url", self.url, "--key-prefix", PREFIX]

    def run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """The command ``args`` with the group's options after the verb."""
        return pyscheduler(*args, *self.options(), **kwargs)  # type: ignore[arg-type]

    def json(self, *args: str) -> object:
        return json.loads(ok(self.run(*args, "--json")))

    def settle(self) -> None:
        """Let the scheduler notice what a command changed, and run what is due."""
        for _ in range(3):
            self.clock.advance(5)
            step(self.scheduler)


def fails_once(ctx: JobContext) -> None:
    if ctx.attempt == 1:
        raise RuntimeError(HOSTILE)


def start_group(server: RedisServer, schedulers: Schedulers, prefix: str,
                *jobs: Job) -> tuple[Scheduler, FakeClock, Control]:
    """A stepped scheduler of the group ``prefix`` with the job "report" (which fails each
    first attempt and succeeds on its retry) and ``jobs``, after "report" was triggered and
    both its attempts ran; and a Control on the group (closed by the caller)."""
    clock = FakeClock(START)
    scheduler = schedulers.stepped(clock, RedisBackend.from_url(server.url, key_prefix=prefix),
                                   instance_id="host-a:1")
    policy = RetryPolicy(max_retries=1, initial_interval=0.001, strategy=RetryStrategy.FIXED)
    scheduler.register(Job("report", IntervalSchedule(HOUR), fails_once, retry_policy=policy))
    for job in jobs:
        scheduler.register(job)
    scheduler.start(background=False)
    control = Control.from_url(server.url, key_prefix=prefix)
    control.trigger("report")
    for _ in range(20):
        for _ in range(3):
            clock.advance(5)
            step(scheduler)
        if len(control.history("report")) == 2:
            break
    assert len(control.history("report")) == 2
    return scheduler, clock, control


@pytest.fixture
def group(redis_server: RedisServer, schedulers: Schedulers) -> Iterator[Group]:
    # Given a scheduler of the group "ops" with two jobs: "report" failed once and then
    # succeeded on its retry, "cleanup" is paused and never ran
    scheduler, clock, control = start_group(
        redis_server, schedulers, PREFIX,
        Job("cleanup", CronSchedule("0 3 * * *", "Europe/Paris"), lambda: None, enabled=False))
    with control:
        yield Group(redis_server, scheduler, clock, control)


# -- reading the group ---------------------------------------------------------------------------


@pytest.mark.redis
def test_jobs_json_is_every_job_of_the_group_field_by_field(group):
    # When an operator lists the jobs as JSON
    jobs = group.json("jobs")

    # Then it is an array of the group's jobs, sorted, with the library's own fields
    assert isinstance(jobs, list)
    assert jobs == [job.to_dict() for job in group.control.jobs()]
    cleanup, report = jobs
    for job in jobs:
        assert JOB_KEYS <= set(job)
    assert (cleanup["name"], cleanup["status"], cleanup["schedule"]) == (
        "cleanup", "paused", "cron 0 3 * * * (Europe/Paris)")
    assert (cleanup["run_count"], cleanup["last_run_at"], cleanup["holder"]) == (0, None, None)
    assert (report["name"], report["status"], report["schedule"]) == (
        "report", "scheduled", "every 1h")
    assert (report["run_count"], report["failure_count"], report["consecutive_failures"]) == (
        2, 0, 0)
    assert report["holder"] is None
    for key in ("next_run_at", "last_run_at", "last_success_at"):
        assert ISO_UTC.match(report[key]), (key, report[key])


#: how far an instant is from now, as the tables show it
RELATIVE = r"(in \d+ (d|h|min|s)( \d+ (h|min))?|\d+ (d|h|min|s)( \d+ (h|min))? ago|now)"


def aligned(header: str, rows: list[str], titles: tuple[str, ...]) -> None:
    """Every column of ``titles`` starts, in each row, where its header does."""
    for title in titles:
        column = header.index(title)
        assert all(row[column - 2:column] == "  " and row[column] != " " for row in rows), title


@pytest.mark.redis
def test_jobs_table_is_aligned_with_the_names_and_relative_times(group):
    out = ok(group.run("jobs"))
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "STATUS", "SCHEDULE", "NEXT", "RUN", "LAST", "RUN",
                              "RUNS", "FAILURES", "LAST", "ERROR"]
    assert [row.split()[:2] for row in rows] == [["cleanup", "paused"], ["report", "scheduled"]]
    aligned(header, rows, ("STATUS", "SCHEDULE", "NEXT RUN", "LAST RUN", "RUNS", "FAILURES",
                           "LAST ERROR"))
    assert "cron 0 3 * * * (Europe/Paris)" in rows[0] and "every 1h" in rows[1]
    # times are only how far from now: no instant, and no holder column
    assert not re.search(r"\d{4}-\d\d-\d\dT", out), out
    next_run = header.index("NEXT RUN")
    last_run = header.index("LAST RUN")
    assert re.fullmatch(RELATIVE, rows[1][next_run:last_run].strip()), rows[1]
    assert rows[0][last_run:].split()[0] == "-"  # never ran


@pytest.mark.redis
def test_jobs_wide_has_the_instants_and_the_holder(group):
    out = ok(group.run("jobs", "--wide"))
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "STATUS", "SCHEDULE", "NEXT", "RUN", "LAST", "RUN",
                              "RUNS", "FAILURES", "HOLDER", "LAST", "ERROR"]
    aligned(header, rows, ("STATUS", "SCHEDULE", "NEXT RUN", "RUNS", "HOLDER"))
    next_run = group.control.job("report").next_run_at
    assert next_run is not None
    assert f"{next_run:%Y-%m-%dT%H:%M:%S}Z (" in rows[1]
    assert re.search(rf"Z \({RELATIVE}\)", rows[1]), rows[1]


@pytest.mark.redis
def test_show_json_is_the_job_with_its_history_newest_first(group):
    shown = group.json("show", "report")
    assert isinstance(shown, dict)
    history = shown.pop("history")
    assert shown == group.control.job("report").to_dict()
    retry, first = history
    for entry in history:
        assert ENTRY_KEYS <= set(entry)
        assert ISO_UTC.match(entry["started_at"]) and ISO_UTC.match(entry["scheduled_at"])
    assert (first["attempt"], first["kind"], first["outcome"]) == (1, "manual", "failed")
    assert HOSTILE in first["error"] and first["error"].startswith("RuntimeError: ")
    assert (retry["attempt"], retry["kind"], retry["outcome"], retry["error"]) == (
        2, "retry", "succeeded", "")
    assert first["instance_id"] == retry["instance_id"] == "host-a:1"
    assert first["fence"] < retry["fence"] and retry["duration"] >= 0
    assert history == [entry.to_dict() for entry in group.control.history("report")]


@pytest.mark.redis
def test_the_json_output_escapes_what_the_backend_holds(group):
    out = ok(group.run("history", "--json"))
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\u001b[31m" in out and "\\u202e" in out


@pytest.mark.redis
def test_show_prints_the_state_then_the_runs_with_control_characters_neutralised(group):
    out = ok(group.run("show", "report"))
    assert "\x1b" not in out and "\u202e" not in out
    fields = dict(re.findall(r"^([a-z ]+):\s+(.*)$", out, re.MULTILINE))
    assert fields["name"] == "report" and fields["status"] == "scheduled"
    assert fields["schedule"] == "every 1h" and fields["runs"] == "2"
    assert fields["paused"] == "no" and fields["holder"] == "-"
    runs = out.split("recent runs (newest first):\n", 1)[1].splitlines()
    assert runs[0].split()[:2] == ["STARTED", "JOB"]
    assert "retry" in runs[1] and "succeeded" in runs[1]
    assert "manual" in runs[2] and "failed" in runs[2]
    assert "RuntimeError: disk \\x1b[31mfull\\x1b[0m <b>\\u202e" in runs[2]


@pytest.mark.redis
def test_show_of_a_job_that_never_ran_says_so(group):
    out = ok(group.run("show", "cleanup"))
    assert "status:" in out and "paused" in out and out.endswith("no runs recorded\n")


@pytest.mark.redis
def test_history_lists_the_groups_runs_newest_first_and_takes_a_limit(group):
    entries = group.json("history")
    assert [(entry["job"], entry["attempt"]) for entry in entries] == [("report", 2),
                                                                       ("report", 1)]
    assert group.json("history", "report", "--limit", "1") == entries[:1]
    assert group.json("history", "cleanup") == []
    assert group.json("history", "--limit", "0") == []
    table = ok(group.run("history", "report")).splitlines()
    assert table[0].split() == ["STARTED", "JOB", "ATTEMPT", "KIND", "OUTCOME", "DURATION",
                                "ERROR"]
    assert len(table) == 3
    assert re.match(rf"{RELATIVE} +report  2  +retry  +succeeded  ", table[1]), table[1]
    assert re.match(rf"{RELATIVE} +report  1  +manual  +failed  ", table[2]), table[2]
    wide = ok(group.run("history", "report", "--wide")).splitlines()
    assert wide[0].split() == ["STARTED", "JOB", "ATTEMPT", "KIND", "OUTCOME", "DURATION",
                               "INSTANCE", "FENCE", "SCHEDULED", "FOR", "ERROR"]
    assert re.search(r"Z \(.*\)  report  2  +retry  +succeeded  .*  host-a:1  ", wide[1])
    assert re.search(r"Z \(.*\)  report  1  +manual  +failed  .*  host-a:1  ", wide[2])


@pytest.mark.redis
def test_instances_lists_the_live_schedulers(group):
    (instance,) = group.json("instances")
    assert INSTANCE_KEYS <= set(instance)
    assert instance["instance_id"] == "host-a:1" and instance["pid"] == os.getpid()
    assert instance["running"] == [] and ISO_UTC.match(instance["started_at"])
    assert ISO_UTC.match(instance["last_heartbeat_at"])
    assert instance == group.control.instances()[0].to_dict()
    header, row = ok(group.run("instances")).splitlines()
    assert header.split()[:3] == ["INSTANCE", "HOST", "PID"]
    assert row.split()[0] == "host-a:1" and str(os.getpid()) in row.split()
    assert not re.search(r"\d{4}-\d\d-\d\dT", row), row
    header, row = ok(group.run("instances", "--wide")).splitlines()
    assert row.split()[0] == "host-a:1"
    assert row.count("Z (") == 2, row  # started and last heartbeat, as instants


#: a job name, schedule and error too long for a table on a narrow terminal
LONG_NAME = "nightly-export-of-the-warehouse-tables-to-the-archive"
LONG_SCHEDULE = CronSchedule("*/15 9-17 * * MON-FRI", "America/New_York")
SHOWN_SCHEDULE = "cron */15 9-17 * * MON-FRI (America/New_York)"
LONG_ERROR = f"{HOSTILE} {'the archive did not answer; ' * 8}"
#: the long-named job's last error as the tables show it (whole, but for the clipping)
SHOWN_ERROR = "RuntimeError: disk \\x1b[31mfull\\x1b[0m <b>\\u202e the"


def fails_at_length() -> None:
    raise RuntimeError(LONG_ERROR)


@pytest.fixture
def crowded(redis_server: RedisServer, schedulers: Schedulers) -> Iterator[Group]:
    # Given a group with a job whose name, schedule and last error (hostile text first) are
    # long, and a job "slow" that host-a:1 is running now
    release = schedulers.event()
    scheduler, clock, control = start_group(
        redis_server, schedulers, PREFIX, Job(LONG_NAME, LONG_SCHEDULE, fails_at_length),
        Job("slow", IntervalSchedule(HOUR), lambda: release.wait(WAIT)))
    with control:
        control.trigger(LONG_NAME)
        for _ in range(20):
            clock.advance(5)
            step(scheduler)
            if control.history(LONG_NAME):
                break
        control.trigger("slow")
        for _ in range(20):
            clock.advance(5)
            scheduler.run_pending()  # not step: "slow" returns only at teardown
            if control.job("slow").holder:
                break
        assert control.job(LONG_NAME).last_error.endswith(LONG_ERROR)
        assert control.job("slow").holder == "host-a:1"
        yield Group(redis_server, scheduler, clock, control)


def cells(row: str) -> list[str]:
    """A table row's cells (none of the test's holds two spaces in a row)."""
    return re.split(r"  +", row)


@pytest.mark.redis
@pytest.mark.parametrize("columns", [120, 240])
def test_the_jobs_table_fits_the_terminals_width(crowded, columns):
    # When an operator lists the jobs on a terminal of that width
    out = ok(crowded.run("jobs", env={"COLUMNS": str(columns)}))

    # Then the long row takes it exactly, its error clipped to what is left; no line is wider
    header, *rows = out.splitlines()
    assert max(len(line) for line in out.splitlines()) == columns
    (long_row,) = [row for row in rows if row.startswith(LONG_NAME[:11])]
    assert len(long_row) == columns
    error = long_row[header.index("LAST ERROR"):]
    assert error.endswith("…") and len(error) >= 20
    assert SHOWN_ERROR.startswith(error[:-1]) or error[:-1].startswith(SHOWN_ERROR)
    # And the control characters print as escapes
    assert "\x1b" not in out and "\u202e" not in out
    name, _, schedule = cells(long_row)[:3]
    if columns == 240:  # room for the name and the schedule, and more of the error
        assert (name, schedule) == (LONG_NAME, SHOWN_SCHEDULE)
        assert error.startswith(SHOWN_ERROR)
    else:  # the schedule gives way first, down to 12 characters, then the name
        assert schedule == "cron */15 9…"
        assert name.endswith("…") and LONG_NAME.startswith(name[:-1]) and len(name) >= 12
    # the holder is not in the table
    assert "HOLDER" not in header and "host-a:1" not in out
    (slow,) = [row for row in rows if row.startswith("slow ")]
    assert cells(slow)[1] == "running"


@pytest.mark.redis
def test_jobs_wide_is_every_cell_whole_and_the_holder(crowded):
    # When an operator asks for the wide table, on a narrow terminal
    out = ok(crowded.run("jobs", "--wide", env={"COLUMNS": "80"}))

    # Then it is not fitted: names and schedules are whole, the error cut at 60 characters
    header, *rows = out.splitlines()
    (long_row,) = [row for row in rows if row.startswith(LONG_NAME)]
    assert cells(long_row)[2] == SHOWN_SCHEDULE
    error = long_row[header.index("LAST ERROR"):]
    assert len(error) == 60 and error.endswith("…") and error.startswith(SHOWN_ERROR)
    assert "\x1b" not in out and "\u202e" not in out
    # And the instance running "slow" is its holder
    (slow,) = [row for row in rows if row.startswith("slow ")]
    assert slow[header.index("HOLDER"):].split()[0] == "host-a:1"
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(", slow), slow


@pytest.mark.redis
def test_the_history_table_fits_the_terminals_width(crowded):
    # When an operator lists the group's runs on a terminal 100 wide
    out = ok(crowded.run("history", env={"COLUMNS": "100"}))

    # Then the long-named job's run is as wide as that, its name and error clipped
    header, *rows = out.splitlines()
    assert header.split() == ["STARTED", "JOB", "ATTEMPT", "KIND", "OUTCOME", "DURATION",
                              "ERROR"]
    assert max(len(line) for line in out.splitlines()) == 100
    (long_row,) = [row for row in rows if "failed" in row and "RuntimeError" in row
                   and LONG_NAME[:11] in row]
    assert len(long_row) == 100 and long_row.endswith("…")
    job = cells(long_row)[1]
    assert job.endswith("…") and LONG_NAME.startswith(job[:-1])
    assert "\x1b" not in out and "\u202e" not in out

    # And --wide has the whole name, the instance and the escaped error cut at 60
    wide = ok(crowded.run("history", "--wide", env={"COLUMNS": "100"}))
    (long_row,) = [row for row in wide.splitlines() if LONG_NAME in row]
    assert "  host-a:1  " in long_row and long_row.endswith("…")
    assert long_row[wide.splitlines()[0].index("ERROR"):].startswith(SHOWN_ERROR)
    assert "\x1b" not in wide and "\u202e" not in wide

    # And show's recent runs are the same tables
    shown = ok(crowded.run("show", LONG_NAME, env={"COLUMNS": "100"}))
    runs = shown.split("recent runs (newest first):\n", 1)[1].splitlines()
    assert runs[0].split() == header.split() and len(runs[1]) == 100
    shown = ok(crowded.run("show", LONG_NAME, "--wide"))
    assert "  host-a:1  " in shown.split("recent runs (newest first):\n", 1)[1]


def test_wide_and_json_do_not_go_together():
    result = pyscheduler("jobs", "--wide", "--json")
    assert result.returncode == 2 and "not allowed with" in result.stderr


@pytest.mark.redis
def test_an_empty_group_says_so(group):
    assert ok(pyscheduler("jobs", "--redis-url", group.url, "--key-prefix", "nobody")) == (
        f"no jobs in the group at {group.url} (key prefix 'nobody')\n")
    assert json.loads(ok(pyscheduler("instances", "--json", "--redis-url", group.url,
                                     "--key-prefix", "nobody"))) == []


# -- operating it -------------------------------------------------------------------------------


@pytest.mark.redis
def test_pause_and_resume_reach_the_scheduler(group):
    # When an operator pauses the job
    paused = group.json("pause", "report")

    # Then the group has it paused, and so has the scheduler that runs it
    assert paused["status"] == "paused" and paused["paused"] is True
    assert group.control.job("report").paused
    group.settle()
    assert group.scheduler.get_job("report").metadata.status.value == "paused"

    # And resuming it undoes that
    out = ok(group.run("resume", "report"))
    assert out.startswith("report: resumed; status scheduled, next run 20")
    assert not group.control.job("report").paused


@pytest.mark.redis
def test_trigger_runs_the_job_once_more(group):
    out = ok(group.run("trigger", "report"))
    assert out.startswith("report: triggered; status scheduled")
    for _ in range(20):
        group.settle()
        if len(group.control.history("report")) == 4:
            break
    # (its first attempt fails, as every first attempt of it does, and its retry succeeds)
    assert group.control.job("report").run_count == 4
    assert [entry.kind for entry in group.control.history("report")] == [
        "retry", "manual", "retry", "manual"]


@pytest.mark.redis
def test_remove_with_yes_removes_the_job_and_its_history(group):
    assert group.json("remove", "report", "--yes") == {"name": "report", "removed": True}
    with pytest.raises(JobNotFoundError):
        group.control.job("report")
    assert [job.name for job in group.control.jobs()] == ["cleanup"]


@pytest.mark.redis
def test_remove_without_yes_refuses_when_stdin_is_not_a_terminal(group):
    line = one_error_line(group.run("remove", "report"), 2)
    assert line == ("pyscheduler remove: error: not removing 'report' without confirmation: "
                    "stdin is not a terminal; pass --yes to remove it")
    assert group.control.job("report").name == "report"


def run_on_a_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """The command with a pseudo-terminal as stdin, typing ``answer``; (exit code, stderr)."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode() + b"\n")
        result = pyscheduler(*args, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    return result.returncode, result.stderr


@pytest.mark.redis
def test_remove_asks_on_a_terminal_and_removes_on_yes(group):
    code, stderr = run_on_a_terminal(["remove", "report", *group.options()], "y")
    assert code == 0, stderr
    assert "Remove job 'report', its state and its run history" in stderr
    assert "[y/N]" in stderr
    assert [job.name for job in group.control.jobs()] == ["cleanup"]


@pytest.mark.redis
def test_remove_asks_on_a_terminal_and_keeps_the_job_otherwise(group):
    code, stderr = run_on_a_terminal(["remove", "report", *group.options()], "n")
    assert code == 1
    assert stderr.rstrip().endswith("pyscheduler remove: error: 'report' not removed")
    assert group.control.job("report").name == "report"


UNKNOWN_NAME_COMMANDS = [["show"], ["history"], ["pause"], ["resume"], ["trigger"],
                         ["remove", "--yes"], ["remove"]]


@pytest.mark.redis
@pytest.mark.parametrize("command", UNKNOWN_NAME_COMMANDS, ids=" ".join)
def test_an_unknown_name_exits_1_with_one_line_naming_it(group, command):
    verb, *flags = command
    line = one_error_line(group.run(verb, "no-such-job", *flags), 1)
    assert line.startswith(f"pyscheduler {verb}: error: no job named 'no-such-job' in the "
                           f"group at {group.url} (key prefix 'ops')"), line
    assert line.endswith("(key prefix 'ops')")
    assert [job.name for job in group.control.jobs()] == ["cleanup", "report"]


GROUP_COMMANDS = [["jobs"], ["show", "report"], ["history"], ["history", "report"],
                  ["instances"], ["pause", "report"], ["resume", "report"],
                  ["trigger", "report"], ["remove", "report", "--yes"]]


@pytest.mark.parametrize("command", GROUP_COMMANDS, ids=" ".join)
def test_an_unreachable_server_exits_1_with_one_line_naming_its_address(command):
    # Given a port nothing listens on
    port = free_port()

    # When a command is pointed at it
    result = pyscheduler(*command, "--json", "--redis-url", f"redis://127.0.0.1:{port}/0")

    # Then it says which address it could not reach, in one line, with nothing on stdout
    line = one_error_line(result, 1)
    assert line.startswith(f"pyscheduler {command[0]}: error: cannot reach Redis at "), line
    assert f"127.0.0.1:{port}" in line
    assert result.stdout == ""


@pytest.mark.redis
def test_a_wrong_password_is_one_line_too(redis_server_factory):
    server = redis_server_factory(password="secret")
    result = pyscheduler("jobs", "--redis-url", f"redis://:wrong@127.0.0.1:{server.port}/0")
    line = one_error_line(result, 1)
    assert "authentication failed for Redis at" in line and str(server.port) in line
    assert ":wrong@" not in line  # the address is given without its credentials


@pytest.mark.redis
@pytest.mark.parametrize("command", GROUP_COMMANDS, ids=" ".join)
def test_the_environment_names_the_group_for_every_command(group, command):
    # When the connection comes only from the environment
    env = {"PYSCHEDULER_REDIS_URL": group.url, "PYSCHEDULER_KEY_PREFIX": PREFIX}
    result = pyscheduler(*command, "--json", env=env)

    # Then the command works on the group
    document = json.loads(ok(result))
    if command[0] in ("show", "pause", "resume", "trigger"):
        assert document["name"] == "report"
    if command[0] == "jobs":
        assert [job["name"] for job in document] == ["cleanup", "report"]


@pytest.mark.redis
def test_options_win_over_the_environment(group):
    env = {"PYSCHEDULER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "PYSCHEDULER_KEY_PREFIX": "elsewhere"}
    jobs = json.loads(ok(pyscheduler("jobs", "--json", *group.options(), env=env)))
    assert [job["name"] for job in jobs] == ["cleanup", "report"]


@pytest.mark.redis
def test_the_default_key_prefix_is_pyscheduler(group):
    # The group of this test has the prefix "ops": under the default one there is nothing.
    jobs = json.loads(ok(pyscheduler("jobs", "--json", "--redis-url", group.url)))
    assert jobs == []


BAD_ARGUMENTS = [
    ["jobs", "extra"],
    ["show"],
    ["pause"],
    ["history", "--limit", "-1"],
    ["history", "--limit", "many"],
    ["show", "report", "--limit", "1.5"],
    ["jobs", "--colour"],
    ["jobs", "--redis-url", "nosuchscheme://localhost"],
    ["jobs", "--redis-url", ""],
    ["jobs", "--key-prefix", ""],
    ["next"],
    ["next", "0 * * * *", "--count", "0"],
    ["next", "0 * * * *", "--after", "yesterday"],
]


@pytest.mark.parametrize("argv", BAD_ARGUMENTS, ids=" ".join)
def test_bad_arguments_exit_2(argv):
    result = pyscheduler(*argv)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("verb", ["jobs", "show", "history", "instances", "pause", "resume",
                                  "trigger", "remove"])
def test_each_commands_help_lists_the_connection_options(verb):
    out = ok(pyscheduler(verb, "--help"))
    assert "--redis-url URL" in out and "--key-prefix PREFIX" in out and "--json" in out
    assert "PYSCHEDULER_REDIS_URL" in out


# -- pyscheduler next ---------------------------------------------------------------------------


def next_json(*args: str) -> list[str]:
    document = json.loads(ok(pyscheduler("next", *args, "--json")))
    assert isinstance(document, dict)
    return document["next"]


NEXT_CASES = {
    "hourly": (["0 * * * *", "--after", "2030-01-01T00:30:00Z", "--count", "3"],
               ["2030-01-01T01:00:00.000+00:00", "2030-01-01T02:00:00.000+00:00",
                "2030-01-01T03:00:00.000+00:00"]),
    # an offset of 5:30: the top of each hour in Kolkata is half past in UTC
    "half-hour-zone": (["0 * * * *", "--tz", "Asia/Kolkata", "--after",
                        "2030-01-01T00:00:00+00:00", "--count", "2"],
                       ["2030-01-01T00:30:00.000+00:00", "2030-01-01T01:30:00.000+00:00"]),
    # Berlin skips 02:00-03:00 on 2030-03-31: 02:30 runs once, at 03:00 CEST (01:00 UTC)
    "dst-gap": (["30 2 * * *", "--tz", "Europe/Berlin", "--after", "2030-03-30T00:00:00Z",
                 "--count", "3"],
                ["2030-03-30T01:30:00.000+00:00", "2030-03-31T01:00:00.000+00:00",
                 "2030-04-01T00:30:00.000+00:00"]),
    "seconds-field": (["*/20 * * * * *", "--after", "2030-01-01T00:00:00Z", "--count", "3"],
                      ["2030-01-01T00:00:20.000+00:00", "2030-01-01T00:00:40.000+00:00",
                       "2030-01-01T00:01:00.000+00:00"]),
    "last-day": (["0 0 L 2 *", "--after", "2030-01-01T00:00:00Z", "--count", "3"],
                 ["2030-02-28T00:00:00.000+00:00", "2031-02-28T00:00:00.000+00:00",
                  "2032-02-29T00:00:00.000+00:00"]),
    "every": (["every:90", "--after", "2030-01-01T00:00:00Z", "--count", "2"],
              ["2030-01-01T00:01:30.000+00:00", "2030-01-01T00:03:00.000+00:00"]),
    "once-a-year-macro": (["@yearly", "--after", "2030-06-01T00:00:00Z", "--count", "1"],
                          ["2031-01-01T00:00:00.000+00:00"]),
}


@pytest.mark.parametrize("case", NEXT_CASES)
def test_next_prints_the_occurrences_as_worked_out_by_hand(case):
    args, expected = NEXT_CASES[case]
    assert next_json(*args) == expected


def test_next_is_the_library_schedule():
    # The command computes what the scheduler would: CronSchedule.next_after, step by step
    schedule = CronSchedule("*/7 9-17 * * MON-FRI", "America/New_York")
    after = datetime(2030, 3, 8, 21, 0, tzinfo=timezone.utc)
    expected, current = [], after
    for _ in range(20):
        current = schedule.next_after(current)
        expected.append(current.isoformat(timespec="milliseconds"))
    assert next_json("*/7 9-17 * * MON-FRI", "--tz", "America/New_York", "--after",
                     "2030-03-08T21:00:00Z", "--count", "20") == expected


def test_next_table_shows_utc_and_local_times():
    out = ok(pyscheduler("next", "0 3 * * *", "--tz", "Europe/Paris", "--after",
                         "2030-07-01T00:00:00Z", "--count", "2"))
    title, header, *rows = out.splitlines()
    assert title == "next 2 of cron 0 3 * * * (Europe/Paris):"
    assert header.split() == ["UTC", "LOCAL", "(Europe/Paris)"]
    assert rows[0].startswith("2030-07-01T01:00:00Z (")
    assert rows[0].endswith("2030-07-01T03:00:00+02:00")
    assert rows[1].startswith("2030-07-02T01:00:00Z (")


def test_next_without_after_starts_from_now():
    before = datetime.now(timezone.utc)
    (first,) = next_json("every:3600", "--count", "1")
    delta = (datetime.fromisoformat(first) - before).total_seconds()
    assert 3600 <= delta <= 3600 + WAIT


BAD_EXPRESSIONS = ["61 * * * *", "0 0 31 2 *", "* * *", "every:soon", "every:-5", "every:0"]


@pytest.mark.parametrize("expr", BAD_EXPRESSIONS)
def test_a_bad_expression_exits_2_with_the_parsers_message(expr):
    line = one_error_line(pyscheduler("next", expr), 2)
    assert line.startswith("pyscheduler next: error: ")
    if not expr.startswith("every:soon"):
        try:
            (IntervalSchedule(float(expr[6:])) if expr.startswith("every:")
             else CronSchedule(expr))
        except InvalidScheduleError as exc:
            assert line == f"pyscheduler next: error: {exc}"
        else:
            pytest.fail(f"{expr!r} is valid")
    else:
        assert "every:SECONDS" in line


def test_a_bad_zone_exits_2_naming_it():
    line = one_error_line(pyscheduler("next", "0 * * * *", "--tz", "Mars/Olympus"), 2)
    assert "Mars/Olympus" in line


def test_an_interval_takes_no_zone():
    line = one_error_line(pyscheduler("next", "every:30", "--tz", "Europe/Paris"), 2)
    assert "--tz does not apply to 'every:30'" in line


# -- README.rst ------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"{title}\n{'-' * len(title)}\n")
    end = re.compile(r"^\S.*\n-{3,}$", re.MULTILINE).search(text, start + len(title) * 2 + 2)
    assert end is not None
    return text[start:end.start()]


def readme_console_lines(title: str) -> list[str]:
    """The lines of the section's console samples: ``$ command`` lines and their output."""
    return re.findall(r"^    (\S.*)$", readme_section(title), re.MULTILINE)


def sample_output(lines: list[str], command: str) -> list[str]:
    """The output the README shows under ``$ command``."""
    start = lines.index(f"$ {command}") + 1
    end = next((index for index in range(start, len(lines)) if lines[index].startswith("$ ")),
               len(lines))
    return lines[start:end]


@pytest.mark.redis
def test_the_readme_operator_examples_work_on_a_live_group(redis_server, schedulers):
    # Given a group like the README's: "shop", with "report" (failed once, then succeeded),
    # "cleanup" and a paused "digest"
    _, _, control = start_group(
        redis_server, schedulers, "shop",
        Job("cleanup", CronSchedule("0 3 * * *", "Europe/Paris"), lambda: None),
        Job("digest", CronSchedule("*/15 * * * *"), lambda: None, enabled=False))
    lines = readme_console_lines("Operating a group")
    commands = [line[2:] for line in lines if line.startswith("$ ")]
    assert len(commands) >= 15

    # When each command of the section runs in turn, as given (the README's Redis address
    # standing for the test's)
    env: dict[str, str] = {}
    outputs: dict[str, str] = {}
    with control:
        for command in commands:
            words = shlex.split(command.replace("redis://localhost:6379/0", redis_server.url))
            if words[0] == "export":
                key, _, value = words[1].partition("=")
                env[key] = value
                continue
            assert words[0] == "pyscheduler", command
            outputs[command] = ok(pyscheduler(*words[1:], env=env))

        # Then they all succeed, and did what the README says
        assert [job.name for job in control.jobs()] == ["cleanup", "digest"]
    assert env["PYSCHEDULER_KEY_PREFIX"] == "shop"
    jobs = json.loads(outputs["pyscheduler jobs --json --redis-url redis://localhost:6379/0 "
                              "--key-prefix shop"])
    assert [job["name"] for job in jobs] == ["cleanup", "digest", "report"]
    assert len(json.loads(outputs["pyscheduler show report --json"])["history"]) == 2

    # And the outputs shown are what the commands print (but for the times)
    for listing in ("pyscheduler jobs", "pyscheduler jobs --wide"):
        shown_jobs = sample_output(lines, listing)
        real_jobs = outputs[listing].splitlines()
        assert shown_jobs[0].split() == real_jobs[0].split(), listing
        for shown, real in zip(shown_jobs[1:], real_jobs[1:], strict=True):
            name, status, schedule = re.split(r"  +", real)[:3]
            assert re.split(r"  +", shown)[:3] == [name, status, schedule], listing
    expr = "pyscheduler next '0 3 * * *' --tz Europe/Paris --count 3"
    shown_next, real_next = sample_output(lines, expr), outputs[expr].splitlines()
    assert shown_next[0] == real_next[0] and shown_next[1].split() == real_next[1].split()
    assert len(shown_next) == len(real_next) == 5
    assert all(line.split()[-1].endswith("T03:00:00+01:00") or
               line.split()[-1].endswith("T03:00:00+02:00") for line in real_next[2:])
    assert json.loads(outputs["pyscheduler next every:90 --count 3 --after "
                              "2030-01-01T00:00:00Z --json"])["next"] == [
        "2030-01-01T00:01:30.000+00:00", "2030-01-01T00:03:00.000+00:00",
        "2030-01-01T00:04:30.000+00:00"]


def test_a_reader_that_goes_away_is_no_traceback():
    # Given a command whose stdout is a pipe nobody reads any more (`... | head -1`)
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith("PYSCHEDULER_")}
    clean["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen([sys.executable, "-m", "pyscheduler", "next", "every:1",
                                "--count", "1000"], env=clean, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()

    # Then it exits 1 without a word on stderr
    with process.stderr:
        stderr = process.stderr.read()
    assert process.wait(timeout=WAIT) == 1
    assert stderr == ""


@pytest.mark.redis
def test_a_name_with_terminal_escapes_is_shown_escaped(group):
    line = one_error_line(group.run("show", "\x1b[2Jgone"), 1)
    assert "\x1b" not in line and "no job named '\\x1b[2Jgone'" in line


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never answers."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_server_that_never_answers_is_an_error_once_the_urls_socket_timeout_passed(
        silent_server):
    # When a command is pointed at a server that accepts the connection and never replies,
    # with a short socket timeout in the URL (the default, 30 s, is too long for a test)
    result = pyscheduler("jobs", "--redis-url",
                         f"redis://127.0.0.1:{silent_server}/0?socket_timeout=0.3")

    # Then it gives up with one line, instead of hanging
    line = one_error_line(result, 1)
    assert line.startswith("pyscheduler jobs: error: cannot reach Redis at "), line
    assert f"127.0.0.1:{silent_server}" in line


@pytest.mark.parametrize("query, expected", [
    ("", {"socket_connect_timeout": 5.0, "socket_timeout": 30.0}),
    ("?socket_connect_timeout=2&socket_timeout=10",
     {"socket_connect_timeout": 2.0, "socket_timeout": 10.0}),
])
def test_the_commands_client_has_bounded_timeouts_which_the_url_overrides(query, expected):
    from pyscheduler.cli_operator import connection_options, open_control

    args = connection_options().parse_args(
        ["--redis-url", f"redis://127.0.0.1:{free_port()}/0{query}"])
    with open_control(args) as control:
        kwargs = control.backend._client.connection_pool.connection_kwargs
        assert {name: kwargs[name] for name in expected} == expected
