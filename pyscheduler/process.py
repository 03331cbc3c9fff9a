"""Where this process sits among the processes that serve an application.

Pre-forking servers (gunicorn, uWSGI) load the application once, sometimes in the *master*
(``gunicorn --preload``, uWSGI without ``--lazy-apps``), and then fork their workers. Threads
do not survive ``fork()``, and a scheduler running in the master would run every job there
and none in the workers. This module tells which process this is
(:func:`current_server`), starts a scheduler in each worker however the application was
loaded (:func:`start_in_workers`), and stops it gracefully when the interpreter exits
(:func:`stop_at_exit`). It does not import the servers: it only looks at what is loaded.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import SchedulerStateError

if TYPE_CHECKING:
    from .observability import SafeHooks
    from .scheduler import Scheduler

__all__ = ["ForkGuard", "ServerProcess", "check_threads_enabled", "current_server",
           "start_in_workers", "stop_at_exit"]

_log = logging.getLogger("pyscheduler")

MASTER, WORKER, STANDALONE = "master", "worker", "standalone"


@dataclass(frozen=True)
class ServerProcess:
    """What :func:`current_server` found.

    :ivar server: ``"gunicorn"``, ``"uwsgi"``, or ``None`` outside a known server.
    :ivar role: ``"master"`` (a pre-forking server's master, which forks the workers later),
        ``"worker"`` (a process that serves requests), or ``"standalone"`` (no known server).
    :ivar workers: how many worker processes the server runs, when known.
    """

    server: Optional[str]
    role: str
    workers: Optional[int] = None

    @property
    def is_master(self) -> bool:
        return self.role == MASTER

    @property
    def multi_process(self) -> bool:
        """Whether other processes may serve the same application (unknown counts as yes)."""
        return self.server is not None and self.workers != 1


def current_server() -> ServerProcess:
    """Which server process this is: a gunicorn or uWSGI master or worker, or neither."""
    uwsgi = _uwsgi()
    if uwsgi is not None:
        worker_id = int(uwsgi.worker_id())
        return ServerProcess("uwsgi", WORKER if worker_id > 0 else MASTER,
                             int(getattr(uwsgi, "numproc", 0)) or None)
    if "gunicorn.arbiter" in sys.modules:
        found = _gunicorn_on_stack()
        if found is not None:
            return found
    return ServerProcess(None, STANDALONE)


def _uwsgi() -> Optional[Any]:
    if "uwsgi" in sys.modules:
        return sys.modules["uwsgi"]
    try:
        import uwsgi  # only importable inside a uWSGI process
    except ImportError:
        return None
    return uwsgi


def _gunicorn_on_stack() -> Optional[ServerProcess]:
    # gunicorn keeps no process-global record of the arbiter: look for it on the main
    # thread's stack, where it loads the application (in the master with --preload, in the
    # worker it forked otherwise) and runs the worker's loop.
    from gunicorn.arbiter import Arbiter

    frame: Optional[FrameType] = sys._current_frames().get(threading.main_thread().ident or 0)
    if threading.current_thread() is threading.main_thread():
        frame = sys._getframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Arbiter):
            workers = getattr(owner, "num_workers", None)
            # The arbiter learns its pid after preloading: none yet means this is the master.
            master_pid = getattr(owner, "pid", None)
            role = WORKER if master_pid not in (None, os.getpid()) else MASTER
            return ServerProcess("gunicorn", role, workers if isinstance(workers, int) else None)
        frame = frame.f_back
    return None


def wrong_process_warnings(memory_backend: bool, created_pid: int) -> list[str]:
    """What to warn about a scheduler started in this process: two set-ups that run a job
    in the wrong processes without failing anywhere."""
    warnings = []
    server = current_server()
    if server.is_master:
        warnings.append(f"started in the {server.server} master, which forks the workers "
                        "later: jobs run in the master only, and each worker's copy of this "
                        "scheduler runs nothing. Start it with "
                        "pyscheduler.start_in_workers(scheduler) to run it in every worker")
    where = ""
    if memory_backend and server.multi_process:
        where = f"a {server.server} worker"
        if server.workers:
            where += f" (one of {server.workers})"
    elif memory_backend and os.getpid() != created_pid:
        where = f"a forked process (built in {created_pid})"
    if where:
        warnings.append(f"the in-memory backend keeps jobs in this process only, and this is "
                        f"{where}: each process runs every job on its own, so every occurrence "
                        "runs once per process. Share a Redis backend (backend_type='redis', "
                        "PYSCHEDULER_BACKEND_TYPE=redis) to run it once")
    return warnings


def check_threads_enabled() -> None:
    """Raise when this process cannot run a scheduler's threads.

    :raises SchedulerStateError: under uWSGI before 2.0.27 started without
        ``--enable-threads`` (or ``--threads``), where Python threads never get to run
        (uWSGI 2.0.27 and later enable them always).
    """
    uwsgi = _uwsgi()
    if uwsgi is not None and not uwsgi_runs_threads(uwsgi):
        raise SchedulerStateError(
            "uWSGI runs this process without Python threads, so a scheduler would never run "
            "a job: start uWSGI with --enable-threads (or enable-threads = true in its ini)")


#: The first uWSGI release that always enables Python threads.
_UWSGI_THREADS_ALWAYS = (2, 0, 27)


def uwsgi_runs_threads(uwsgi: Any) -> bool:
    """Whether the ``uwsgi`` module's process runs Python threads (its version and options)."""
    version = getattr(uwsgi, "version", b"")
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    try:
        if tuple(int(part) for part in str(version).split(".")[:3]) >= _UWSGI_THREADS_ALWAYS:
            return True
    except ValueError:
        pass  # a development build: go by the options
    options = getattr(uwsgi, "opt", {})
    if _option(options, "enable-threads") not in (None, False, "0", "false", "no"):
        return True
    threads = _option(options, "threads")
    try:
        return threads is not None and int(str(threads)) > 1
    except ValueError:
        return False


def _option(options: object, name: str) -> object:
    get = getattr(options, "get", None)
    if get is None:
        return None
    value = get(name)
    if value is None:
        value = get(name.encode())
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, list):  # an option given twice
        value = value[-1] if value else None
    if isinstance(value, str):
        value = value.strip().lower()
    return value


def start_in_workers(scheduler: Scheduler, *, stop_timeout: Optional[float] = None) -> bool:
    """Start ``scheduler`` in each process that serves the application.

    In a pre-forking server's master (``gunicorn --preload``, uWSGI without
    ``--lazy-apps``) nothing starts here: the scheduler starts in each worker right after it
    is forked. Anywhere else it starts now. With ``stop_timeout`` it also stops gracefully,
    waiting that long for running handlers, when the interpreter exits (a gunicorn worker
    exits that way on SIGTERM).

    :returns: whether the scheduler started now.
    """
    server = current_server()
    if server.is_master:
        _start_after_fork(scheduler, stop_timeout, server)
        return False
    scheduler.start()
    if stop_timeout is not None:
        stop_at_exit(scheduler, stop_timeout)
    return True


def _start_after_fork(scheduler: Scheduler, stop_timeout: Optional[float],
                      server: ServerProcess) -> None:
    master = os.getpid()

    def start_in_child() -> None:
        # Only in the master's own children: not in a process a worker forks later
        # (multiprocessing), nor in the master itself.
        if os.getppid() != master or os.getpid() == master:
            return
        try:
            scheduler.start()
            if stop_timeout is not None:
                stop_at_exit(scheduler, stop_timeout)
        except BaseException:
            # An at-fork hook's exception would only be printed as "ignored": say it loudly.
            _log.exception("pyscheduler: starting the scheduler in worker %s failed; this "
                           "worker runs no jobs", os.getpid())

    _log.info("pyscheduler: in the %s master (pid %s): the scheduler starts in each worker "
              "after it forks", server.server, master)
    _after_fork_in_child(start_in_child)


def _after_fork_in_child(callback: Callable[[], None]) -> None:
    if _uwsgi() is not None:
        # uWSGI forks its workers in C, without running Python's at-fork hooks.
        import uwsgidecorators

        uwsgidecorators.postfork(callback)
        return
    os.register_at_fork(after_in_child=callback)


class ForkGuard:
    """Tells a started scheduler from its copy in a forked child, and disarms the copy.

    A forked child has none of the parent's threads, and the leases are the parent's: the
    copy must neither wait for runs it does not have nor hand back or refresh leases it does
    not own, and whatever it would show of the group is stale. Disarmed once, in the child
    (by Python's at-fork hook, or from the pid under uWSGI, which forks without it), it
    becomes a stopped scheduler, and says so; calls that need a live scheduler raise.

    :param hooks: the scheduler's, to say so.
    :param disarm: a method of the scheduler that makes the copy a stopped scheduler; called
        once, in the child.
    """

    def __init__(self, hooks: SafeHooks, disarm: Callable[[], None]) -> None:
        # Held weakly, as _STARTED holds the guard: a scheduler dropped is freed at once.
        self._hooks, self._disarm = hooks, weakref.WeakMethod(disarm)
        #: the process that built the scheduler
        self.created_pid = os.getpid()
        #: the process that started the scheduler (``None`` before its start)
        self.started_pid: Optional[int] = None
        #: whether this is a disarmed copy in a forked child
        self.forked = False

    def starting(self) -> None:
        """The scheduler starts in this process."""
        self.started_pid = os.getpid()

    def started(self) -> None:
        """The scheduler started: a child forked from now on disarms its copy at once."""
        _STARTED.add(self)

    def message(self, what: str) -> str:
        """Why ``what`` cannot be done on the copy, in a forked child, of a started
        scheduler."""
        return (f"{what}: this scheduler was started in process {self.started_pid} and this "
                f"process ({os.getpid()}) is a fork of it, where its copy runs no jobs and "
                "knows nothing current (threads do not survive fork()). Start the scheduler "
                "in each worker instead, with pyscheduler.start_in_workers(scheduler), or "
                "create and start one after the fork")

    def disarm_if_forked(self) -> None:
        """Disarm a copy that the at-fork hook missed."""
        # uWSGI forks without Python's at-fork hooks: the pid tells a copy from the original.
        if self.started_pid is not None and self.started_pid != os.getpid():
            self.after_fork_in_child()

    def check(self, what: str) -> None:
        """:raises SchedulerStateError: this is a forked copy (``what`` names the call)."""
        self.disarm_if_forked()
        if self.forked:
            raise SchedulerStateError(self.message(what))

    def after_fork_in_child(self) -> None:
        """Disarm the copy (once), in a forked child."""
        if self.forked:
            return
        self.forked = True
        disarm = self._disarm()
        if disarm is not None:
            disarm()
        self._hooks.log("warning", self.message("pyscheduler"), pid=os.getpid(),
                        parent=self.started_pid)  # (the hooks name the instance)


#: The guards of started schedulers, held weakly, so that a forked child can disarm its copies.
_STARTED: weakref.WeakSet[ForkGuard] = weakref.WeakSet()


def _disarm_after_fork() -> None:
    for guard in list(_STARTED):
        guard.after_fork_in_child()
    _STARTED.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_disarm_after_fork)


def stop_at_exit(scheduler: Scheduler, timeout: float) -> None:
    """Stop ``scheduler`` gracefully (waiting up to ``timeout`` seconds for its handlers)
    when the interpreter exits, before the worker pool is torn down."""

    def stop() -> None:
        try:
            scheduler.stop(timeout=timeout)
        except BaseException:
            _log.exception("pyscheduler: stopping the scheduler at exit failed")

    # Python joins pool threads at exit (a thread-level atexit of concurrent.futures) before
    # it runs atexit handlers: only a hook of that kind, registered after the pool module's
    # (they run last-registered first), can cancel runs past their deadline.
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(stop)
        else:  # pragma: no cover - Python < 3.9 has no such hook
            atexit.register(stop)
    except RuntimeError:  # the interpreter is already shutting down
        stop()
    uwsgi = _uwsgi()
    if uwsgi is not None:
        # A uWSGI worker may be recycled without finalizing Python.
        previous = getattr(uwsgi, "atexit", None)

        def chained() -> None:
            stop()
            if callable(previous):
                previous()

        uwsgi.atexit = chained
