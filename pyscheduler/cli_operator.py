"""The operator's commands of ``pyscheduler``: look at a scheduler group and operate it from
any machine that reaches its Redis, with no scheduler running there.

``jobs``, ``show``, ``history`` and ``instances`` read the group; ``pause``, ``resume``,
``trigger`` and ``remove`` change it, all through :class:`~pyscheduler.Control`; ``next``
prints the next occurrences of a schedule, with no backend at all. Each command prints an
aligned table for people, or with ``--json`` one JSON document for scripts (the
``to_dict()`` of what the library returns). The tables of ``jobs``, ``history``,
``instances`` and ``show`` fit the terminal's width by default (times relative to now, long
cells clipped); ``--wide`` gives every column in full, with the UTC instants.

This module only wires the command line to the library: :mod:`pyscheduler.cli` registers
each command from :data:`COMMANDS`; another command on a group takes its options and its
Control from :func:`connection_options` and :func:`open_control`.

Exit codes: 0 done; 1 an unknown job, or a backend that cannot be reached or refused (one
line on stderr naming the job or the address, no traceback); 2 a bad command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Optional, Sequence, TypeVar

from . import terminal
from .errors import BackendError, ConfigError, InvalidScheduleError, JobNotFoundError

if TYPE_CHECKING:
    from .backends.base import InstanceInfo
    from .control import Control, HistoryEntry, JobInfo
    from .schedules import Schedule

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
    Options = argparse._ActionsContainer

__all__ = ["COMMANDS", "DEFAULT_REDIS_URL", "OPERATOR_CLIENT_OPTIONS", "connection_options",
           "open_control"]

_Item = TypeVar("_Item")

#: Exit codes (see the module docstring).
_OK, _FAILED, _USAGE = 0, 1, 2

#: Where the commands look for the group when neither --redis-url nor the environment says.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: The client settings of the commands and the dashboard: a Redis that drops packets or
#: stops answering is an error after this long, not a terminal that hangs. A URL's own
#: ``?socket_connect_timeout=``/``?socket_timeout=`` wins.
OPERATOR_CLIENT_OPTIONS: dict[str, float] = {"socket_connect_timeout": 5.0,
                                             "socket_timeout": 30.0}
_URL_VARIABLE, _PREFIX_VARIABLE = "PYSCHEDULER_REDIS_URL", "PYSCHEDULER_KEY_PREFIX"
_CLUSTER_VARIABLE = "PYSCHEDULER_REDIS_CLUSTER"
_DEFAULT_PREFIX = "pyscheduler"

#: Runs ``show`` lists by default, and ``history``.
_SHOW_RUNS, _HISTORY_RUNS = 10, 50
#: Widest an error text gets in a --wide table; ``show`` prints it whole.
_ERROR_WIDTH = 60
#: Width of the fitted tables when stdout is not a terminal and $COLUMNS is not set: what a
#: pipe or a file receives does not depend on the window the command was started from.
_PIPE_WIDTH = 120
#: Most occurrences ``next`` computes.
_MAX_COUNT = 1_000
_EVERY = "every:"
_EXIT_STATUS = ("exit status: 0 done; 1 no such job, or the Redis cannot be reached or "
                "refuses (one line on stderr says which); 2 bad command line")


# -- connection and output ---------------------------------------------------------------------


def connection_options() -> argparse.ArgumentParser:
    """--redis-url and --key-prefix, for every command on a group: a parent parser
    (``add_parser(..., parents=[connection_options()])``), so that the options go after the
    verb and each command's --help lists them. :func:`open_control` reads them."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("connection")
    group.add_argument("--redis-url", metavar="URL",
                       help=f"the group's Redis (default: ${_URL_VARIABLE}, else "
                       f"{DEFAULT_REDIS_URL}); redis://, rediss:// or unix://, with redis-py's "
                       "query options such as ?socket_connect_timeout=2 (default 5 s; "
                       "socket_timeout 30 s)")
    group.add_argument("--key-prefix", metavar="PREFIX",
                       help=f"the group's key prefix (default: ${_PREFIX_VARIABLE}, else "
                       f"{_DEFAULT_PREFIX})")
    group.add_argument("--cluster", action="store_true",
                       help=f"the URL names a node of a Redis Cluster (default: "
                       f"${_CLUSTER_VARIABLE} set to 1)")
    return options


def _json_option(parser: Options) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (UTC ISO 8601 times) instead of a table")


def _width() -> int:
    """Characters a table line may take: $COLUMNS if set, else the terminal's width, else
    (stdout is a pipe or a file) :data:`_PIPE_WIDTH`."""
    return shutil.get_terminal_size(fallback=(_PIPE_WIDTH, 24)).columns


def open_control(args: argparse.Namespace) -> Control:
    """The Control that the :func:`connection_options` (or the environment) name;
    ``args.key_prefix`` is set to the prefix used, for messages.

    :raises ConfigError: the URL or the prefix cannot be used (a bad command line).
    """
    from .control import Control

    # An option given empty is refused by from_url (exit 2); a variable set empty is unset.
    url = _given(args.redis_url, _URL_VARIABLE, DEFAULT_REDIS_URL)
    args.key_prefix = _given(args.key_prefix, _PREFIX_VARIABLE, _DEFAULT_PREFIX)
    cluster = args.cluster or os.environ.get(_CLUSTER_VARIABLE, "") == "1"
    return Control.from_url(url, key_prefix=args.key_prefix, cluster=cluster,
                            **OPERATOR_CLIENT_OPTIONS)


def _given(option: Optional[str], variable: str, default: str) -> str:
    return option if option is not None else os.environ.get(variable) or default


def _address(control: Control, args: argparse.Namespace) -> str:
    """Where the group is, for messages: the Redis address (no credentials) and prefix."""
    where = str(getattr(control.backend, "address", control.backend))
    return f"{where} (key prefix {_quoted(args.key_prefix)})"


def _quoted(text: str) -> str:
    """``text`` quoted for a message, its control characters escaped."""
    return terminal.printable(repr(text))


def _emit_json(document: object) -> None:
    # ensure_ascii: anything a backend held prints as escapes, never as terminal controls
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=True) + "\n")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _error(command: str, message: str) -> None:
    sys.stderr.write(f"pyscheduler {command}: error: {message}\n")


def _one_line(text: str) -> str:
    return terminal.printable(" ".join(part.strip() for part in text.splitlines() if part.strip()))


def _against_group(action: Callable[[Control, argparse.Namespace], int]
                   ) -> Callable[[argparse.Namespace], int]:
    """A command's handler: ``action`` on a Control opened from the options, closed after;
    what went wrong becomes one line on stderr and the exit code, never a traceback."""

    def handler(args: argparse.Namespace) -> int:
        try:
            control = open_control(args)
        except ConfigError as exc:  # a URL or prefix that cannot be used: the command line's
            _error(args.command, _one_line(str(exc)))
            return _USAGE
        try:
            return action(control, args)
        except JobNotFoundError as exc:
            _error(args.command, f"no job named {_quoted(exc.job_name)} in the group at "
                   f"{_address(control, args)}")
            return _FAILED
        except BackendError as exc:  # unreachable, refused (auth, ACL), or bad data there
            _error(args.command, _one_line(str(exc)))
            return _FAILED
        finally:
            control.close()

    return handler


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- rows ------------------------------------------------------------------------------------


def _text(value: Optional[str]) -> str:
    return terminal.printable(value) if value else "-"


def _failures(job: JobInfo) -> str:
    if job.consecutive_failures:
        return f"{job.failure_count} ({job.consecutive_failures} in a row)"
    return str(job.failure_count)


def _job_rows(jobs: Sequence[JobInfo], now: datetime, wide: bool) -> str:
    if wide:
        return _wide_job_rows(jobs, now)
    rows = [[terminal.printable(job.name), job.status.value, terminal.printable(job.schedule),
             terminal.ago(job.next_run_at, now), terminal.ago(job.last_run_at, now),
             str(job.run_count), _failures(job), _text(job.last_error)] for job in jobs]
    # the schedule is clipped before the name: the name is what tells the rows apart
    return terminal.table(["NAME", "STATUS", "SCHEDULE", "NEXT RUN", "LAST RUN", "RUNS",
                           "FAILURES", "LAST ERROR"], rows, _width(), give_way=(2, 0))


def _wide_job_rows(jobs: Sequence[JobInfo], now: datetime) -> str:
    rows = [[terminal.printable(job.name), job.status.value, terminal.printable(job.schedule),
             terminal.when(job.next_run_at, now), terminal.when(job.last_run_at, now),
             str(job.run_count), _failures(job), _text(job.holder),
             terminal.clip(_text(job.last_error), _ERROR_WIDTH)] for job in jobs]
    return terminal.table(["NAME", "STATUS", "SCHEDULE", "NEXT RUN", "LAST RUN", "RUNS",
                           "FAILURES", "HOLDER", "LAST ERROR"], rows)


def _history_rows(entries: Sequence[HistoryEntry], now: datetime, wide: bool) -> str:
    if wide:
        return _wide_history_rows(entries, now)
    rows = [[terminal.ago(entry.started_at, now), terminal.printable(entry.job),
             str(entry.attempt), terminal.printable(entry.kind),
             terminal.printable(entry.outcome), terminal.seconds(entry.duration),
             _text(entry.error)] for entry in entries]
    return terminal.table(["STARTED", "JOB", "ATTEMPT", "KIND", "OUTCOME", "DURATION",
                           "ERROR"], rows, _width(), give_way=(1,))


def _wide_history_rows(entries: Sequence[HistoryEntry], now: datetime) -> str:
    rows = [[terminal.when(entry.started_at, now), terminal.printable(entry.job),
             str(entry.attempt), terminal.printable(entry.kind),
             terminal.printable(entry.outcome), terminal.seconds(entry.duration),
             _text(entry.instance_id), str(entry.fence), terminal.instant(entry.scheduled_at),
             terminal.clip(_text(entry.error), _ERROR_WIDTH)] for entry in entries]
    return terminal.table(["STARTED", "JOB", "ATTEMPT", "KIND", "OUTCOME", "DURATION",
                           "INSTANCE", "FENCE", "SCHEDULED FOR", "ERROR"], rows)


def _instance_rows(instances: Sequence[InstanceInfo], now: datetime, wide: bool) -> str:
    from ._time import from_ms

    since = terminal.when if wide else terminal.ago
    rows = [[terminal.printable(info.instance_id), _text(info.host), str(info.pid),
             since(from_ms(info.started_at_ms), now),
             since(from_ms(info.last_heartbeat_ms) if info.last_heartbeat_ms else None, now),
             _text(info.library_version), str(info.max_concurrent),
             _text(", ".join(info.running))] for info in instances]
    headers = ["INSTANCE", "HOST", "PID", "STARTED", "LAST HEARTBEAT", "VERSION", "SLOTS",
               "RUNNING"]
    if wide:
        return terminal.table(headers, rows)
    # the host is clipped before the instance id, which tells the rows apart
    return terminal.table(headers, rows, _width(), give_way=(1, 0))


def _job_fields(job: JobInfo, now: datetime) -> str:
    in_flight = f"fence {job.fence}, attempt {job.attempt}" if job.holder else "-"
    fields = [
        ("name", terminal.printable(job.name)), ("status", job.status.value),
        ("schedule", terminal.printable(job.schedule)),
        ("next run", terminal.when(job.next_run_at, now)),
        ("last run", terminal.when(job.last_run_at, now)),
        ("last success", terminal.when(job.last_success_at, now)),
        ("last duration", terminal.seconds(job.last_duration)),
        ("last error", _text(job.last_error)), ("runs", str(job.run_count)),
        ("failures", str(job.failure_count)),
        ("consecutive failures", str(job.consecutive_failures)),
        ("paused", "yes" if job.paused else "no"), ("holder", _text(job.holder)),
        ("in flight", in_flight),
    ]
    width = max(len(label) for label, _ in fields) + 1
    return "\n".join(f"{label + ':':{width}} {value}" for label, value in fields)


# -- the commands that read the group -----------------------------------------------------------


def _jobs(control: Control, args: argparse.Namespace) -> int:
    return _listing(args, control.jobs(), lambda job: job.to_dict(), _job_rows,
                    f"no jobs in the group at {_address(control, args)}")


def _listing(args: argparse.Namespace, items: Sequence[_Item],
             as_dict: Callable[[_Item], dict[str, object]],
             rows: Callable[[Sequence[_Item], datetime, bool], str], empty: str) -> int:
    """A list read from the group: a JSON array, a table (``--wide`` or fitted), or the line
    ``empty``."""
    if args.json:
        _emit_json([as_dict(item) for item in items])
    else:
        _say(rows(items, _now(), args.wide) if items else empty)
    return _OK


def _show(control: Control, args: argparse.Namespace) -> int:
    job = control.job(args.name)
    history = control.history(args.name, limit=args.limit)
    if args.json:
        _emit_json({**job.to_dict(), "history": [entry.to_dict() for entry in history]})
        return _OK
    now = _now()
    _say(_job_fields(job, now))
    _say("")
    _say(f"recent runs (newest first):\n{_history_rows(history, now, args.wide)}" if history
         else "no runs recorded")
    return _OK


def _history(control: Control, args: argparse.Namespace) -> int:
    name = f" for {terminal.printable(args.name)}" if args.name else ""
    return _listing(args, control.history(args.name, limit=args.limit),
                    lambda entry: entry.to_dict(), _history_rows, f"no runs recorded{name}")


def _instances(control: Control, args: argparse.Namespace) -> int:
    return _listing(args, control.instances(), lambda info: info.to_dict(), _instance_rows,
                    f"no live instances in the group at {_address(control, args)}")


# -- the commands that change it ---------------------------------------------------------------


def _operation(name: str, done: str) -> Callable[[Control, argparse.Namespace], int]:
    """pause, resume, trigger: the Control method ``name``, then the job's state."""

    def action(control: Control, args: argparse.Namespace) -> int:
        job: JobInfo = getattr(control, name)(args.name)
        if args.json:
            _emit_json(job.to_dict())
        else:
            _say(f"{terminal.printable(job.name)}: {done}; status {job.status.value}, next run "
                 f"{terminal.when(job.next_run_at, _now())}")
        return _OK

    return action


def _remove(control: Control, args: argparse.Namespace) -> int:
    name, quoted = terminal.printable(args.name), _quoted(args.name)
    control.job(args.name)  # an unknown name says so before anything is asked
    if not args.yes:
        if not sys.stdin.isatty():
            _error("remove", f"not removing {quoted} without confirmation: stdin is not a "
                   "terminal; pass --yes to remove it")
            return _USAGE
        if not _confirm(f"Remove job {quoted}, its state and its run history from the group "
                        f"at {_address(control, args)}? [y/N] "):
            _error("remove", f"{quoted} not removed")
            return _FAILED
    control.remove(args.name)
    if args.json:
        _emit_json({"name": args.name, "removed": True})
    else:
        _say(f"{name}: removed from the group")
    return _OK


def _confirm(question: str) -> bool:
    # The question goes to stderr: stdout stays the command's output, e.g. for --json.
    sys.stderr.write(question)
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()  # "" at end of input: no
    except KeyboardInterrupt:  # Ctrl-C at the prompt is a no, not a traceback
        sys.stderr.write("\n")
        return False
    return answer.strip().lower() in ("y", "yes")


# -- pyscheduler next ----------------------------------------------------------------------------


def _parse_schedule(expr: str, tz: Optional[str]) -> Schedule:
    """The library's own schedule for ``expr``: a cron expression, or ``every:SECONDS``.

    :raises InvalidScheduleError: the parser's word on what is wrong.
    """
    from .schedules import CronSchedule, IntervalSchedule

    if not expr.startswith(_EVERY):
        return CronSchedule(expr, tz or "UTC")
    if tz is not None:
        raise InvalidScheduleError(f"--tz does not apply to {expr!r}: an interval has no "
                                   "time zone")
    text = expr[len(_EVERY):]
    try:
        every = float(text)
    except ValueError:
        raise InvalidScheduleError(f"invalid interval {expr!r}: expected every:SECONDS, "
                                   "e.g. every:30") from None
    return IntervalSchedule(every)


def _occurrences(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    found: list[datetime] = []
    current: Optional[datetime] = after
    while len(found) < count and current is not None:
        current = schedule.next_after(current)
        if current is not None:
            found.append(current)
    return found


def _next(args: argparse.Namespace) -> int:
    from ._time import iso
    from .control import describe_schedule
    from .schedules import CronSchedule

    try:
        schedule = _parse_schedule(args.expr, args.tz)
    except InvalidScheduleError as exc:
        _error("next", _one_line(str(exc)))
        return _USAGE
    now = _now()
    after = args.after or now
    found = _occurrences(schedule, after, args.count)
    local = schedule.tz if isinstance(schedule, CronSchedule) and args.tz else None
    described = describe_schedule(schedule.describe())
    if args.json:
        _emit_json({"expression": args.expr, "schedule": described,
                    "after": iso(after), "next": [iso(at) for at in found]})
        return _OK
    if not found:
        _say(f"{described}: no occurrence after {terminal.instant(after, precise=True)}")
        return _OK
    headers = ["UTC"] + ([f"LOCAL ({terminal.printable(args.tz)})"] if local else [])
    rows = [[terminal.when(at, now, precise=True)]
            + ([at.astimezone(local).isoformat()] if local else []) for at in found]
    _say(f"next {len(found)} of {described}:\n{terminal.table(headers, rows)}")
    return _OK


# -- argument types ------------------------------------------------------------------------------


def _count(text: str) -> int:
    return _bounded_int(text, 1, _MAX_COUNT)


def _limit(text: str) -> int:
    return _bounded_int(text, 0, None)


def _bounded_int(text: str, low: int, high: Optional[int]) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
    return value


def _instant_argument(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time such as "
                                         f"2030-01-01T00:00:00Z, got {text!r}") from None
    if value.utcoffset() is None:
        value = value.replace(tzinfo=timezone.utc)  # a time without offset is UTC here
    return value.astimezone(timezone.utc)


# -- registration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Command:
    """One operator command: its name, help, positional arguments and handler."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    #: For a command that prints a table fitted to the terminal, what --wide adds to it (for
    #: its help); None for one that has no such table.
    wide: Optional[str] = None

    def __call__(self, commands: Commands) -> None:
        """Add the command to ``commands`` (the top parser's subparsers)."""
        parser = commands.add_parser(self.name, help=self.help, description=self.description,
                                     epilog=_EXIT_STATUS, parents=[connection_options()])
        output = parser.add_mutually_exclusive_group()
        _json_option(output)
        if self.wide is not None:
            output.add_argument("--wide", action="store_true",
                                help=f"print every column in full: {self.wide} (default: "
                                "times relative to now, and the table fitted to $COLUMNS, "
                                f"else the terminal's width, else {_PIPE_WIDTH})")
        self.add_arguments(parser)
        parser.set_defaults(handler=self.handler)


def _job_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the job's name")


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    _job_name(parser)
    parser.add_argument("--limit", type=_limit, default=_SHOW_RUNS, metavar="N",
                        help=f"recent runs to show (default: {_SHOW_RUNS})")


def _history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?",
                        help="the job's name (default: the group's runs across jobs)")
    parser.add_argument("--limit", type=_limit, default=_HISTORY_RUNS, metavar="N",
                        help=f"runs to show, newest first (default: {_HISTORY_RUNS})")


def _remove_arguments(parser: argparse.ArgumentParser) -> None:
    _job_name(parser)
    parser.add_argument("--yes", action="store_true",
                        help="remove without asking (needed when stdin is not a terminal)")


def _add_next(commands: Commands) -> None:
    parser = commands.add_parser(
        "next", help="print the next occurrences of a cron expression or every:SECONDS",
        description="Print the next occurrences of a schedule, as the scheduler computes "
        "them: a cron expression (5 fields, or 6 with seconds first; @hourly and the other "
        "macros) or every:SECONDS. No backend is needed.")
    parser.add_argument("expr", metavar="EXPR",
                        help="a cron expression (quote it: '0 3 * * *') or every:SECONDS")
    parser.add_argument("--count", type=_count, default=5, metavar="N",
                        help=f"how many (default: 5, at most {_MAX_COUNT})")
    parser.add_argument("--tz", metavar="ZONE",
                        help="the cron expression's time zone, an IANA name such as "
                        "Europe/Paris (default: UTC); its local times are shown too")
    parser.add_argument("--after", type=_instant_argument, metavar="TIME",
                        help="start after this ISO 8601 time (UTC unless it has an offset) "
                        "instead of now")
    _json_option(parser)
    parser.set_defaults(handler=_next)


def _describe(what: str) -> str:
    return f"{what} The group is found through --redis-url and --key-prefix, or " \
           f"${_URL_VARIABLE} and ${_PREFIX_VARIABLE}."


_WIDE_RUNS = (f"UTC start times, and each run's INSTANCE, FENCE and SCHEDULED FOR; errors cut "
              f"at {_ERROR_WIDTH} characters")

#: The operator commands, in the order --help lists them; each adds its own subparser.
COMMANDS: tuple[Callable[[Commands], None], ...] = (
    _Command("jobs", "list the group's jobs with their state",
             _describe("List every job the group stores, whoever registered it: status, "
                       "schedule, next and last run, counts and the last error (with --wide, "
                       "also the instance running it now)."), _no_arguments,
             _against_group(_jobs), wide="UTC times with how far from now, and HOLDER, the "
             f"instance running the job now; errors cut at {_ERROR_WIDTH} characters"),
    _Command("show", "show one job's state and its recent runs",
             _describe("Show one job: its whole state and its recent runs."),
             _show_arguments, _against_group(_show), wide=_WIDE_RUNS),
    _Command("history", "list finished runs, newest first",
             _describe("List finished runs (attempts), newest first: one job's, or the "
                       "group's across jobs."), _history_arguments, _against_group(_history),
             wide=_WIDE_RUNS),
    _Command("instances", "list the group's live schedulers",
             _describe("List the group's live instances (started schedulers) as their last "
                       "heartbeats recorded them."), _no_arguments, _against_group(_instances),
             wide="UTC times with how long ago"),
    _Command("pause", "pause a job for the whole group",
             _describe("Pause a job for every scheduler of the group, from its next tick (a "
                       "run in flight goes on)."), _job_name,
             _against_group(_operation("pause", "paused"))),
    _Command("resume", "resume a paused job",
             _describe("Resume a paused job for every scheduler of the group."), _job_name,
             _against_group(_operation("resume", "resumed"))),
    _Command("trigger", "run a job now, once",
             _describe("Run an extra occurrence of a job now, on whichever instance that has "
                       "the job claims it first."), _job_name,
             _against_group(_operation("trigger", "triggered"))),
    _Command("remove", "remove a job, its state and its history",
             _describe("Remove a job, its state and its run history from the group (a "
                       "scheduler that registers it again re-creates it). Asks first on a "
                       "terminal (a no exits 1); elsewhere it needs --yes (exits 2 without)."),
             _remove_arguments, _against_group(_remove)),
    _add_next,
)
