"""pyscheduler.contrib.dashboard: the WSGI application, through werkzeug's test client.

Every behaviour runs on the memory backend and on a real redis-server (the ``group`` fixture
of test_control: stepped schedulers under a FakeClock, the Control a separate object on the
same store). What the pages show is checked in the HTML they send; what the buttons do, in
the backend and in what the schedulers then run.
"""

from __future__ import annotations

import html
import re
import socket
from datetime import timedelta
from urllib.parse import quote

import pytest
from werkzeug.test import Client

from pyscheduler import Control, IntervalSchedule, Job, JobStatus
from pyscheduler.contrib.dashboard import Dashboard

from .. import test_control
from ..helpers import START, WAIT, Recorder
from ..test_control import Group, hourly

group = test_control.group  # the fixture: memory, and a real redis-server

HOSTILE = "<script>alert(\"x\")</script>'&"
HOSTILE_ERROR = "<img src=x onerror=\"alert('boom')\">"


def local(app, address: str = "127.0.0.1") -> Client:
    """A client at ``address``, by default on this machine, as a server would say
    (werkzeug's test client sets no REMOTE_ADDR)."""
    return Client(lambda environ, start_response:
                  app({**environ, "REMOTE_ADDR": address}, start_response))


def token_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page has no form"
    return match.group(1)


def post(client: Client, verb: str, name: str, token: str, **extra: str):
    return client.post(f"/{verb}", data={"csrf": token, "name": name, **extra})


def failing(message: str):
    def handler() -> None:
        raise RuntimeError(message)
    return handler


@pytest.fixture
def client(group: Group) -> Client:
    return local(Dashboard(group.control))


# -- what the pages show ----------------------------------------------------------------------


def test_the_jobs_page_shows_each_jobs_state_and_its_recent_outcomes(group, client):
    # Given a job that succeeded then failed, and a paused one
    calls = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("disk full")

    scheduler = group.scheduler(hourly("report", flaky),
                                Job("cleanup", IntervalSchedule(60), lambda: None, enabled=False))
    for _ in range(2):
        group.control.trigger("report")
        group.settle(scheduler)

    # When the jobs page is asked for
    response = client.get("/")

    # Then each job has a row with its state, and the report's strip shows both outcomes
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    report = page[page.index('<tr data-job="report">'):]
    report = report[:report.index("</tr>")]
    assert "status-scheduled" in report and "every 1h" in report
    info = group.control.job("report")
    assert info.next_run_at.strftime("%Y-%m-%d %H:%M:%S UTC") in report
    assert "disk full" in report
    assert re.findall(r'class="run run-(\w+)"', report) == ["succeeded", "failed"]
    assert "<td>2</td><td>1</td>" in report  # runs, failures
    cleanup = page[page.index('<tr data-job="cleanup">'):]
    assert "status-paused" in cleanup[:cleanup.index("</tr>")]
    assert ">Resume</button>" in cleanup[:cleanup.index("</tr>")]


@pytest.mark.parametrize("history_limit", [50, 0])
def test_the_last_result_is_the_last_runs_not_the_last_error_ever(group, client,
                                                                   history_limit):
    # Given a job that failed, then succeeded (with or without a history kept)
    calls = []

    def fails_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("disk full")

    scheduler = group.scheduler(hourly("report", fails_once), history_limit=history_limit)
    group.control.trigger("report")
    group.settle(scheduler)
    assert "failed: <span class=\"error\">ValueError: disk full" in client.get("/").text
    group.control.trigger("report")
    group.settle(scheduler)

    # Then the jobs page says it succeeded; the job's page still has the last error
    assert group.control.job("report").last_error  # kept: it is the last error ever
    page = client.get("/").text
    row = page[page.index('<tr data-job="report">'):]
    assert '<td class="result">succeeded</td>' in row[:row.index("</tr>")]
    assert "disk full" in client.get("/job?name=report").text


def test_the_job_page_shows_its_state_and_history(group, client):
    scheduler = group.scheduler(hourly("report", failing("no route to host")))
    group.control.trigger("report")
    group.settle(scheduler)

    response = client.get("/job", query_string={"name": "report"})

    assert response.status_code == 200
    page = response.text
    assert "<h1>Job report</h1>" in page
    assert "no route to host" in page
    (entry,) = group.control.history("report")
    history = page[page.index("<h2>History</h2>"):]
    assert "failed" in history and "manual" in history and entry.instance_id in history
    assert f"<td>{entry.fence}</td>" in history


def test_an_abandoned_run_shows_as_abandoned_in_its_own_colour(group, client, schedulers):
    # Given a run handed back at shutdown, which another instance abandoned
    test_control.abandoned_after_a_shutdown(group, schedulers)
    # When the jobs page and the job's page are asked for
    jobs, job = client.get("/").text, client.get("/job?name=report").text
    # Then both mark the run abandoned, with a colour of its own, and say why
    row = jobs[jobs.index('<tr data-job="report">'):]
    row = row[:row.index("</tr>")]
    assert re.findall(r'class="run run-(\w+)"', row) == ["abandoned"]
    assert '<td class="result">abandoned: <span class="error">abandoned: its holder' in row
    assert ".run-abandoned{background:" in jobs
    history = job[job.index("<h2>History</h2>"):]
    assert '<span class="run run-abandoned"></span> abandoned' in history
    assert "host-a:1" in history


def test_the_instances_page_lists_the_live_instances(group, client):
    group.scheduler(hourly("a"), instance_id="web-1:<b>42</b>")
    page = client.get("/instances").text
    assert "web-1:&lt;b&gt;42&lt;/b&gt;" in page and "<b>42" not in page


def test_an_unknown_job_is_a_404_page_naming_it(group, client):
    group.scheduler(hourly("report"))
    response = client.get("/job", query_string={"name": HOSTILE})
    assert response.status_code == 404
    assert html.escape(repr(HOSTILE)) in response.text
    assert "<script>" not in response.text
    assert client.get("/no-such-page").status_code == 404
    assert client.get("/job").status_code == 400


def test_every_page_sends_the_security_headers(group, client):
    group.scheduler(hourly("report"))
    for path in ("/", "/instances", "/job?name=report", "/nowhere"):
        headers = client.get(path).headers
        assert "script-src" not in headers["Content-Security-Policy"]  # none may run
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"


# -- escaping: everything read from the backend is text ---------------------------------------


def test_names_and_errors_from_the_backend_are_escaped_everywhere(group, client):
    # Given a job whose name and last error are markup, with quotes of both kinds
    scheduler = group.scheduler(hourly(HOSTILE, failing(HOSTILE_ERROR)),
                                instance_id="i\"><script>x</script>")
    group.control.trigger(HOSTILE)
    group.settle(scheduler)

    # Then no page carries them as markup, and each shows them as text
    confirm = client.get("/remove", query_string={"name": HOSTILE}).text
    pages = [client.get("/").text, client.get("/job", query_string={"name": HOSTILE}).text,
             confirm, client.get("/instances").text]
    for page in pages:
        assert "<script>" not in page and "<img" not in page
        assert "\"alert(" not in page
    jobs_page, job_page = pages[:2]
    assert html.escape(HOSTILE) in jobs_page and html.escape(HOSTILE_ERROR) in jobs_page
    assert html.escape(HOSTILE_ERROR) in job_page
    # and the link to the job's page is the name percent-encoded, which leads back to it
    assert html.escape(f"/job?name={quote(HOSTILE, safe='')}") in jobs_page
    assert client.get(f"/job?name={quote(HOSTILE, safe='')}").status_code == 200


def test_a_name_with_url_syntax_round_trips_through_links_and_forms(group, client):
    name = "reports/daily?x=1&y=2#top %2F"
    group.scheduler(hourly(name))
    page = client.get("/").text
    link = html.unescape(re.search(r'<a href="(/job\?[^"]+)"', page).group(1))
    assert client.get(link).status_code == 200
    response = post(client, "pause", name, token_of(page), next="job")
    assert response.status_code == 303
    assert client.get(response.headers["Location"]).status_code == 200
    assert group.control.job(name).paused


# -- actions ----------------------------------------------------------------------------------


def test_pause_and_resume_buttons_change_the_job_for_its_scheduler(group, client):
    recorder = Recorder()
    scheduler = group.scheduler(hourly("report", recorder))
    token = token_of(client.get("/").text)

    # When the pause button is pressed, it redirects to the jobs page
    response = post(client, "pause", "report", token, next="jobs")
    assert response.status_code == 303 and response.headers["Location"] == "/"

    # Then the job is paused in the backend, shown so, and a trigger does not run it
    assert group.control.job("report").status is JobStatus.PAUSED
    assert scheduler.get_job("report").metadata.status is JobStatus.PAUSED
    assert "status-paused" in client.get("/").text
    post(client, "trigger", "report", token)
    group.settle(scheduler)
    assert recorder.calls == []

    # And resume (from the job's page, back to it) lets the triggered run happen
    response = post(client, "resume", "report", token, next="job")
    assert response.headers["Location"] == "/job?name=report"
    group.settle(scheduler)
    assert [kind for *_, kind in recorder.calls] == ["manual"]


def test_remove_goes_through_a_confirmation_page(group, client):
    group.scheduler(hourly("report"), hourly("other"))

    # The jobs page links to a confirmation page (a GET, which changes nothing)
    page = client.get("/").text
    assert 'href="/remove?name=report"' in page
    confirm = client.get("/remove?name=report")
    assert confirm.status_code == 200 and "Remove the job <strong>report</strong>" in confirm.text
    assert [job.name for job in group.control.jobs()] == ["other", "report"]

    # Its button removes the job and goes back to the jobs page
    response = post(client, "remove", "report", token_of(confirm.text))
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert [job.name for job in group.control.jobs()] == ["other"]
    assert client.get("/remove?name=report").status_code == 404
    assert post(client, "remove", "report", token_of(page)).status_code == 404


def test_actions_are_post_only(group, client):
    group.scheduler(hourly("report"))
    for verb in ("pause", "resume", "trigger"):
        response = client.get(f"/{verb}?name=report")
        assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert client.post("/", data={}).status_code == 405
    assert not group.control.job("report").paused


# -- CSRF -------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "forged"])
def test_a_post_without_the_token_is_refused(group, client, token):
    group.scheduler(hourly("report"))
    data = {"name": "report"} if token is None else {"name": "report", "csrf": token}
    response = client.post("/pause", data=data)
    assert response.status_code == 403 and "CSRF" in response.text
    assert not group.control.job("report").paused


@pytest.mark.parametrize("header, value", [
    ("Origin", "http://evil.example"), ("Origin", "null"),
    ("Referer", "http://evil.example/page"), ("Origin", "http://localhost:8080"),
])
def test_a_post_from_another_origin_is_refused_even_with_the_token(group, client, header,
                                                                    value):
    group.scheduler(hourly("report"))
    token = token_of(client.get("/").text)
    response = client.post("/pause", data={"name": "report", "csrf": token},
                           headers={header: value})
    assert response.status_code == 403 and "another site" in response.text
    assert not group.control.job("report").paused


def test_a_post_from_this_origin_is_accepted(group, client):
    group.scheduler(hourly("report"))
    token = token_of(client.get("/").text)
    response = client.post("/pause", data={"name": "report", "csrf": token},
                           headers={"Origin": "http://localhost", "Referer": "http://localhost/"})
    assert response.status_code == 303 and group.control.job("report").paused


def test_each_dashboard_has_its_own_token_unless_given_a_secret(group):
    group.scheduler(hourly("report"))
    one, two = local(Dashboard(group.control)), local(Dashboard(group.control))
    assert token_of(one.get("/").text) != token_of(two.get("/").text)
    assert post(two, "pause", "report", token_of(one.get("/").text)).status_code == 403
    a = local(Dashboard(group.control, csrf_secret="s3cret"))
    b = local(Dashboard(group.control, csrf_secret="s3cret"))
    assert post(b, "pause", "report", token_of(a.get("/").text)).status_code == 303


# -- who may act ----------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"])
def test_without_an_authorize_hook_loopback_clients_may_act(group, address):
    group.scheduler(hourly("report"))
    client = local(Dashboard(group.control), address)
    assert post(client, "pause", "report", token_of(client.get("/").text)).status_code == 303
    assert group.control.job("report").paused


@pytest.mark.parametrize("address", ["203.0.113.9", "::ffff:10.0.0.1", "2001:db8::1", ""])
def test_without_an_authorize_hook_other_clients_may_only_look(group, address):
    group.scheduler(hourly("report"))
    app = Dashboard(group.control)
    token = token_of(local(app).get("/").text)  # what a loopback client was given
    remote = local(app, address)

    page = remote.get("/")
    assert page.status_code == 200 and "report" in page.text and "<form" not in page.text
    response = post(remote, "pause", "report", token)
    assert response.status_code == 403 and "clients on this machine" in response.text
    assert remote.get("/remove?name=report").status_code == 405
    assert not group.control.job("report").paused


def test_an_authorize_hook_decides_who_may_look_and_act(group):
    group.scheduler(hourly("report"))
    app = Dashboard(group.control, authorize=lambda environ: environ.get("HTTP_X_USER") == "ops")
    stranger, operator = local(app, "203.0.113.9"), local(app, "203.0.113.9")

    assert stranger.get("/").status_code == 403
    assert stranger.get("/job?name=report").status_code == 403
    page = operator.get("/", headers={"X-User": "ops"})
    assert page.status_code == 200 and ">Pause</button>" in page.text
    assert stranger.post("/pause", data={"name": "report", "csrf": token_of(page.text)}
                         ).status_code == 403
    assert not group.control.job("report").paused
    response = operator.post("/pause", data={"name": "report", "csrf": token_of(page.text)},
                             headers={"X-User": "ops"})
    assert response.status_code == 303 and group.control.job("report").paused


# -- read-only, mounting, a backend that is down ---------------------------------------------


def test_read_only_shows_no_buttons_and_refuses_posts(group):
    group.scheduler(hourly("report"))
    client = local(Dashboard(group.control, read_only=True))
    page = client.get("/").text
    assert "<form" not in page and "Remove" not in page and "report" in page
    assert "<form" not in client.get("/job?name=report").text
    assert client.get("/remove?name=report").status_code == 405
    assert client.post("/pause", data={"name": "report"}).status_code == 403
    assert not group.control.job("report").paused


def test_under_a_prefix_every_link_and_redirect_stays_under_it(group):
    group.scheduler(hourly("report"))
    app = Dashboard(group.control)

    def mounted(environ, start_response):
        environ["SCRIPT_NAME"] = "/ops/scheduler"
        return app(environ, start_response)

    client = local(mounted)
    page = client.get("/").text
    hrefs = re.findall(r'(?:href|action)="(?!data:)([^"]+)"', page)  # but the empty icon
    assert hrefs and all(href.startswith("/ops/scheduler/") for href in hrefs), hrefs
    response = post(client, "pause", "report", token_of(page), next="job")
    assert response.headers["Location"] == "/ops/scheduler/job?name=report"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("path", ["/", "/job?name=report", "/instances"])
def test_a_backend_that_is_down_is_a_503_page_of_one_line(path):
    with Control.from_url(f"redis://127.0.0.1:{closed_port()}/0") as control:
        client = local(Dashboard(control))
        response = client.get(path)
        assert response.status_code == 503
        assert "Traceback" not in response.text and "File \"" not in response.text
        (line,) = re.findall(r'<p class="notice">(.*?)</p>', response.text)
        assert line.startswith("The scheduler&#x27;s backend cannot be used: cannot reach Redis")
        assert client.post("/pause", data={"name": "x", "csrf": "t"}).status_code == 403


def test_a_running_job_shows_the_instance_holding_it(group, client, schedulers):
    # Given a job whose handler blocks, started by the scheduler "host-a:1"
    release = schedulers.event()
    recorder = Recorder(lambda ctx: release.wait(WAIT))
    scheduler = group.scheduler(hourly("slow", recorder), instance_id="host-a:1")
    group.control.trigger("slow")
    while not recorder.calls and group.clock.now() < START + timedelta(minutes=1):
        group.clock.advance(5)
        scheduler.run_pending()
    assert recorder.started.wait(WAIT), "the triggered run did not start"

    # Then its row says it is running there, on its first attempt
    page = client.get("/").text
    row = page[page.index('<tr data-job="slow">'):]
    row = row[:row.index("</tr>")]
    assert "status-running" in row and "host-a:1 <span class=\"muted\">(attempt 1)</span>" in row

    # And once it returned, nobody holds it
    release.set()
    assert scheduler.wait_idle(WAIT)
    scheduler.run_pending()
    page = client.get("/").text
    assert "host-a:1" not in page and "run-succeeded" in page


def test_a_backend_down_for_many_requests_is_logged_once_a_minute_and_its_return_once(caplog):
    import logging

    from pyscheduler.errors import BackendUnavailableError
    from pyscheduler.outage import OutageLog

    now = [0.0]
    log = logging.getLogger("pyscheduler.contrib.dashboard.app")
    outage = OutageLog(log, "pyscheduler dashboard: the backend", interval=60.0,
                       monotonic=lambda: now[0])
    error = BackendUnavailableError("cannot reach Redis at redis://127.0.0.1:1/0")
    caplog.set_level("INFO", logger="pyscheduler.contrib.dashboard.app")

    # While the backend is down, requests every 5 s for two minutes
    for _ in range(25):
        outage.failed(error)
        now[0] += 5.0
    # Then it answers again, twice
    outage.answered()
    outage.answered()

    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "pyscheduler dashboard: the backend failed: cannot reach Redis at redis://127.0.0.1:1/0",
        "pyscheduler dashboard: the backend still fails (12 requests since the last message): "
        "cannot reach Redis at redis://127.0.0.1:1/0",
        "pyscheduler dashboard: the backend still fails (12 requests since the last message): "
        "cannot reach Redis at redis://127.0.0.1:1/0",
        "pyscheduler dashboard: the backend answers again",
    ]


def test_a_dashboard_on_a_backend_that_is_down_logs_one_line_for_many_requests(caplog):
    caplog.set_level("WARNING", logger="pyscheduler.contrib.dashboard.app")
    with Control.from_url(f"redis://127.0.0.1:{closed_port()}/0") as control:
        client = local(Dashboard(control))
        statuses = [client.get("/").status_code for _ in range(5)]
    assert statuses == [503] * 5
    assert len(caplog.records) == 1, [record.getMessage() for record in caplog.records]


def test_an_error_holding_a_lone_surrogate_shows_as_its_escape(group, client):
    # Given a job whose exception's message holds a lone surrogate (not encodable as UTF-8)
    def bad() -> None:
        raise ValueError("bad \ud800 byte")

    scheduler = group.scheduler(hourly("report", bad))
    group.control.trigger("report")
    group.settle(scheduler)

    # Then the job's error is stored as its escape, and every page shows it
    assert group.control.job("report").last_error == "ValueError: bad \\ud800 byte"
    for path in ("/", "/job?name=report"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "bad \\ud800 byte" in response.text
