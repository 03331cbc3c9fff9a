"""The dashboard in a Django project: ``path("scheduler/", include(dashboard_urls(control)))``.

The URL patterns forward each request to a :class:`~pyscheduler.contrib.dashboard.Dashboard`
as a WSGI call, with ``SCRIPT_NAME`` set to where the include mounted it, so its links stay
under that prefix. By default only staff may see it: an anonymous visitor is sent to
``LOGIN_URL``, a signed-in user who is not staff gets a 403 (this needs Django's
authentication middleware). The dashboard's forms carry their own CSRF token, so the view
is exempt from Django's (whose token the dashboard's pages do not hold).
"""

from __future__ import annotations

import io
from typing import Any, Callable, Optional

from django.contrib.auth.views import redirect_to_login  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.http import HttpResponse, HttpResponseForbidden  # type: ignore[import-untyped]
from django.urls import re_path  # type: ignore[import-untyped]
from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]

from ...control import Control
from ..dashboard import Dashboard

__all__ = ["Permission", "dashboard_urls", "dashboard_view", "is_staff"]

#: Who may see the dashboard: given the request, whether to serve it.
Permission = Callable[[Any], bool]


def is_staff(request: Any) -> bool:
    """The default permission: a signed-in, active staff user."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def dashboard_urls(control: Control, *, read_only: bool = False,
                   csrf_secret: Optional[str] = None,
                   permission: Optional[Permission] = is_staff) -> list[Any]:
    """URL patterns serving the dashboard of ``control``, for ``include()``.

    :param permission: who may see it and use its buttons (default: staff users);
        ``None`` lets everyone see it, and only clients on this machine use the buttons.
    :param read_only: and ``csrf_secret``: as for :class:`Dashboard` (give a secret when
        several processes serve the project).
    """
    # The view checks the permission before forwarding: whoever it lets through may act.
    # Without one, the dashboard's own default holds (actions for loopback clients only).
    authorize = None if permission is None else _everyone
    view = dashboard_view(Dashboard(control, read_only=read_only, authorize=authorize,
                                    csrf_secret=csrf_secret), permission=permission)
    return [re_path(r"^(?P<path>.*)$", view, name="pyscheduler-dashboard")]


def _everyone(environ: object) -> bool:
    return True


def dashboard_view(app: Dashboard, *, permission: Optional[Permission] = is_staff
                   ) -> Callable[..., Any]:
    """A Django view forwarding to ``app``, whose URL pattern captures the rest of the
    path as ``path``."""

    def view(request: Any, path: str = "") -> Any:
        if permission is not None and not permission(request):
            user = getattr(request, "user", None)
            if user is None:
                raise ImproperlyConfigured(
                    "the pyscheduler dashboard checks request.user, which only Django's "
                    "AuthenticationMiddleware sets: add it to MIDDLEWARE (with "
                    "django.contrib.auth in INSTALLED_APPS), or pass permission=None to "
                    "dashboard_urls() where the prefix is guarded otherwise")
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            return HttpResponseForbidden("staff only")
        return _forward(app, request, path)

    exempt: Callable[..., Any] = csrf_exempt(view)
    return exempt


def _forward(app: Dashboard, request: Any, rest: str) -> Any:
    """Call ``app`` with the request's WSGI environ, mounted where the include put it."""
    body = request.body
    environ = dict(request.META)
    full_path: str = request.path
    mount = full_path[:len(full_path) - len(rest)] if rest else full_path
    environ.update({
        "SCRIPT_NAME": mount.rstrip("/"), "PATH_INFO": "/" + rest,
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
    })
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: object = None) -> None:
        started.update(status=status, headers=headers)

    content = b"".join(app(environ, start_response))
    response = HttpResponse(content, status=int(started["status"].split(" ", 1)[0]))
    for key, value in started["headers"]:
        if key.lower() != "content-length":  # Django sets its own
            response[key] = value
    return response
