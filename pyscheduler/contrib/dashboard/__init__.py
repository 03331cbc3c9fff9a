"""A web dashboard for a scheduler group: ``Dashboard(control)``, a plain WSGI application.

Server-rendered pages, standard library only (no framework, no script, no external asset:
it works offline): the jobs with their state and a strip of their recent outcomes, one job
with its run history, the live instances; pause, resume, run now and remove (after a
confirmation step) as POST forms with a CSRF defence, for whom ``authorize`` accepts (by
default, clients on this machine). :func:`serve` runs it on wsgiref, as ``pyscheduler
dashboard`` does (off loopback only with a password); mounted in Flask or Django it serves
under their prefix.
"""

from __future__ import annotations

from .app import Authorize, Dashboard, from_loopback
from .server import PASSWORD_VARIABLE, make_server, serve

__all__ = ["PASSWORD_VARIABLE", "Authorize", "Dashboard", "from_loopback", "make_server",
           "serve"]
