"""pyscheduler.process outside any server: what it detects, and stopping at interpreter exit.

The server cases (gunicorn and uWSGI masters and workers) run under the real servers in
tests/contrib/ and tests/test_wsgi_servers.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from pyscheduler import IntervalSchedule, InvalidJobError, Job, Scheduler, SchedulerConfig
from pyscheduler.job import around_handler
from pyscheduler.process import ServerProcess, current_server, start_in_workers
from tests.helpers import step

BOUND = 60.0


def test_a_plain_process_is_standalone():
    assert current_server() == ServerProcess(None, "standalone")
    assert not current_server().multi_process
    assert not current_server().is_master


def test_a_server_of_unknown_worker_count_counts_as_multi_process():
    assert ServerProcess("gunicorn", "worker").multi_process
    assert not ServerProcess("gunicorn", "worker", workers=1).multi_process


def test_start_in_workers_starts_at_once_outside_a_pre_fork_master(schedulers):
    ran = threading.Event()
    scheduler = schedulers(Scheduler(config=SchedulerConfig(tick_interval=0.1)))
    scheduler.register(Job("job", IntervalSchedule(0.01), ran.set))
    assert start_in_workers(scheduler) is True
    assert ran.wait(BOUND)


EXITING = textwrap.dedent("""
    import logging, sys, threading
    from pyscheduler import IntervalSchedule, Job, Scheduler, SchedulerConfig
    from pyscheduler.process import stop_at_exit

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    scheduler = Scheduler(config=SchedulerConfig(tick_interval=0.1))
    started = threading.Event()

    def stubborn(ctx):
        started.set()
        cancelled = not ctx.sleep(60)
        print(f"handler saw cancellation: {cancelled}", flush=True)

    scheduler.register(Job("stubborn", IntervalSchedule(0.01), stubborn))
    scheduler.start()
    stop_at_exit(scheduler, 0.2)
    assert started.wait(60)
    # the main thread ends here: the interpreter exits with the handler still running
""")


def test_stop_at_exit_cancels_running_handlers_when_the_interpreter_exits(tmp_path):
    # Given a started scheduler whose handler sleeps until cancelled, set to stop at exit
    script = tmp_path / "exiting.py"
    script.write_text(EXITING, encoding="utf-8")

    # When the main thread ends while the handler runs
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=BOUND, check=False)

    # Then the interpreter exits soon: the scheduler stopped, cancelling the handler
    assert result.returncode == 0, result.stderr
    assert "handler saw cancellation: True" in result.stdout
    assert "scheduler stopped" in result.stdout and "still_running=['stubborn']" in result.stdout


def test_around_handler_calls_the_handler_inside_the_scope(fake_clock, schedulers):
    # Given handlers with and without the context, wrapped by a scope that records its use
    scope: list[str] = []

    def around(call):
        scope.append("enter")
        try:
            return call()
        finally:
            scope.append("exit")

    seen: list[object] = []
    with_ctx = around_handler("a", lambda ctx: seen.append(ctx.job_name), around)
    without = around_handler("b", lambda: seen.append("no context"), around)

    # When the scheduler runs them
    scheduler = schedulers.stepped(fake_clock)
    scheduler.register(Job("a", IntervalSchedule(60), with_ctx))
    scheduler.register(Job("b", IntervalSchedule(60), without))
    scheduler.start(background=False)
    fake_clock.advance(60)
    step(scheduler)

    # Then each ran once, inside the scope
    assert sorted(map(str, seen)) == ["a", "no context"]
    assert scope == ["enter", "exit", "enter", "exit"]


def test_around_handler_refuses_a_handler_of_the_wrong_shape():
    with pytest.raises(InvalidJobError, match="must take one argument"):
        around_handler("bad", lambda a, b: None, lambda call: call())
