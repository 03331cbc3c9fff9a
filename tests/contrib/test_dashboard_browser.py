"""The dashboard in a real browser: headless Chromium (Debian's, driven by Playwright) on a
dashboard served over a real socket, over a real redis-server with a real scheduler running
the jobs on its own thread.

Skipped, with the reason, where Playwright or Chromium is missing (CI installs both).
``PYSCHEDULER_UPDATE_SCREENSHOT=1`` also writes the jobs page's screenshot to
docs/dashboard.png, which README.rst shows.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from pyscheduler import (
    Control,
    CronSchedule,
    IntervalSchedule,
    Job,
    RedisBackend,
    Scheduler,
    SchedulerConfig,
)
from pyscheduler.contrib.dashboard import make_server

from ..helpers import WAIT, Schedulers
from ..redis_deploy_servers import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
HOSTILE = "<script>alert('name')</script>"


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed (the test extra)")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1700, "height": 360})
            page.set_default_timeout(WAIT * 1000)
            yield page
        finally:
            browser.close()


class Shop:
    """The group "shop": a scheduler running its jobs, a Control, the dashboard's URL."""

    def __init__(self, control: Control, url: str, ran: dict[str, threading.Event],
                 start_another: Callable[[Job], None]) -> None:
        self.control, self.url, self.ran = control, url, ran
        self.start_another = start_another

    def runs(self, name: str) -> int:
        return len(self.control.history(name))

    def trigger_and_wait(self, name: str) -> None:
        """Run the job now and wait until its outcome is recorded."""
        before = self.runs(name)
        self.control.trigger(name)
        wait_until(lambda: self.runs(name) > before, f"a run of {name} recorded")


@pytest.fixture
def shop(redis_server, schedulers: Schedulers) -> Iterator[Shop]:
    ran = {name: threading.Event() for name in ("report", "sync-inventory")}

    def sync_inventory() -> None:
        ran["sync-inventory"].set()
        raise ConnectionError("warehouse API answered 502 <Bad Gateway>")

    def started(instance_id: str, *jobs: Job) -> None:
        scheduler = schedulers(Scheduler(
            RedisBackend.from_url(redis_server.url, key_prefix="shop"),
            config=SchedulerConfig(tick_interval=0.1, instance_id=instance_id)))
        for job in jobs:
            scheduler.register(job)
        scheduler.start()

    started("web-1", Job("report", IntervalSchedule(3600), lambda: ran["report"].set()),
            Job("sync-inventory", IntervalSchedule(900), sync_inventory),
            Job("nightly-cleanup", CronSchedule("0 3 * * *", "Europe/Paris"), lambda: None,
                enabled=False),
            Job("legacy-export", IntervalSchedule(86400), lambda: None))
    with Control.from_url(redis_server.url, key_prefix="shop") as control, \
            make_server(control, port=0, log_requests=False) as server:
        serving = threading.Thread(target=server.serve_forever, name="dashboard-server")
        serving.start()
        try:
            yield Shop(control, f"http://127.0.0.1:{server.server_port}/", ran,
                       lambda job: started("web-2", job))
        finally:
            server.shutdown()
            serving.join()


def row(page, name: str):
    return page.locator(f'tr[data-job="{name}"]')


def test_in_chromium_the_buttons_pause_trigger_and_remove_jobs(shop, browser_page, tmp_path):
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    for _ in range(2):
        shop.trigger_and_wait("report")
    for _ in range(2):
        shop.trigger_and_wait("sync-inventory")

    # The jobs page shows every job with its state and recent outcomes
    page.goto(shop.url)
    assert page.title() == "Jobs - pyscheduler"
    assert row(page, "report").locator(".status").inner_text() == "scheduled"
    assert row(page, "report").locator(".run-succeeded").count() == 2
    assert row(page, "sync-inventory").locator(".run-failed").count() == 2
    assert "warehouse API answered 502 <Bad Gateway>" in row(page, "sync-inventory").inner_text()
    assert row(page, "nightly-cleanup").locator(".status").inner_text() == "paused"
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert (tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("PYSCHEDULER_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "dashboard.png", SCREENSHOT)

    # Pause: the page comes back with the job paused, as the backend has it
    row(page, "report").get_by_role("button", name="Pause").click()
    page.wait_for_url(shop.url)
    assert row(page, "report").locator(".status").inner_text() == "paused"
    assert shop.control.job("report").paused
    row(page, "report").get_by_role("button", name="Resume").click()
    assert row(page, "report").locator(".status").inner_text() == "scheduled"

    # Run now: the scheduler runs the job, and its page shows the manual run
    shop.ran["report"].clear()
    before = shop.runs("report")
    row(page, "report").get_by_role("button", name="Run now").click()
    assert shop.ran["report"].wait(WAIT), "the triggered run did not start"
    wait_until(lambda: shop.runs("report") > before, "the triggered run recorded")
    row(page, "report").get_by_role("link", name="report").click()
    assert page.locator("h1").inner_text() == "Job report"
    # (a row per run, newest first; the two runs before were triggered too)
    assert page.locator("table tr", has_text="manual").count() == shop.runs("report") == 3

    # A failed run's error, markup included, shows as text in the job's history
    page.goto(shop.url)
    row(page, "sync-inventory").get_by_role("link", name="sync-inventory").click()
    failed = page.locator("table tr", has_text="failed")
    assert failed.count() == 2
    assert "warehouse API answered 502 <Bad Gateway>" in failed.first.inner_text()
    assert page.locator("bad").count() == 0

    # Remove: a confirmation page first, whose button removes the job
    page.goto(shop.url)
    row(page, "legacy-export").get_by_role("link", name="Remove").click()
    assert page.locator("h1").inner_text() == "Remove legacy-export?"
    assert "legacy-export" in [job.name for job in shop.control.jobs()]
    page.get_by_role("button", name="Remove").click()
    page.wait_for_url(shop.url)
    assert row(page, "legacy-export").count() == 0
    assert "legacy-export" not in [job.name for job in shop.control.jobs()]

    # A job whose name is markup, from another instance, shows as text: no script runs
    shop.start_another(Job(HOSTILE, IntervalSchedule(86400), lambda: None))
    page.reload()
    page.get_by_role("link", name=HOSTILE).click()
    assert page.locator("h1").inner_text() == f"Job {HOSTILE}"
    page.get_by_role("link", name="Remove").click()
    assert page.locator("h1").inner_text() == f"Remove {HOSTILE}?"
    page.get_by_role("link", name="Instances").click()
    assert page.locator("td", has_text="web-2").count() == 1
    assert dialogs == [] and errors == []
