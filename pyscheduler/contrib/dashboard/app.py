"""The dashboard as a WSGI application over a :class:`~pyscheduler.Control`.

Routes, relative to the mount point (``SCRIPT_NAME``), with the job's name in the query
string or the form (never in the path: a WSGI server decodes ``%2F`` in ``PATH_INFO``, so a
name holding ``/`` would not survive there):

====================  ======  ==========================================================
``/``                 GET     the jobs
``/job?name=N``       GET     one job, with its run history
``/instances``        GET     the live instances
``/remove?name=N``    GET     the confirmation step of a removal
``/pause``            POST    ``name``, ``csrf``, ``next``; likewise ``/resume``,
                              ``/trigger``, ``/remove``
====================  ======  ==========================================================

Every POST redirects (303) to the page it came from. A POST is refused (403) unless it
carries the application's CSRF token, and, when the browser sends ``Origin`` or ``Referer``,
unless that names this host: another site can neither read the token nor pass as this one.

Who may use it: with an ``authorize(environ)`` hook, whoever it accepts (pages and actions;
the others get a 403). Without one, anyone may look, but only clients on this machine
(a loopback ``REMOTE_ADDR``) get the buttons: a dashboard mounted with no guard of its own
never lets the network change the group.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from typing import Callable, Iterable, Optional
from urllib.parse import parse_qs, urlsplit

from ...control import Control, HistoryEntry
from ...errors import BackendError, JobNotFoundError
from ...outage import OutageLog
from . import pages
from .pages import Links

__all__ = ["Authorize", "Dashboard", "from_loopback"]

_log = logging.getLogger(__name__)

def _encoded(page: str) -> bytes:
    # What the backend holds is untrusted text: a lone surrogate shows as its escape rather
    # than failing the page.
    return page.encode("utf-8", "backslashreplace")


StartResponse = Callable[..., object]
Environ = dict[str, object]
Response = tuple[str, list[tuple[str, str]], bytes]
#: Whether a request may use the dashboard, given its WSGI environ.
Authorize = Callable[[Environ], bool]

#: Group history read for the jobs page's strips: one call, not one per job.
_GROUP_RUNS = 1_000
#: Runs shown on a job's page.
_JOB_RUNS = 50
#: The largest POST body read: a form of three short fields.
_MAX_BODY = 64 * 1024

#: Sent with every page: no script may run, no other site may frame the buttons, nothing
#: is loaded from elsewhere (the empty data: icon spares the browser a /favicon.ico), and
#: forms post only here.
_SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
     "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]

_VERBS = ("pause", "resume", "trigger", "remove")


class _HTTPError(Exception):
    """A response of one line: ``status`` (``"404 Not Found"``) and the line shown."""

    def __init__(self, status: str, line: str, headers: Optional[list[tuple[str, str]]] = None
                 ) -> None:
        super().__init__(line)
        self.status, self.line = status, line
        self.headers = headers or []


class Dashboard:
    """A WSGI application showing a scheduler group and operating it through ``control``.

    Mount it anywhere: it builds every URL from ``SCRIPT_NAME``, so under a prefix (a
    ``DispatcherMiddleware`` entry, a Django URL include) its links stay under the prefix.
    It authenticates nobody itself: ``authorize`` asks whatever guards the application
    serving it (:func:`pyscheduler.contrib.django.dashboard_urls` is staff-only by default;
    :func:`~pyscheduler.contrib.dashboard.make_server` takes a password).

    :param control: the group to show; not closed here.
    :param read_only: show no action buttons and refuse every POST (403).
    :param authorize: who may use it, pages and actions: a function of the WSGI environ
        (the user your middleware set, a header your proxy adds...); refused requests get a
        403. Without it, the pages are open and the actions only for loopback clients.
    :param csrf_secret: the CSRF token's secret. By default each ``Dashboard`` draws a
        random one, which is right for one process; give the same secret to the
        dashboards of every process behind one address (several gunicorn workers), or a
        form served by one would be refused by another.
    """

    def __init__(self, control: Control, *, read_only: bool = False,
                 authorize: Optional[Authorize] = None,
                 csrf_secret: Optional[str] = None) -> None:
        self.control = control
        self.read_only = read_only
        self.authorize = authorize
        secret = csrf_secret if csrf_secret is not None else secrets.token_hex(32)
        self._token = hmac.new(secret.encode(), b"pyscheduler-dashboard-csrf",
                               "sha256").hexdigest()
        self._outage = OutageLog(_log, "pyscheduler dashboard: the backend")

    def __repr__(self) -> str:
        return f"Dashboard({self.control!r}, read_only={self.read_only})"

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        links = Links(str(environ.get("SCRIPT_NAME", "")).rstrip("/"),
                      self._token if self._may_act(environ) else None)
        try:
            if self.authorize is not None and not self.authorize(environ):
                raise _HTTPError("403 Forbidden", "you are not allowed to use this dashboard")
            status, headers, body = self._respond(environ, links)
            self._outage.answered()
        except _HTTPError as exc:
            status, headers = exc.status, exc.headers
            body = _encoded(pages.error_page(links, exc.status.split(" ", 1)[1], exc.line))
        except JobNotFoundError as exc:
            status, headers = "404 Not Found", []
            body = _encoded(pages.error_page(links, "Not Found", str(exc)))
        except BackendError as exc:
            # One line, never a traceback: the operator needs to know the backend is down,
            # not where in the dashboard that was noticed.
            self._outage.failed(exc)
            status, headers = "503 Service Unavailable", [("Retry-After", "5")]
            body = _encoded(pages.error_page(
                links, "Backend unavailable", f"The scheduler's backend cannot be used: {exc}"))
        headers = [*headers, *_SECURITY_HEADERS]
        if body:
            headers.append(("Content-Type", "text/html; charset=utf-8"))
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def _may_act(self, environ: Environ) -> bool:
        return not self.read_only and (self.authorize is not None or from_loopback(environ))

    # -- routing -----------------------------------------------------------------------------

    def _respond(self, environ: Environ, links: Links) -> Response:
        path = str(environ.get("PATH_INFO", "")) or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        verb = path.lstrip("/")
        if verb in _VERBS and method == "POST":
            return self._act(environ, links, verb)
        pages_by_path: dict[str, Callable[[Environ, Links], str]] = {
            "/": self._jobs, "/job": self._job, "/instances": self._instances,
        }
        if links.token is not None:
            pages_by_path["/remove"] = self._confirm_remove
        page = pages_by_path.get(path)
        if page is None:
            if verb in _VERBS:  # a GET of an action
                raise _HTTPError("405 Method Not Allowed", f"{path} takes a POST (a button)",
                                 [("Allow", "POST")])
            raise _HTTPError("404 Not Found", f"no page at {path}")
        if method not in ("GET", "HEAD"):
            allowed = "GET, HEAD, POST" if verb in _VERBS else "GET, HEAD"
            raise _HTTPError("405 Method Not Allowed", f"{method} is not allowed at {path}",
                             [("Allow", allowed)])
        body = _encoded(page(environ, links))
        return "200 OK", [], b"" if method == "HEAD" else body

    # -- pages -------------------------------------------------------------------------------

    def _jobs(self, environ: Environ, links: Links) -> str:
        jobs = self.control.jobs()
        recent: dict[str, list[HistoryEntry]] = {}
        for entry in self.control.history(limit=_GROUP_RUNS):
            runs = recent.setdefault(entry.job, [])
            if len(runs) < pages.RECENT_RUNS:
                runs.append(entry)
        return pages.jobs_page(links, jobs, recent)

    def _job(self, environ: Environ, links: Links) -> str:
        name = _query_name(environ)
        job = self.control.job(name)
        return pages.job_page(links, job, self.control.history(name, limit=_JOB_RUNS))

    def _instances(self, environ: Environ, links: Links) -> str:
        try:
            instances = self.control.instances()
        except NotImplementedError:
            return pages.instances_page(links, None)
        return pages.instances_page(links, instances)

    def _confirm_remove(self, environ: Environ, links: Links) -> str:
        return pages.confirm_remove_page(links, self.control.job(_query_name(environ)))

    # -- actions -----------------------------------------------------------------------------

    def _act(self, environ: Environ, links: Links, verb: str) -> Response:
        if self.read_only:
            raise _HTTPError("403 Forbidden", "this dashboard is read-only")
        if not self._may_act(environ):
            raise _HTTPError("403 Forbidden", "actions are only for clients on this machine "
                             "unless the dashboard has an authorize hook")
        form = _read_form(environ)
        self._check_csrf(environ, form)
        name = form.get("name")
        if not name:
            raise _HTTPError("400 Bad Request", "the form names no job")
        if verb == "pause":
            self.control.pause(name)
        elif verb == "resume":
            self.control.resume(name)
        elif verb == "trigger":
            self.control.trigger(name)
        else:
            self.control.remove(name)
        back = links.job(name) if form.get("next") == "job" and verb != "remove" \
            else links.jobs()
        return "303 See Other", [("Location", back)], b""

    def _check_csrf(self, environ: Environ, form: dict[str, str]) -> None:
        if not hmac.compare_digest(form.get("csrf", ""), self._token):
            raise _HTTPError("403 Forbidden", "the form's CSRF token is missing or wrong: "
                             "reload the page and try again")
        origin = str(environ.get("HTTP_ORIGIN") or environ.get("HTTP_REFERER") or "")
        if origin and urlsplit(origin).netloc != _host(environ):
            raise _HTTPError("403 Forbidden", "the request comes from another site")


def _query_name(environ: Environ) -> str:
    values = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    names = values.get("name")
    if not names or not names[0]:
        raise _HTTPError("400 Bad Request", "the URL names no job (?name=...)")
    return names[0]


def _read_form(environ: Environ) -> dict[str, str]:
    """The urlencoded POST body, one value per field (the first)."""
    content_type = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _HTTPError("415 Unsupported Media Type", "the form must be urlencoded")
    try:
        length = int(str(environ.get("CONTENT_LENGTH") or "0"))
    except ValueError:
        raise _HTTPError("400 Bad Request", "bad Content-Length") from None
    if length < 0 or length > _MAX_BODY:
        raise _HTTPError("413 Content Too Large", "the form is too large")
    stream = environ["wsgi.input"]
    body = stream.read(length) if length else b""  # type: ignore[attr-defined]
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise _HTTPError("400 Bad Request", "the form is not UTF-8") from None
    return {key: values[0] for key, values in fields.items()}


def from_loopback(environ: Environ) -> bool:
    """Whether the request comes from this machine (``REMOTE_ADDR`` is a loopback address,
    IPv4-mapped included). Behind a proxy on this machine every request does: give such a
    dashboard an ``authorize`` hook."""
    try:
        address = ipaddress.ip_address(str(environ.get("REMOTE_ADDR", "")))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _host(environ: Environ) -> str:
    """The host:port the request was sent to, as a browser's Origin would name it."""
    host = environ.get("HTTP_HOST")
    if host:
        return str(host)
    name, port = str(environ.get("SERVER_NAME", "")), str(environ.get("SERVER_PORT", ""))
    default = "443" if environ.get("wsgi.url_scheme") == "https" else "80"
    return name if port in ("", default) else f"{name}:{port}"

