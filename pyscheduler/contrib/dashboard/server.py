"""Serving the dashboard on its own: wsgiref, one thread per request.

wsgiref is in the standard library, which is all the dashboard needs; it is enough for the
few operators who look at a dashboard, not for the internet (put it behind a proxy that
authenticates, or mount :class:`~pyscheduler.contrib.dashboard.Dashboard` in your
application's server instead).
"""

from __future__ import annotations

import socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _wsgiref_server

from ...control import Control
from .app import Dashboard

__all__ = ["make_server", "serve"]


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    # A browser opens several connections at once; a slow backend call must not hold the
    # others. Daemon threads: a request in flight does not keep the process alive at exit.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def make_server(control: Control, host: str = "127.0.0.1", port: int = 8080, *,
                read_only: bool = False, log_requests: bool = True) -> WSGIServer:
    """A bound wsgiref server of a :class:`Dashboard` over ``control``, not yet serving
    (``serve_forever()`` serves; ``port=0`` takes a free port, ``server_port`` tells which).

    :raises OSError: the address cannot be bound.
    """
    handler = WSGIRequestHandler if log_requests else _QuietHandler
    return _wsgiref_server(host, port, Dashboard(control, read_only=read_only),
                           server_class=_ThreadingWSGIServer, handler_class=handler)


def serve(control: Control, host: str = "127.0.0.1", port: int = 8080, *,
          read_only: bool = False) -> None:
    """Serve the dashboard of ``control`` at ``http://host:port/`` until interrupted
    (blocking; each request is logged on stderr).

    The default host answers only this machine: the dashboard authenticates nobody.
    """
    with make_server(control, host, port, read_only=read_only) as server:
        server.serve_forever()
