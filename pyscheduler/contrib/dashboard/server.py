"""Serving the dashboard on its own: wsgiref, one thread per request, loopback by default.

wsgiref is in the standard library, which is all the dashboard needs; it is enough for the
few operators who look at a dashboard. It listens on 127.0.0.1 unless told otherwise, and on
any other address only with a password (HTTP basic auth, which browsers ask for by
themselves): the group must not be operable by whoever reaches the port. Basic auth sends
the password in every request, so over a network put TLS in front (a proxy).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import socketserver
from typing import Callable, Iterable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _wsgiref_server

from ...control import Control
from ...errors import ConfigError
from .app import Dashboard, Environ, StartResponse

__all__ = ["PASSWORD_VARIABLE", "make_server", "serve"]

#: The environment variable :func:`make_server` takes the password from when given none.
PASSWORD_VARIABLE = "PYSCHEDULER_DASHBOARD_PASSWORD"


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    # A browser opens several connections at once; a slow backend call must not hold the
    # others. Daemon threads: a request in flight does not keep the process alive at exit.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _BasicAuth:
    """WSGI middleware: the wrapped application only for ``username`` with ``password``."""

    def __init__(self, app: Dashboard, username: str, password: str) -> None:
        self.app = app
        self._expected = f"{username}:{password}".encode()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._authorized(str(environ.get("HTTP_AUTHORIZATION", ""))):
            return self.app(environ, start_response)
        body = b"the pyscheduler dashboard needs its user name and password\n"
        start_response("401 Unauthorized", [
            ("WWW-Authenticate", 'Basic realm="pyscheduler", charset="UTF-8"'),
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)


def make_server(control: Control, host: str = "127.0.0.1", port: int = 8080, *,
                read_only: bool = False, password: Optional[str] = None,
                username: str = "admin", log_requests: bool = True) -> WSGIServer:
    """A bound wsgiref server of a :class:`Dashboard` over ``control``, not yet serving
    (``serve_forever()`` serves; ``port=0`` takes a free port, ``server_port`` tells which).

    :param password: with ``username``, the HTTP basic auth every request must carry;
        default ``$PYSCHEDULER_DASHBOARD_PASSWORD``, else none. With a password, anyone who
        has it may use the buttons; without, only clients on this machine may.
    :raises ConfigError: ``host`` is not a loopback address and there is no password.
    :raises OSError: the address cannot be bound.
    """
    if password is None:
        password = os.environ.get(PASSWORD_VARIABLE) or None
    if password is None and not _is_loopback(host):
        raise ConfigError("host", f"{host!r} is not a loopback address: serving the dashboard "
                          f"there needs a password ({PASSWORD_VARIABLE})")
    app: Callable[[Environ, StartResponse], Iterable[bytes]]
    if password is None:
        app = Dashboard(control, read_only=read_only)
    else:
        # The password is the guard: the dashboard lets whoever passed it act, from anywhere.
        app = _BasicAuth(Dashboard(control, read_only=read_only, authorize=lambda _: True),
                         username, password)
    handler = WSGIRequestHandler if log_requests else _QuietHandler
    return _wsgiref_server(host, port, app, server_class=_ThreadingWSGIServer,
                           handler_class=handler)


def serve(control: Control, host: str = "127.0.0.1", port: int = 8080, *,
          read_only: bool = False, password: Optional[str] = None) -> None:
    """Serve the dashboard of ``control`` at ``http://host:port/`` until interrupted
    (blocking; each request is logged on stderr). See :func:`make_server`."""
    with make_server(control, host, port, read_only=read_only, password=password) as server:
        server.serve_forever()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
