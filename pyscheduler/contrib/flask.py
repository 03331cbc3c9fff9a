"""Flask integration: one :class:`~pyscheduler.Scheduler` per application, configured from
``app.config``, started in each process that serves the application and nowhere else.

:class:`FlaskScheduler` follows Flask's extension pattern (``FlaskScheduler(app)`` or
``init_app(app)`` in a factory); its decorators may come before or after ``init_app`` and
register the job on every application the extension serves. Each handler runs inside its
application's context. A ``flask pyscheduler`` command group lists the jobs and runs a
dedicated scheduler process. This module is the ``flask`` extra: ``import pyscheduler`` never
imports it.

Where the scheduler starts (``PYSCHEDULER_AUTOSTART``, on by default):

- under gunicorn or uWSGI, in each worker, also when the application is preloaded in the
  master (see :func:`pyscheduler.process.start_in_workers`);
- under the ``flask`` command, only for ``flask run``, and with the reloader only in the
  serving child, never in the watcher process;
- in any other process, at ``init_app``; if ``app.run()`` later makes this process the
  reloader's watcher (``app.run(debug=True)`` in a script), it stops it there.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Optional, TypeVar

try:
    import click
    from flask import Flask, current_app, has_app_context
    from flask.cli import AppGroup, ScriptInfo
    from flask.helpers import get_debug_flag
    from werkzeug.serving import is_running_from_reloader
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("pyscheduler.contrib.flask needs Flask: "
                      "pip install 'pyscheduler[flask]'") from exc

from .._time import Duration, to_seconds
from ..clock import Clock
from ..config import SchedulerConfig
from ..errors import BackendError, ConfigError, SchedulerStateError
from ..foreground import StopSignals
from ..job import (
    Handler,
    Job,
    JobMetadata,
    around_handler,
    check_job_options,
    metadata_from_state,
)
from ..observability import Logger, MetricsCollector
from ..process import current_server, start_in_workers, stop_at_exit
from ..scheduler import Scheduler
from ..schedules import CronSchedule, IntervalSchedule, OnceSchedule, Schedule
from ..shutdown import ShutdownReport

__all__ = ["DEFAULT_STOP_TIMEOUT", "EXTENSION_KEY", "FlaskScheduler"]

F = TypeVar("F", bound=Callable[..., object])

#: The key of the extension's state in ``app.extensions``.
EXTENSION_KEY = "pyscheduler"

#: Settings read here rather than by :class:`SchedulerConfig` (as ``PYSCHEDULER_<NAME>``).
_OWN_SETTINGS = ("autostart", "stop_timeout")
#: Below gunicorn's 30 s graceful timeout, so that the worker is not killed mid-stop.
DEFAULT_STOP_TIMEOUT = 25.0

_log = logging.getLogger("pyscheduler.flask")


@dataclass(frozen=True)
class _JobSpec:
    """A decorated function, kept to register it on applications initialised later."""

    name: str
    func: Handler
    schedule: Callable[[SchedulerConfig], Schedule]  # the app's config gives the cron zone
    options: dict[str, object]


@dataclass
class _AppState:
    """What ``app.extensions["pyscheduler"]`` holds."""

    extension: FlaskScheduler
    scheduler: Scheduler
    config: SchedulerConfig
    autostart: bool
    stop_timeout: float
    started: bool = False


class FlaskScheduler:
    """Runs scheduled jobs for Flask applications, one :class:`~pyscheduler.Scheduler` each.

    Settings come from ``app.config``: every :class:`~pyscheduler.SchedulerConfig` field as
    ``PYSCHEDULER_<FIELD>`` (``PYSCHEDULER_BACKEND_TYPE``, ``PYSCHEDULER_REDIS_URL``...), plus
    ``PYSCHEDULER_AUTOSTART`` (default ``True``; ``False`` starts nothing: call
    :meth:`start`, or run ``flask pyscheduler run``) and ``PYSCHEDULER_STOP_TIMEOUT`` (seconds
    a graceful stop waits for running handlers, default 25).

    :param app: an application to initialise now; or call :meth:`init_app` later, once per
        application.
    :param clock: passed to every scheduler built (tests pass a ``FakeClock``).
    :param logger: passed to every scheduler built (default: the ``pyscheduler`` logger).
    :param metrics: passed to every scheduler built.
    """

    def __init__(self, app: Optional[Flask] = None, *, clock: Optional[Clock] = None,
                 logger: Optional[Logger] = None,
                 metrics: Optional[MetricsCollector] = None) -> None:
        self.app = app
        self._clock = clock
        self._logger = logger
        self._metrics = metrics
        self._specs: list[_JobSpec] = []
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"FlaskScheduler(apps={sorted(app.name for app in self._apps)}, " \
               f"jobs={[spec.name for spec in self._specs]})"

    # -- applications ------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Build ``app``'s scheduler from its config, register the jobs decorated so far, add
        the ``flask pyscheduler`` commands and, with ``PYSCHEDULER_AUTOSTART``, start it where
        this process serves the application.

        :raises ConfigError: a ``PYSCHEDULER_*`` setting is invalid; the error names the key.
        :raises SchedulerStateError: ``app`` was already initialised.
        """
        if EXTENSION_KEY in app.extensions:
            raise SchedulerStateError(f"the Flask app {app.name!r} already has a pyscheduler "
                                      "extension: call init_app() once per application")
        config, autostart, stop_timeout = _read_settings(app)
        scheduler = Scheduler.from_config(config, logger=self._logger, metrics=self._metrics,
                                          clock=self._clock)
        state = _AppState(self, scheduler, config, autostart, stop_timeout)
        with self._lock:
            for spec in self._specs:
                scheduler.register(_job_for(app, state, spec))
            app.extensions[EXTENSION_KEY] = state
            self._apps.add(app)
        app.cli.add_command(_make_cli(app, state))
        if autostart:
            self._autostart(app, state)

    def _autostart(self, app: Flask, state: _AppState) -> None:
        reason = _reason_not_to_start()
        if reason is not None:
            _log.debug("pyscheduler: not starting the scheduler of %r: %s", app.name, reason)
            return
        start_in_workers(state.scheduler, stop_timeout=state.stop_timeout)
        state.started = True  # now, or in each worker after the fork
        if current_server().server is None:
            _stop_if_app_run_watches(app, state)

    def scheduler_for(self, app: Flask) -> Scheduler:
        """The scheduler of ``app``.

        :raises SchedulerStateError: this extension did not initialise ``app``.
        """
        return self._state_of(app).scheduler

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler of the application at hand: the one given to the constructor; else,
        inside an application context, the current application's; else the only application
        initialised so far.

        :raises SchedulerStateError: none of these applies (no application, or several and
            no application context), or the current application is not this extension's.
        """
        return self._state_of(self._resolve_app()).scheduler

    def _resolve_app(self) -> Flask:
        if self.app is not None:
            return self.app
        if has_app_context():
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            return app
        apps = list(self._apps)
        if len(apps) == 1:
            return apps[0]
        if not apps:
            raise SchedulerStateError("FlaskScheduler: no application initialised yet; call "
                                      "init_app(app) first")
        raise SchedulerStateError(
            f"FlaskScheduler serves {len(apps)} applications "
            f"({', '.join(sorted(a.name for a in apps))}): use scheduler_for(app), or "
            "ask inside an application context")

    def _state_of(self, app: Flask) -> _AppState:
        state = app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, _AppState) or state.extension is not self:
            raise SchedulerStateError(f"this FlaskScheduler did not initialise the Flask app "
                                      f"{app.name!r}: call init_app(app) first")
        return state

    # -- starting and stopping ---------------------------------------------------------------

    def start(self, app: Optional[Flask] = None, *, background: bool = True) -> Scheduler:
        """Start the application's scheduler in this process, now (for
        ``PYSCHEDULER_AUTOSTART = False``: tests, scripts).

        :param app: the application (default: as for :attr:`scheduler`).
        :param background: ``False`` leaves the ticking to the caller (see
            :meth:`Scheduler.start`); ``True`` also stops it gracefully at interpreter exit.
        :returns: the started scheduler.
        :raises SchedulerStateError: it was already started.
        """
        state = self._state_of(app if app is not None else self._resolve_app())
        state.scheduler.start(background=background)
        state.started = True
        if background:
            stop_at_exit(state.scheduler, state.stop_timeout)
        return state.scheduler

    def stop(self, app: Optional[Flask] = None,
             timeout: Optional[Duration] = None) -> ShutdownReport:
        """Stop the application's scheduler gracefully.

        :param timeout: how long to wait for running handlers (default:
            ``PYSCHEDULER_STOP_TIMEOUT``).
        """
        state = self._state_of(app if app is not None else self._resolve_app())
        return state.scheduler.stop(state.stop_timeout if timeout is None else timeout)

    # -- decorators --------------------------------------------------------------------------

    def cron(self, expr: str, name: Optional[str] = None, *, tz: Optional[str] = None,
             **options: object) -> Callable[[F], F]:
        """Decorator: run the function on a cron schedule, in ``tz`` (default: each
        application's ``PYSCHEDULER_TIMEZONE``). See :meth:`Scheduler.cron`.

        :raises InvalidScheduleError: ``expr`` or ``tz`` is invalid.
        :raises InvalidJobError: an unknown option, or an invalid job.
        """
        CronSchedule(expr, tz or "UTC")  # a bad expression fails here, not at init_app
        return self._decorator(lambda config: CronSchedule(expr, tz or config.timezone),
                               name, options)

    def every(self, interval: Duration, name: Optional[str] = None, *,
              start_at: Optional[datetime] = None, **options: object) -> Callable[[F], F]:
        """Decorator: run the function every ``interval`` (seconds or ``timedelta``), at
        ``start_at + k * interval``. See :meth:`Scheduler.every`."""
        schedule = IntervalSchedule(interval, start_at)
        return self._decorator(lambda config: schedule, name, options)

    def once(self, run_at: datetime, name: Optional[str] = None,
             **options: object) -> Callable[[F], F]:
        """Decorator: run the function once at ``run_at``. See :meth:`Scheduler.once`."""
        schedule = OnceSchedule(run_at)
        return self._decorator(lambda config: schedule, name, options)

    def _decorator(self, schedule: Callable[[SchedulerConfig], Schedule], name: Optional[str],
                   options: dict[str, object]) -> Callable[[F], F]:
        check_job_options(options)

        def register(func: F) -> F:
            spec = _JobSpec(name or f"{func.__module__}.{func.__qualname__}", func, schedule,
                            dict(options))
            # Validated now, even with no application yet: a bad option fails at import.
            Job(spec.name, schedule(SchedulerConfig.default()), func,
                **options)  # type: ignore[arg-type]
            with self._lock:
                for app in list(self._apps):
                    state = self._state_of(app)
                    state.scheduler.register(_job_for(app, state, spec))
                self._specs.append(spec)
            return func

        return register


def _job_for(app: Flask, state: _AppState, spec: _JobSpec) -> Job:
    def in_app_context(call: Callable[[], object]) -> object:
        with app.app_context():
            return call()

    handler = around_handler(spec.name, spec.func, in_app_context)
    return Job(spec.name, spec.schedule(state.config), handler,
               **spec.options)  # type: ignore[arg-type]


# -- where to start ----------------------------------------------------------------------------

def _reason_not_to_start() -> Optional[str]:
    """Why this process must not start a scheduler, or ``None`` when it should.

    Under the ``flask`` command the application is loaded for every command, but only
    ``flask run`` serves it. With the reloader, ``flask run`` loads it in two processes: the
    watcher, which only restarts the other, and the serving child, which Werkzeug marks with
    ``WERKZEUG_RUN_MAIN=true``.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.find_object(ScriptInfo) is None:
        return None  # not under the flask command: gunicorn, uWSGI, a script...
    if ctx.command.name != "run":
        return f"{ctx.command_path!r} does not serve the application"
    reload = ctx.params.get("reload")
    if reload is None:  # what flask run decides by default
        reload = get_debug_flag()
    if reload and not is_running_from_reloader():
        return "this is the reloader's watcher process; the serving child starts it"
    return None


def _stop_if_app_run_watches(app: Flask, state: _AppState) -> None:
    """Make ``app.run()`` stop the scheduler when it turns this process into the reloader's
    watcher (``app.run(debug=True)`` in a script).

    The script built the application, and so started its scheduler, before ``app.run()``
    starts the reloader: the watcher serves nothing, and the serving child it spawns runs the
    script again and starts a scheduler of its own. Only ``app.run()`` can tell the two apart.
    """
    serve = app.run

    def run(host: Optional[str] = None, port: Optional[int] = None,
            debug: Optional[bool] = None, load_dotenv: bool = True,
            **options: object) -> None:
        if _becomes_reloader_watcher(app, debug, options):
            _log.info("pyscheduler: app.run() starts the reloader; its serving child runs the "
                      "jobs of %r, and this watcher process stops its scheduler", app.name)
            state.scheduler.stop(timeout=state.stop_timeout)
        serve(host, port, debug, load_dotenv, **options)

    functools.update_wrapper(run, serve)
    app.run = run  # type: ignore[method-assign]


def _becomes_reloader_watcher(app: Flask, debug: Optional[bool],
                              options: dict[str, object]) -> bool:
    # As Flask.run decides: under the flask command it does nothing, FLASK_DEBUG overrides
    # app.debug, the debug argument overrides both, and the reloader follows debug.
    if os.environ.get("FLASK_RUN_FROM_CLI") == "true" or is_running_from_reloader():
        return False
    if debug is None:
        debug = get_debug_flag() if "FLASK_DEBUG" in os.environ else app.debug
    return bool(options.get("use_reloader", debug))


# -- settings ----------------------------------------------------------------------------------

def _read_settings(app: Flask) -> tuple[SchedulerConfig, bool, float]:
    try:
        config = SchedulerConfig.from_mapping(app.config, ignore=_OWN_SETTINGS)
    except ConfigError as exc:
        raise ConfigError(_key_of(app, exc.field), exc.message) from exc
    autostart = _flag(app, "PYSCHEDULER_AUTOSTART", default=True)
    stop_timeout = _seconds(app, "PYSCHEDULER_STOP_TIMEOUT", default=DEFAULT_STOP_TIMEOUT)
    return config, autostart, stop_timeout


def _key_of(app: Flask, field: str) -> str:
    """The ``app.config`` key a config error is about (its field name, as the user spelt it)."""
    if field not in {f.name for f in dataclasses.fields(SchedulerConfig)}:
        return field  # already a key: an unknown PYSCHEDULER_* or PYSCHEDULER[...] entry
    nested = app.config.get("PYSCHEDULER")
    if isinstance(nested, dict):
        for key in nested:
            if isinstance(key, str) and key.lower() == field:
                return f"PYSCHEDULER[{key!r}]"
    return f"PYSCHEDULER_{field.upper()}"


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(app: Flask, key: str, *, default: bool) -> bool:
    value = app.config.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(key, f"must be True or False, got {value!r}")


def _seconds(app: Flask, key: str, *, default: float) -> float:
    value = app.config.get(key, default)
    try:
        if isinstance(value, str):
            value = float(value)
        seconds = to_seconds(value, key)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be seconds (a number or a timedelta), got {value!r}") \
            from None
    if seconds < 0 or not math.isfinite(seconds):
        raise ConfigError(key, f"must be a finite number of seconds >= 0, got {value!r}")
    return seconds


# -- the flask pyscheduler commands ------------------------------------------------------------

def _make_cli(app: Flask, state: _AppState) -> click.Group:
    group = AppGroup("pyscheduler", help="The scheduled jobs of this application.")

    @group.command("jobs")
    def jobs_command() -> None:
        """List this application's jobs, with their state read from the backend."""
        _print_jobs(app, state)

    @group.command("run")
    def run_command() -> None:
        """Run this application's scheduler in the foreground, until SIGTERM or SIGINT
        (Ctrl-C), then stop gracefully (waiting PYSCHEDULER_STOP_TIMEOUT seconds)."""
        _run_foreground(app, state)

    return group


def _fresh_metadata(state: _AppState, jobs: list[Job]) -> list[Optional[JobMetadata]]:
    """Each job's stored state, ``None`` where the backend has none yet. Read without starting
    a scheduler: a listing must not run jobs."""
    if state.started:
        return [job.metadata for job in jobs]  # Scheduler.jobs() just read them fresh
    backend = state.scheduler.backend
    backend.open()
    try:
        states = backend.get_states([job.name for job in jobs])
    finally:
        backend.close()
    return [None if stored is None else metadata_from_state(stored) for stored in states]


def _print_jobs(app: Flask, state: _AppState) -> None:
    jobs = state.scheduler.jobs()
    if not jobs:
        click.echo(f"no jobs registered for the app {app.name!r}")
        return
    try:
        metadata = _fresh_metadata(state, jobs)
    except BackendError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [("NAME", "STATUS", "NEXT RUN", "LAST RUN", "RUNS", "LAST ERROR")]
    for job, meta in zip(jobs, metadata):
        if meta is None:
            rows.append((job.name, "not stored yet", "-", "-", "0", ""))
            continue
        rows.append((job.name, meta.status.value, _when(meta.next_run_at),
                     _when(meta.last_run_at), str(meta.run_count),
                     meta.last_error.splitlines()[0] if meta.last_error else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def _when(at: Optional[datetime]) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _run_foreground(app: Flask, state: _AppState) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with StopSignals() as signals:
        if not state.started:
            try:
                state.scheduler.start()
            except (BackendError, SchedulerStateError) as exc:
                raise click.ClickException(str(exc)) from exc
            state.started = True
        jobs = len(state.scheduler.jobs())
        click.echo(f"pyscheduler: running {jobs} job(s) of the app {app.name!r}; "
                   "SIGTERM or Ctrl-C stops (a second signal exits at once)", err=True)
        signals.wait()
        report = state.scheduler.stop(timeout=timedelta(seconds=state.stop_timeout))
    if report.completed:
        click.echo("pyscheduler: stopped", err=True)
    else:
        click.echo(f"pyscheduler: stopped; handed back still running: "
                   f"{', '.join(report.still_running)}", err=True)
