"""A TCP proxy between one scheduler instance and Redis, with network faults on demand.

It runs in the test process: one listening socket, and per connection a reader and a sender
thread for each direction. Bytes read are queued with the instant they may be delivered, so
the proxy can:

- pass them on (the default);
- :meth:`~Proxy.hold` them: a black hole; nothing is forwarded, nothing is lost, and the
  connections stay open, so the instance sees silence, not an error;
- :meth:`~Proxy.heal` late (deliver what was held, commands sent during the partition then
  reach Redis late) or by resetting every connection (RST, the held bytes dropped);
- add latency to every chunk from now on (:meth:`~Proxy.set_latency`);
- lose replies (:meth:`~Proxy.drop_replies`): the reply to the next requests that contain a
  byte string is dropped and its connection reset, after Redis ran the command, which is the
  ambiguous failure a client retry must survive.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque
from typing import Optional

__all__ = ["Proxy"]

_CHUNK = 65536


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self._held = False
        self._latency = 0.0
        self._drop_match = b""
        self._drops_left = 0
        self.dropped = 0
        self._links: set[_Link] = set()
        self._closed = False
        threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}",
                         daemon=True).start()

    # -- faults ------------------------------------------------------------------------------

    def hold(self) -> None:
        """Stop forwarding in both directions, keeping every byte."""
        with self._cond:
            self._held = True

    def heal(self, reset: bool = False) -> None:
        """Forward again: deliver what was held, or (``reset``) reset every connection."""
        with self._cond:
            links = list(self._links) if reset else []
        for link in links:
            link.close(reset=True)
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk read from now on by ``seconds``, in each direction."""
        with self._cond:
            self._latency = seconds

    def drop_replies(self, match: bytes, count: int = 1) -> None:
        """Lose the reply to each of the next ``count`` requests containing ``match``."""
        with self._cond:
            self._drop_match, self._drops_left = match, count

    @property
    def drops_left(self) -> int:
        with self._cond:
            return self._drops_left

    def close(self) -> None:
        with self._cond:
            self._closed = True
            links = list(self._links)
            self._cond.notify_all()
        self._listener.close()
        for link in links:
            link.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                server.settimeout(None)
            except OSError:
                _reset(client)  # Redis is down: refuse, as a dead server would
                continue
            link = _Link(self, client, server)
            with self._cond:
                if self._closed:
                    link.close()
                    return
                self._links.add(link)
            link.start()

    def _forget(self, link: _Link) -> None:
        with self._cond:
            self._links.discard(link)
            self._cond.notify_all()


class _Link:
    """One proxied connection: the instance's socket and ours to Redis."""

    def __init__(self, proxy: Proxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client, self.server = client, server
        self.closed = False
        self.reset = False
        self.readers = 2
        self.drop_next_reply = False
        self.up: deque[tuple[float, bytes]] = deque()  # instance -> Redis
        self.down: deque[tuple[float, bytes]] = deque()  # Redis -> instance

    def start(self) -> None:
        for target, args in ((self._read, (self.client, self.up, True)),
                             (self._read, (self.server, self.down, False)),
                             (self._send, (self.up, self.server)),
                             (self._send, (self.down, self.client))):
            threading.Thread(target=target, args=args, daemon=True).start()

    def _read(self, source: socket.socket, queue: deque[tuple[float, bytes]],
              upstream: bool) -> None:
        try:
            self._pump(source, queue, upstream)
        finally:
            self._reader_done()

    def _pump(self, source: socket.socket, queue: deque[tuple[float, bytes]],
              upstream: bool) -> None:
        proxy = self.proxy
        while True:
            try:
                data = source.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            drop = False
            with proxy._cond:
                if self.closed:
                    return
                if upstream:
                    if proxy._drops_left and proxy._drop_match in data:
                        proxy._drops_left -= 1
                        self.drop_next_reply = True
                elif self.drop_next_reply:
                    drop = True
                    proxy.dropped += 1
                if not drop:
                    queue.append((time.monotonic() + proxy._latency, data))
                    proxy._cond.notify_all()
            if drop:
                self.close(reset=True)  # the command ran; its reply never arrives
                return

    def _send(self, queue: deque[tuple[float, bytes]], target: socket.socket) -> None:
        proxy = self.proxy
        while True:
            with proxy._cond:
                while True:
                    if self.closed:
                        return
                    wait: Optional[float] = None
                    if queue and not proxy._held:
                        wait = queue[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                    proxy._cond.wait(wait)
                _, data = queue.popleft()
            try:
                target.sendall(data)
            except OSError:
                self.close()
                return

    def close(self, reset: bool = False) -> None:
        """Stop the link; its sockets are closed by the last reader to leave (closing a
        socket another thread blocks on would let its descriptor be reused under it)."""
        with self.proxy._cond:
            if self.closed:
                return
            self.closed = True
            self.reset = reset
            self.up.clear()
            self.down.clear()
            self.proxy._cond.notify_all()
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RD)  # wakes our reader; sends nothing
            except OSError:
                pass
        self.proxy._forget(self)

    def _reader_done(self) -> None:
        with self.proxy._cond:
            self.readers -= 1
            last = self.readers == 0
        if last:
            for sock in (self.client, self.server):
                if self.reset:
                    _reset(sock)
                else:
                    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
