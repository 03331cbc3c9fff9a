"""The ``pyscheduler`` command: ``run MODULE:ATTR``, ``demo``, ``dashboard``, and the
operator's commands (``jobs``, ``show``, ``pause``... in :mod:`pyscheduler.cli_operator`).

``pyscheduler run`` makes a dedicated scheduler process out of any application's
:class:`~pyscheduler.Scheduler`: it imports the target, starts it, and turns SIGTERM or
SIGINT into a graceful :meth:`~pyscheduler.Scheduler.stop`. ``pyscheduler demo`` runs a short
demonstration on the in-memory backend. This module is not an API: it only wires the command
line to the library, one entry of ``_COMMANDS`` per command.

Logging is configured here and only here: a library never configures handlers on import.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
import threading
import traceback
from datetime import timedelta
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from .cli_operator import COMMANDS as OPERATOR_COMMANDS
from .cli_operator import OPERATOR_CLIENT_OPTIONS
from .foreground import StopSignals

if TYPE_CHECKING:
    from .scheduler import Scheduler

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["main", "make_parser"]

_log = logging.getLogger(__name__)

#: Exit codes: 1 when the target cannot be loaded or started (or a stop left runs behind),
#: 2 for a command line argparse would refuse too.
_FAILED, _USAGE = 1, 2

_DESCRIPTION = """\
Cron, interval and one-time jobs for Python processes: every occurrence runs once across all
the processes that share a backend."""

_EPILOG = """\
examples:
  pyscheduler run myapp.jobs:scheduler     run the scheduler myapp/jobs.py defines
  pyscheduler run myapp.jobs:make_scheduler --log-level DEBUG
  pyscheduler demo --duration 5            a 5-second demo on the in-memory backend
  pyscheduler dashboard --redis-url redis://localhost:6379/0   the web dashboard
  python -m pyscheduler run ...            the same without the console script

operating a group (on its Redis; no scheduler needed here):
  export PYSCHEDULER_REDIS_URL=redis://localhost:6379/0   (or --redis-url URL after the
  export PYSCHEDULER_KEY_PREFIX=shop                        command; --key-prefix PREFIX)
  pyscheduler jobs                         every job: status, next and last run, holder
  pyscheduler jobs --json                  the same as one JSON document, for scripts
  pyscheduler show report                  one job's state and its recent runs
  pyscheduler history [report] --limit 20  finished runs, newest first
  pyscheduler instances                    the live schedulers of the group
  pyscheduler pause report                 pause it for the whole group (resume: undo)
  pyscheduler resume report
  pyscheduler trigger report               run it now, once, wherever it is claimed first
  pyscheduler remove report --yes          remove it (asks first without --yes)
  pyscheduler next '0 3 * * *' --tz Europe/Paris   when a cron expression fires
  pyscheduler next every:90 --count 3

exit status: 0 done, 1 unknown job or backend unreachable/refusing (one line on stderr),
2 bad command line.

'pyscheduler COMMAND --help' describes each command."""

_RUN_DESCRIPTION = """\
Run a scheduler of your application in this process, as a dedicated scheduler process:
import MODULE (the current directory is importable), take ATTR from it, start it, and run its
jobs until SIGTERM or SIGINT (Ctrl-C), which stop it gracefully: running jobs get up to
--stop-timeout seconds to finish, then their runs are handed back to the backend for another
instance to recover. A second signal exits at once.

ATTR is a pyscheduler.Scheduler, or a callable (a factory function, a class) returning one;
a dotted path (MODULE:obj.scheduler) reaches into objects. The module must not start the
scheduler itself."""

_RUN_EPILOG = """\
exit status:
  0  stopped after every running job finished
  1  the target could not be imported, was not a scheduler, or could not start (one line on
     stderr says why; --traceback shows where); or jobs were still running at the deadline
  2  bad command line

examples:
  pyscheduler run myapp.jobs:scheduler
  pyscheduler run myapp.jobs:make_scheduler --stop-timeout 10 --log-level WARNING
  cd myproject && pyscheduler run jobs:scheduler       (jobs.py in myproject/)"""

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser, kept apart from :func:`main` so it can be tested and documented.

    Each command is added by one function of :data:`_COMMANDS`, which sets its ``handler``
    (called with the parsed arguments, returning the exit code).
    """
    from . import __version__

    parser = argparse.ArgumentParser(prog="pyscheduler", description=_DESCRIPTION,
                                     epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pyscheduler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, title="commands",
                                     metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the process exit code."""
    args = make_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # here, where a closed pipe can still be told apart
    except BrokenPipeError:
        # The reader of stdout went away (`pyscheduler history | head -3`): no traceback for
        # that. stdout now points to devnull, or the interpreter's own flush at exit fails too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _FAILED
    return code


def _add_run(commands: Commands) -> None:
    run = commands.add_parser("run", help="run your application's scheduler until SIGTERM",
                              description=_RUN_DESCRIPTION, epilog=_RUN_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("target", metavar="MODULE:ATTR",
                     help="where the scheduler is, e.g. myapp.jobs:scheduler")
    run.add_argument("--log-level", type=str.upper, choices=_LEVELS, default="INFO",
                     metavar="LEVEL", help=f"log level on stderr: {', '.join(_LEVELS)} "
                     "(default: INFO)")
    run.add_argument("--stop-timeout", type=float, default=25.0, metavar="SECONDS",
                     help="how long a graceful stop waits for running jobs (default: 25)")
    run.add_argument("--traceback", action="store_true",
                     help="print the traceback when the target cannot be loaded or started")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if not math.isfinite(args.stop_timeout) or args.stop_timeout < 0:
        print("pyscheduler run: --stop-timeout must be a finite number of seconds >= 0",
              file=sys.stderr)
        return _USAGE
    return run_scheduler(args.target, log_level=args.log_level,
                         stop_timeout=args.stop_timeout, show_traceback=args.traceback)


def _add_demo(commands: Commands) -> None:
    demo = commands.add_parser("demo", help="run a short demo on the in-memory backend",
                               description="Run a few jobs of every kind on the in-memory "
                               "backend, printing each start and finish, then stop.")
    demo.add_argument("--duration", type=float, default=15.0,
                      help="seconds to run before a graceful stop (default: 15)")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    if not math.isfinite(args.duration) or args.duration <= 0:
        print("pyscheduler demo: --duration must be positive and finite", file=sys.stderr)
        return _USAGE
    return run_demo(args.duration)




# -- pyscheduler run -------------------------------------------------------------------------


class _TargetError(Exception):
    """The target cannot be used; ``str()`` is the one line shown to the user.

    :param code: the exit code it deserves.
    """

    def __init__(self, target: str, reason: str, code: int = _FAILED) -> None:
        super().__init__(f"{target}: {reason}")
        self.code = code


def run_scheduler(target: str, *, log_level: str = "INFO", stop_timeout: float = 25.0,
                  show_traceback: bool = False) -> int:
    """Load the scheduler ``target`` names, run it until SIGTERM/SIGINT, stop it gracefully.

    :param target: ``"module:attr"``.
    :param log_level: a :mod:`logging` level name for the console handler.
    :param stop_timeout: seconds :meth:`~pyscheduler.Scheduler.stop` waits for running jobs.
    :param show_traceback: print the traceback of a load or start failure, not just a line.
    :returns: the exit code.
    """
    from .errors import SchedulerError

    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # The console script's sys.path holds its own directory, not the current one; the
    # application is expected to be importable from where the command is run (gunicorn too).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    # Installed before the import: a signal while the application loads still stops cleanly.
    signals = StopSignals()
    signals.install()
    try:
        try:
            scheduler = _load_scheduler(target)
        except _TargetError as exc:
            return _report_failure("pyscheduler run: error: ", exc, show_traceback, exc.code)
        if signals.received is not None:
            _log.info("%s received before the scheduler started: not starting it",
                      signals.received)
            return 0
        try:
            scheduler.start()
        except SchedulerError as exc:
            return _report_failure(f"pyscheduler run: error: {target}: could not start: ",
                                   exc, show_traceback, _FAILED, describe=True)
        count = len(scheduler.jobs())
        _log.info("running %s (pid %d, %d job%s); SIGTERM or Ctrl-C stops it gracefully",
                  target, os.getpid(), count, "" if count == 1 else "s")
        signals.wait()
        return _stop(scheduler, signals.received or "a signal", stop_timeout)
    finally:
        signals.restore()


def _stop(scheduler: Scheduler, why: str, stop_timeout: float) -> int:
    _log.info("%s received: stopping, waiting up to %g s for running jobs (a second signal "
              "exits at once)", why, stop_timeout)
    report = scheduler.stop(timeout=stop_timeout)
    if report.completed:
        _log.info("stopped cleanly: no job was left running")
        return 0
    _log.warning("stopped with jobs still running at the %g s deadline, their tokens "
                 "cancelled and their runs handed back for another instance to recover: %s",
                 stop_timeout, ", ".join(report.still_running))
    return _FAILED


def _report_failure(prefix: str, exc: BaseException, show_traceback: bool, code: int,
                    describe: bool = False) -> int:
    if show_traceback:
        cause = exc.__cause__ if isinstance(exc, _TargetError) and exc.__cause__ else exc
        traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
    print(prefix + (_describe(exc) if describe else _one_line(str(exc))), file=sys.stderr)
    return code


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _describe(exc: BaseException) -> str:
    message = _one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _a(obj: object) -> str:
    """``obj``'s type, with its article: "an int", "a dict", "None"."""
    if obj is None:
        return "None"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _load_scheduler(target: str) -> Scheduler:
    """The :class:`Scheduler` ``target`` (``"module:attr"``) names, or a :class:`_TargetError`."""
    module_name, attr_path = _split_target(target)
    found = _resolve(_import(module_name, target), module_name, attr_path, target)
    return _as_scheduler(found, target)


def _split_target(target: str) -> tuple[str, str]:
    module_name, colon, attr_path = target.partition(":")
    if not (colon and _dotted(module_name) and _dotted(attr_path)):
        raise _TargetError(target, "expected MODULE:ATTR, e.g. myapp.jobs:scheduler", _USAGE)
    return module_name, attr_path


def _dotted(path: str) -> bool:
    return all(part.isidentifier() for part in path.split("."))


def _import(module_name: str, target: str) -> object:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing target is "not found"; a module the target imports that is missing
        # is the target's own failure, and the message must name it.
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise _TargetError(target, f"no module named {missing!r} (from {os.getcwd()} "
                               "or the installed packages)") from exc
        raise _TargetError(target, f"importing {module_name} failed: {_describe(exc)}") from exc
    except Exception as exc:  # whatever the module raises at import
        raise _TargetError(target, f"importing {module_name} failed: {_describe(exc)}") from exc


def _resolve(module: object, module_name: str, attr_path: str, target: str) -> object:
    found, where, walked = module, f"module {module_name}", []
    for part in attr_path.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise _TargetError(target, f"{where} has no attribute {part!r}") from None
        except Exception as exc:  # a property or module __getattr__ that fails
            raise _TargetError(target, f"getting {part!r} from {where} raised "
                               f"{_describe(exc)}") from exc
        walked.append(part)
        where = f"{module_name}:{'.'.join(walked)}"
    return found


def _as_scheduler(found: object, target: str) -> Scheduler:
    from .scheduler import Scheduler

    if isinstance(found, Scheduler):
        return found
    if not callable(found):
        raise _TargetError(target, f"is {_a(found)}, not a pyscheduler.Scheduler or a "
                           "callable returning one")
    try:
        made = found()
    except Exception as exc:
        raise _TargetError(target, f"calling it raised {_describe(exc)}") from exc
    if not isinstance(made, Scheduler):
        raise _TargetError(target, f"returned {_a(made)}, not a pyscheduler.Scheduler")
    return made


# -- pyscheduler demo ------------------------------------------------------------------------


def run_demo(duration: float) -> int:
    """Run a few jobs of every kind for ``duration`` seconds, printing each start and finish."""
    from . import (
        CronSchedule,
        IntervalSchedule,
        Job,
        JobContext,
        OnceSchedule,
        RetryPolicy,
        RetryStrategy,
        Scheduler,
        SchedulerConfig,
        SystemClock,
    )

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S")
    scheduler = Scheduler(config=SchedulerConfig(tick_interval=1.0, max_concurrent=4,
                                                 lock_ttl=10, lock_refresh_interval=3))
    attempts: dict[str, int] = {}

    def say(text: str) -> None:
        # One write per line: print() writes the text and the newline apart, and the log
        # lines of other threads can land in between.
        sys.stdout.write(text + "\n")

    beats = [0]
    beats_lock = threading.Lock()  # handlers run on worker threads

    def heartbeat(ctx: JobContext) -> None:
        with beats_lock:
            beats[0] += 1
            count = beats[0]
        say(f"  heartbeat #{count} scheduled {ctx.scheduled_at:%H:%M:%S}, "
            f"fence {ctx.fencing_token}")

    def flaky(ctx: JobContext) -> None:
        attempts[ctx.scheduled_at.isoformat()] = ctx.attempt
        if ctx.attempt < 3:
            raise RuntimeError(f"simulated failure on attempt {ctx.attempt}")
        say(f"  flaky succeeded on attempt {ctx.attempt}")

    def slow(ctx: JobContext) -> None:
        if not ctx.sleep(30):
            say(f"  slow noticed cancellation: {ctx.cancel_reason}")

    now = SystemClock().now()
    scheduler.register(Job("heartbeat", IntervalSchedule(2.0), heartbeat))
    scheduler.register(Job("cron-every-5s", CronSchedule("*/5 * * * * *"),
                           lambda: say("  cron job: on every fifth second")))
    scheduler.register(Job("once", OnceSchedule(now + timedelta(seconds=3)),
                           lambda: say("  one-time job ran")))
    scheduler.register(Job("flaky", OnceSchedule(now + timedelta(seconds=1)), flaky,
                           retry_policy=RetryPolicy(max_retries=3, initial_interval=1.0,
                                                    strategy=RetryStrategy.FIXED)))
    scheduler.register(Job("slow", OnceSchedule(now + timedelta(seconds=2)), slow, timeout=1.5))
    print(f"pyscheduler demo: running for {duration:g} s (Ctrl-C stops early)")
    scheduler.start()
    try:
        threading.Event().wait(duration)
    except KeyboardInterrupt:
        print("interrupted")
    report = scheduler.stop(timeout=5)
    for job in scheduler.jobs():
        meta = job.metadata
        print(f"{job.name:14} {meta.status.value:9} runs={meta.run_count} "
              f"failures={meta.failure_count} last_error={meta.last_error!r}")
    print("stopped cleanly" if report.completed else f"still running: {report.still_running}")
    return 0


# -- pyscheduler dashboard ---------------------------------------------------------------------

_DASHBOARD_DESCRIPTION = """\
Serve the web dashboard of a scheduler group on Redis: its jobs, their run history, the live
instances; pause, resume, run now and remove. It listens on 127.0.0.1 by default; on any
other address only with a password in $PYSCHEDULER_DASHBOARD_PASSWORD (HTTP basic auth,
user "admin"; put TLS in front). SIGTERM or Ctrl-C stops it."""


def _add_dashboard_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]
                           ) -> None:
    dashboard = commands.add_parser(
        "dashboard", help="serve the web dashboard of a group on Redis",
        description=_DASHBOARD_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    url = os.environ.get("PYSCHEDULER_REDIS_URL")
    dashboard.add_argument("--redis-url", default=url, required=url is None, metavar="URL",
                           help="the group's Redis (default: $PYSCHEDULER_REDIS_URL)")
    dashboard.add_argument("--key-prefix", metavar="PREFIX",
                           default=os.environ.get("PYSCHEDULER_KEY_PREFIX", "pyscheduler"),
                           help="the group's key prefix (default: $PYSCHEDULER_KEY_PREFIX, "
                           "else pyscheduler)")
    dashboard.add_argument("--cluster", action="store_true",
                           default=os.environ.get("PYSCHEDULER_REDIS_CLUSTER", "") == "1",
                           help="the URL names a node of a Redis Cluster (default: "
                           "$PYSCHEDULER_REDIS_CLUSTER set to 1)")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default: 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080,
                           help="port to listen on, 0 for any free one (default: 8080)")
    dashboard.add_argument("--read-only", action="store_true",
                           help="show the group without the buttons that change it")


def _add_dashboard(commands: Commands) -> None:
    _add_dashboard_command(commands)
    commands.choices["dashboard"].set_defaults(handler=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard ``args`` describe until SIGTERM/SIGINT; returns the exit code."""
    from .contrib.dashboard import make_server
    from .control import Control
    from .errors import ConfigError

    if not 0 <= args.port <= 65535:
        print("pyscheduler dashboard: --port must be 0 to 65535", file=sys.stderr)
        return _USAGE
    try:
        control = Control.from_url(args.redis_url, key_prefix=args.key_prefix,
                                   cluster=args.cluster, **OPERATOR_CLIENT_OPTIONS)
    except ConfigError as exc:
        print(f"pyscheduler dashboard: error: {_one_line(str(exc))}", file=sys.stderr)
        return _USAGE
    with control, StopSignals() as signals:
        try:
            server = make_server(control, args.host, args.port, read_only=args.read_only)
        except ConfigError as exc:
            print(f"pyscheduler dashboard: error: {_one_line(str(exc))}", file=sys.stderr)
            return _USAGE
        except OSError as exc:
            print(f"pyscheduler dashboard: error: cannot listen on {args.host}:{args.port}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return _FAILED
        with server:
            serving = threading.Thread(target=server.serve_forever, name="pyscheduler-dashboard")
            serving.start()
            print(f"pyscheduler dashboard: the group {args.key_prefix!r} at "
                  f"http://{args.host}:{server.server_port}/ (SIGTERM or Ctrl-C stops)",
                  file=sys.stderr, flush=True)
            signals.wait()
            server.shutdown()
            serving.join()
    return 0


#: Every command, in the order --help lists them: a function that adds its subparser (and
#: sets its handler). A new command is one more entry here.
_COMMANDS: tuple[Callable[[Commands], None], ...] = (_add_run, _add_demo, *OPERATOR_COMMANDS,
                                                    _add_dashboard)
