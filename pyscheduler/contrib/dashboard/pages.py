"""The dashboard's HTML: one function per page, each returning the whole document.

Everything shown here was read from the backend, which anything may have written: every
value goes through :func:`_text` (HTML-escaped, quotes included) on its way into the page,
and a job name in a link is percent-encoded first (a name may hold ``/``, ``?``, ``&``). The
pages need nothing from outside: the CSS is inline and there is no script, so they work
offline and under the strict Content-Security-Policy the application sends.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Sequence
from urllib.parse import quote, urlencode

from ...backends.base import InstanceInfo, RunOutcome
from ...control import HistoryEntry, JobInfo

__all__ = ["Links", "confirm_remove_page", "error_page", "instances_page", "job_page",
           "jobs_page"]

#: Outcomes shown in a job's strip of recent runs, oldest first.
RECENT_RUNS = 10
#: Characters of a last error shown in the jobs table (the job's page shows it whole).
_ERROR_PREVIEW = 120

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;
align-items:baseline}
header a{color:#cfd8ea;text-decoration:none}header a:hover{color:#fff}
header strong{font-size:1.1em}main{padding:1em 1.2em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e3e6eb;vertical-align:top;
white-space:nowrap}td.name{white-space:normal;word-break:break-all;min-width:10em}
td.result{white-space:normal;min-width:16em;max-width:30em}
th{background:#eef0f4;font-weight:600}
.status{display:inline-block;padding:0 .5em;border-radius:.8em;font-size:.9em;
background:#e3e6eb}
.status-scheduled{background:#dcebff}.status-running{background:#fff2c2}
.status-paused{background:#e3e6eb;color:#555}.status-completed{background:#d7f5dc}
.status-failed{background:#ffd9d9}
.strip{display:flex;gap:2px}.run{width:.7em;height:1.1em;border-radius:2px;background:#bbb}
.run-succeeded{background:#2e9d4a}.run-failed{background:#d33b3b}
.run-timed_out{background:#e08a1e}.run-abandoned{background:#7d3c98}
.error{color:#a32020;white-space:pre-wrap;word-break:break-word}
form{display:inline;margin:0}button,.button{font:inherit;padding:.1em .6em;cursor:pointer;
border:1px solid #aab;border-radius:3px;background:#fff;color:#1d2330;text-decoration:none}
button.danger,.button.danger{border-color:#d33b3b;color:#a32020}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;background:#fff;
padding:.8em;margin:0 0 1em}dt{font-weight:600}dd{margin:0}
.muted{color:#777}.notice{background:#fff;padding:1em;border-left:4px solid #d33b3b}
"""


@dataclass(frozen=True)
class Links:
    """Where the pages point: every URL under the application's mount point.

    :param base: the mount point (WSGI ``SCRIPT_NAME``), ``""`` at the root.
    :param token: the CSRF token every form carries, or ``None`` when read-only (no forms).
    """

    base: str
    token: Optional[str]

    def jobs(self) -> str:
        return f"{self.base}/"

    def instances(self) -> str:
        return f"{self.base}/instances"

    def job(self, name: str) -> str:
        return f"{self.base}/job?{_query(name)}"

    def confirm_remove(self, name: str) -> str:
        return f"{self.base}/remove?{_query(name)}"

    def action(self, verb: str) -> str:
        return f"{self.base}/{verb}"


def _query(name: str) -> str:
    return urlencode({"name": name}, quote_via=quote)


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(at: Optional[datetime]) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(duration: Optional[float]) -> str:
    return "-" if duration is None else f"{duration:.3f} s"


def _document(title: str, body: str, links: Links) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<link rel=\"icon\" href=\"data:,\">"
        f"<title>{_text(title)} - pyscheduler</title><style>{_CSS}</style></head><body>"
        f"<header><strong>pyscheduler</strong><a href=\"{_text(links.jobs())}\">Jobs</a>"
        f"<a href=\"{_text(links.instances())}\">Instances</a></header>"
        f"<main><h1>{_text(title)}</h1>{body}</main></body></html>\n")


# -- forms -------------------------------------------------------------------------------------

def _button(links: Links, verb: str, name: str, back: str, label: str,
            danger: bool = False) -> str:
    """A POST form of one button: the verb's URL, the job, the CSRF token, where to return."""
    css = " class=\"danger\"" if danger else ""
    return (f"<form method=\"post\" action=\"{_text(links.action(verb))}\">"
            f"<input type=\"hidden\" name=\"csrf\" value=\"{_text(links.token)}\">"
            f"<input type=\"hidden\" name=\"name\" value=\"{_text(name)}\">"
            f"<input type=\"hidden\" name=\"next\" value=\"{_text(back)}\">"
            f"<button type=\"submit\"{css}>{_text(label)}</button></form>")


def _actions(links: Links, job: JobInfo, back: str) -> str:
    if links.token is None:
        return ""
    toggle = (_button(links, "resume", job.name, back, "Resume") if job.paused
              else _button(links, "pause", job.name, back, "Pause"))
    return (f"{toggle} {_button(links, 'trigger', job.name, back, 'Run now')} "
            f"<a class=\"button danger\" href=\"{_text(links.confirm_remove(job.name))}\">"
            "Remove</a>")


# -- pieces ------------------------------------------------------------------------------------

def _status(job: JobInfo) -> str:
    value = job.status.value
    return f"<span class=\"status status-{_text(value)}\">{_text(value)}</span>"


def _strip(runs: Sequence[HistoryEntry]) -> str:
    """Coloured marks, oldest first, each titled with its outcome and start time."""
    if not runs:
        return "<span class=\"muted\">-</span>"
    marks = "".join(
        f"<span class=\"run run-{_text(run.outcome)}\" "
        f"title=\"{_text(run.outcome)} at {_text(_when(run.started_at))}\"></span>"
        for run in reversed(runs[:RECENT_RUNS]))
    return f"<span class=\"strip\">{marks}</span>"


def _last_result(job: JobInfo, runs: Sequence[HistoryEntry]) -> str:
    """How the last run ended, with the error if it failed (``last_error`` alone is the
    last error ever, which a later success does not clear)."""
    if runs:
        outcome = runs[0].outcome
    elif job.last_run_at is None:
        return "<span class=\"muted\">-</span>"
    else:  # no history kept: the last success tells whether the last run was one
        succeeded = job.last_success_at is not None and job.last_success_at >= job.last_run_at
        outcome = RunOutcome.SUCCEEDED if succeeded else RunOutcome.FAILED
    if outcome == RunOutcome.SUCCEEDED or not job.last_error:
        return _text(outcome)
    first_line = job.last_error.strip().splitlines()[0] if job.last_error.strip() else ""
    shown = first_line[:_ERROR_PREVIEW] + ("..." if len(first_line) > _ERROR_PREVIEW else "")
    return f"{_text(outcome)}: <span class=\"error\">{_text(shown)}</span>"


def _holder(job: JobInfo) -> str:
    if job.holder is None:
        return "<span class=\"muted\">-</span>"
    return f"{_text(job.holder)} <span class=\"muted\">(attempt {job.attempt})</span>"


# -- pages -------------------------------------------------------------------------------------

def jobs_page(links: Links, jobs: Sequence[JobInfo],
              recent: dict[str, list[HistoryEntry]]) -> str:
    """Every job of the group, one row each; ``recent`` holds each job's last runs, newest
    first."""
    if not jobs:
        return _document("Jobs", "<p class=\"muted\">The group has no jobs.</p>", links)
    head = ("<tr><th>Job</th><th>Status</th><th>Schedule</th><th>Next run</th>"
            "<th>Last run</th><th>Last result</th><th>Runs</th><th>Failures</th>"
            "<th>Running on</th><th>Recent</th>"
            + ("<th>Actions</th>" if links.token is not None else "") + "</tr>")
    rows = []
    for job in jobs:
        runs = recent.get(job.name, [])
        actions = (f"<td>{_actions(links, job, 'jobs')}</td>" if links.token is not None
                   else "")
        rows.append(
            f"<tr data-job=\"{_text(job.name)}\">"
            f"<td class=\"name\">"
            f"<a href=\"{_text(links.job(job.name))}\">{_text(job.name)}</a></td>"
            f"<td>{_status(job)}</td><td>{_text(job.schedule)}</td>"
            f"<td>{_when(job.next_run_at)}</td><td>{_when(job.last_run_at)}</td>"
            f"<td class=\"result\">{_last_result(job, runs)}</td><td>{job.run_count}</td>"
            f"<td>{job.failure_count}</td><td>{_holder(job)}</td><td>{_strip(runs)}</td>"
            f"{actions}</tr>")
    return _document("Jobs", f"<table>{head}{''.join(rows)}</table>", links)


def job_page(links: Links, job: JobInfo, history: Sequence[HistoryEntry]) -> str:
    """One job: its state, its actions and its run history, newest first."""
    fields = [
        ("Status", _status(job)), ("Schedule", _text(job.schedule)),
        ("Next run", _when(job.next_run_at)), ("Last run", _when(job.last_run_at)),
        ("Last success", _when(job.last_success_at)),
        ("Last duration", _seconds(job.last_duration)),
        ("Runs", str(job.run_count)), ("Failures", str(job.failure_count)),
        ("Consecutive failures", str(job.consecutive_failures)),
        ("Running on", _holder(job)), ("Fence", str(job.fence)),
        ("Last error", f"<span class=\"error\">{_text(job.last_error)}</span>"
         if job.last_error else "<span class=\"muted\">-</span>"),
    ]
    state = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in fields)
    actions = _actions(links, job, "job")
    body = f"<dl>{state}</dl>" + (f"<p>{actions}</p>" if actions else "")
    body += "<h2>History</h2>" + _history_table(history)
    return _document(f"Job {job.name}", body, links)


def _history_table(history: Sequence[HistoryEntry]) -> str:
    if not history:
        return "<p class=\"muted\">No finished runs recorded.</p>"
    head = ("<tr><th>Started</th><th>Scheduled for</th><th>Attempt</th><th>Kind</th>"
            "<th>Outcome</th><th>Duration</th><th>Instance</th><th>Fence</th>"
            "<th>Error</th></tr>")
    rows = "".join(
        f"<tr><td>{_when(entry.started_at)}</td><td>{_when(entry.scheduled_at)}</td>"
        f"<td>{entry.attempt}</td><td>{_text(entry.kind)}</td>"
        f"<td><span class=\"run run-{_text(entry.outcome)}\"></span> {_text(entry.outcome)}</td>"
        f"<td>{_seconds(entry.duration)}</td><td>{_text(entry.instance_id)}</td>"
        f"<td>{entry.fence}</td><td class=\"error\">{_text(entry.error)}</td></tr>"
        for entry in history)
    return f"<table>{head}{rows}</table>"


def instances_page(links: Links, instances: Optional[Sequence[InstanceInfo]]) -> str:
    """The live instances; ``None`` when the backend keeps no record of them."""
    if instances is None:
        body = "<p class=\"muted\">This backend does not record live instances.</p>"
    elif not instances:
        body = "<p class=\"muted\">No scheduler of the group is running.</p>"
    else:
        head = ("<tr><th>Instance</th><th>Host</th><th>PID</th><th>Started</th>"
                "<th>Last heartbeat</th><th>Version</th><th>Slots</th><th>Running</th></tr>")
        rows = "".join(
            f"<tr><td>{_text(info.instance_id)}</td><td>{_text(info.host)}</td>"
            f"<td>{info.pid}</td><td>{_text(info.to_dict()['started_at'])}</td>"
            f"<td>{_text(info.to_dict()['last_heartbeat_at'])}</td>"
            f"<td>{_text(info.library_version)}</td><td>{info.max_concurrent}</td>"
            f"<td>{_text(', '.join(info.running)) or '-'}</td></tr>"
            for info in instances)
        body = f"<table>{head}{rows}</table>"
    return _document("Instances", body, links)


def confirm_remove_page(links: Links, job: JobInfo) -> str:
    """The confirmation step of a removal: a GET shows it, its button POSTs the removal."""
    body = (f"<p class=\"notice\">Remove the job <strong>{_text(job.name)}</strong> "
            "from the group? Its state and run history are deleted; every scheduler drops "
            "it at its next tick, until one registers it again.</p><p>"
            f"{_button(links, 'remove', job.name, 'jobs', 'Remove', danger=True)} "
            f"<a class=\"button\" href=\"{_text(links.job(job.name))}\">Cancel</a></p>")
    return _document(f"Remove {job.name}?", body, links)


def error_page(links: Links, title: str, line: str) -> str:
    """A page of one line saying what went wrong (no traceback, nothing from the server)."""
    return _document(title, f"<p class=\"notice\">{_text(line)}</p>", links)
