"""Connection hygiene of ``quantsearch serve``: idle timeout, a connection cap, a log that cannot flood.

uvicorn closes a keep-alive connection a few seconds after its last response, but a connection
that never completes a request (opened and left idle, or sending its headers a byte at a time)
stays open forever; enough of them take every file descriptor and stop the service, and each
refused ``accept`` is logged. Here:

- every connection with no request in progress is closed ``idle_timeout`` seconds after it
  opened or after its last response (partial headers do not count as progress);
- at most ``max_connections`` are open at once (default: the descriptor limit minus a reserve);
  a new connection over the cap closes the connection idle the longest, so a real client is
  always served and ``accept`` never runs out of descriptors;
- :class:`RateLimitFilter` lets at most a few identical log messages through per interval.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from typing import Any

from ..exceptions import InvalidArgumentError

__all__ = [
    "RateLimitFilter",
    "bind_socket",
    "default_max_connections",
    "guarded_protocol",
    "raise_fd_limit",
    "run_guarded",
]

logger = logging.getLogger(__name__)

#: connections the listening socket queues, and so the most that asyncio accepts in one go before
#: any of them reaches the cap check (it accepts up to ``backlog`` at a time)
BACKLOG = 128
#: descriptors kept free: one accept burst, plus the index's files, the model, logs, the listener
FD_RESERVE = BACKLOG + 64


def raise_fd_limit() -> int:
    """Raise this process's soft descriptor limit to its hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections(fd_limit: int) -> int:
    """Connections allowed at once under a descriptor limit (at least 16, at most 10,000)."""
    return max(16, min(10_000, fd_limit - FD_RESERVE))


def guarded_protocol(base: type[Any], *, idle_timeout: float, max_connections: int) -> type[Any]:
    """A subclass of uvicorn's HTTP protocol class ``base`` with the idle timeout and the cap."""

    class Guarded(base):
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._idle_since = time.monotonic()
            self._idle_timer: asyncio.TimerHandle | None = None
            self._arm(idle_timeout)
            if len(self.connections) > max_connections:
                _evict(self.connections, keep=self)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._idle_since = time.monotonic()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            super().connection_lost(exc)

        def busy(self) -> bool:
            """A request is being received or answered."""
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self, delay: float) -> None:
            self._idle_timer = self.loop.call_later(max(delay, 0.05), self._check_idle)

        def _check_idle(self) -> None:
            self._idle_timer = None
            if self.transport.is_closing():
                return
            if self.busy():  # a request in progress is not idle: look again later
                self._arm(idle_timeout)
                return
            left = self._idle_since + idle_timeout - time.monotonic()
            if left > 0:
                self._arm(left)
                return
            self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def _evict(connections: set[Any], keep: Any) -> None:
    """Close the connection idle the longest (the newest one when every other is busy)."""
    idle = [c for c in connections if c is not keep and not c.busy() and not c.transport.is_closing()]
    victim = min(idle, key=lambda c: c._idle_since) if idle else keep
    victim.transport.close()
    connections.discard(victim)  # its descriptor is released when the loop closes it


class RateLimitFilter(logging.Filter):
    """Pass at most ``burst`` records with the same message template per ``interval`` seconds.

    The first record after a quiet period says how many were dropped; a flood of identical errors
    (``Too many open files`` on every ``accept``) costs a few lines per interval, not gigabytes.
    """

    def __init__(self, burst: int = 5, interval: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        # the first line of the template: asyncio's messages differ after it (handles, addresses)
        key = (record.name, str(record.msg).split("\n", 1)[0][:120])
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval:
            dropped = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            if len(self._windows) > 1000:  # bound the memory: forget the oldest windows
                for old in sorted(self._windows, key=lambda k: self._windows[k][0])[:500]:
                    del self._windows[old]
            if dropped:
                record.msg = f"{record.msg} [{dropped} similar messages suppressed]"
            return True
        window[1] += 1
        if window[1] <= self.burst:
            return True
        window[2] += 1
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; our error, one line, when the address is taken."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise InvalidArgumentError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run_guarded(
    app: Any, sock: socket.socket, *, log_level: str, idle_timeout: float, max_connections: int
) -> None:
    """Run ``app`` with uvicorn on ``sock`` until interrupted: guarded protocol, rate-limited logs."""
    import uvicorn

    config = uvicorn.Config(
        app, log_level=log_level, server_header=False, timeout_keep_alive=5, backlog=BACKLOG
    )
    config.load()  # resolves the protocol class that the guard wraps
    config.http_protocol_class = guarded_protocol(
        config.http_protocol_class, idle_timeout=idle_timeout, max_connections=max_connections
    )
    flood = RateLimitFilter()
    for name in ("uvicorn.error", "uvicorn.access", "asyncio", "quantsearch.server.app"):
        logging.getLogger(name).addFilter(flood)
    uvicorn.Server(config).run(sockets=[sock])
