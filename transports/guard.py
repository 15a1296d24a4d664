"""The gateway's port against slow and hostile clients: connection caps and a handshake deadline.

:class:`GuardedSite` serves an aiohttp runner as ``web.TCPSite`` does, but every accepted
connection meets its :class:`ConnectionGuard` before aiohttp reads a byte of it:

- **Caps.** With ``max_connections`` connections open, a new one is answered ``503``
  ``GATEWAY_FULL``; with ``max_connections_per_address`` open from its IP address, ``429``
  ``TOO_MANY_CONNECTIONS`` (both with ``Retry-After``), and closed. aiohttp never sees it: the
  answer is written as soon as the request's headers are in, the rest is not read, and a
  client that has not sent its headers within :data:`REFUSAL_LINGER_S` is dropped unanswered.
- **Handshake deadline.** A connection whose first request's headers are not complete
  ``handshake_timeout_s`` after it was accepted (the TLS handshake included) is closed
  unanswered. A kept-alive connection has as long after each response for its next request:
  the gateway sets aiohttp's ``keepalive_timeout`` to the same value (aiohttp closes a
  connection that waits for its next request that long, a half-sent one included).

With TLS, a connection is counted and capped once its TLS handshake is done (before, the peer
is not known to the application); the handshake itself is bounded by ``handshake_timeout_s``.

Counted on the gateway's registry: ``duplex_gateway_connections`` (open now),
``duplex_gateway_connections_refused_total{reason}`` and
``duplex_gateway_timeouts_total{kind}`` (``handshake`` here; :mod:`transports.websocket` adds
``first_message`` and ``idle``).
"""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge
from yarl import URL

from transports.access import Handler

REFUSAL_LINGER_S = 2.0
"""A refused client has this long to finish sending its request headers before the
connection is dropped."""
RETRY_AFTER_S = 5
END_OF_HEADERS = b"\r\n\r\n"
FILE_HEADROOM = 256
"""File descriptors the gateway needs besides its client connections (bus sockets, files)."""
GATEWAY_FULL = "max_connections"
ADDRESS_FULL = "max_connections_per_address"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What a :class:`ConnectionGuard` enforces (``actors.gateway`` settings of those names)."""

    handshake_timeout_s: float = 10.0
    """From accept to the first request's headers complete (TLS handshake included), seconds."""
    max_connections: int = 1000
    """Connections open at once on the port."""
    max_connections_per_address: int = 64
    """Connections open at once from one IP address; 0: no such cap."""


class GuardMetrics:
    """The guard's figures in Prometheus."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "duplex_gateway_connections",
            "TCP connections open on the gateway's port (refused ones not counted)",
            registry=registry,
        )
        self.refused = Counter(
            "duplex_gateway_connections_refused_total",
            "Connections answered 503/429 and closed unread, by the cap reached "
            "(max_connections, max_connections_per_address)",
            ["reason"],
            registry=registry,
        )
        self.timeouts = Counter(
            "duplex_gateway_timeouts_total",
            "Connections and sessions closed because the client was silent too long, by kind "
            "(handshake, first_message, idle)",
            ["kind"],
            registry=registry,
        )
        for reason in (GATEWAY_FULL, ADDRESS_FULL):
            self.refused.labels(reason=reason)  # every series exists from the start, at 0
        for kind in ("handshake", "first_message", "idle"):
            self.timeouts.labels(kind=kind)


def _answer(status: int, phrase: str, code: str, message: str) -> bytes:
    """A whole HTTP response, the body as the access middleware's refusals have it."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER_S}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """Counts one port's connections by address, refuses those over a cap and closes those
    that do not send a request in time; see the module docstring."""

    def __init__(self, limits: ConnectionLimits, metrics: GuardMetrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self.open = 0
        self.by_address: dict[str, int] = {}
        self.awaiting: dict[asyncio.BaseTransport, _Connection] = {}
        """Admitted connections whose first request has not come yet, by transport."""
        self.refusals = {
            GATEWAY_FULL: _answer(
                503,
                "Service Unavailable",
                "GATEWAY_FULL",
                f"the gateway has its maximum of {limits.max_connections} connections open; "
                "try again later",
            ),
            ADDRESS_FULL: _answer(
                429,
                "Too Many Requests",
                "TOO_MANY_CONNECTIONS",
                f"this address has its maximum of {limits.max_connections_per_address} "
                "connections open to the gateway; close one first",
            ),
        }

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """What ``loop.create_server`` calls per accepted connection: aiohttp's handler from
        ``server`` behind this guard."""
        return lambda: _Connection(self, server)

    def middleware(self) -> Middleware:
        """The aiohttp middleware (put it first) that marks a connection's first request as
        come: its handshake deadline no longer applies."""

        @web.middleware
        async def first_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            transport = request.transport
            if transport is not None:
                connection = self.awaiting.pop(transport, None)
                if connection is not None:
                    connection.request_came()
            return await handler(request)

        return first_request

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or the cap it would exceed, uncounted."""
        limits = self.limits
        if self.open >= limits.max_connections:
            return GATEWAY_FULL
        from_address = self.by_address.get(address, 0)
        if 0 < limits.max_connections_per_address <= from_address:
            return ADDRESS_FULL
        self.open += 1
        self.by_address[address] = from_address + 1
        self.metrics.open.set(self.open)
        return None

    def release(self, address: str) -> None:
        """An admitted connection from ``address`` is gone."""
        self.open -= 1
        left = self.by_address.pop(address) - 1
        if left:
            self.by_address[address] = left
        self.metrics.open.set(self.open)


class _Connection(asyncio.Protocol):
    """One accepted connection: handed to aiohttp's handler, or refused."""

    def __init__(self, guard: ConnectionGuard, server: web.Server) -> None:
        self.guard = guard
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.accepted = self.loop.time()
        """Taken when the connection was accepted, before any TLS handshake."""
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.handler: asyncio.Protocol | None = None
        """aiohttp's request handler, once admitted."""
        self.timer: asyncio.TimerHandle | None = None
        """The handshake deadline, or a refused connection's linger."""
        self.refusal = ""
        """Why the connection is refused (the answer is yet to be written); empty: it is not."""
        self.tail = b""
        """A refused connection: the last bytes it sent, to find the end of its headers."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is no subclass of asyncio.Transport, so no isinstance).
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self.guard.admit(self.address)
        if refusal is not None:
            self._refuse(refusal)
            return
        deadline = self.accepted + self.guard.limits.handshake_timeout_s
        self.timer = self.loop.call_at(deadline, self._handshake_expired)
        self.guard.awaiting[transport] = self
        self.handler = self.server()
        self.handler.connection_made(transport)

    def request_came(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _handshake_expired(self) -> None:
        self.timer = None
        self.guard.metrics.timeouts.labels(kind="handshake").inc()
        if self.transport is not None:
            self.transport.abort()  # nothing to flush, and no TLS goodbye to wait for

    def _refuse(self, reason: str) -> None:
        assert self.transport is not None
        self.guard.metrics.refused.labels(reason=reason).inc()
        self.refusal = reason
        self.timer = self.loop.call_later(REFUSAL_LINGER_S, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
            return
        # Refused: answered once its request headers are in (a client may not expect an answer
        # before it has asked), unread beyond; nothing is kept but the last bytes.
        seen = self.tail + data
        self.tail = seen[-len(END_OF_HEADERS) + 1 :]
        if END_OF_HEADERS in seen and self.transport is not None and self.refusal:
            self.transport.write(self.guard.refusals[self.refusal])
            self.refusal = ""
            self.transport.close()

    def eof_received(self) -> bool | None:
        if self.handler is not None:
            return self.handler.eof_received()
        return None  # refused: the client is done, close

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.handler is None:
            return
        if self.transport is not None:
            self.guard.awaiting.pop(self.transport, None)
        self.guard.release(self.address)
        self.handler.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """``web.TCPSite`` with a :class:`ConnectionGuard` in front of every connection and the TLS
    handshake bounded by the guard's ``handshake_timeout_s``."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._guard = guard
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return str(URL.build(scheme=scheme, host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # BaseSite refuses a runner that is not set up
        timeout = self._guard.limits.handshake_timeout_s
        tls: dict[str, Any] = {}
        if self._ssl_context is not None:
            # A TLS goodbye is bounded too: a peer that never answers it frees its socket.
            tls = {"ssl_handshake_timeout": timeout, "ssl_shutdown_timeout": timeout}
        # BaseSite's subclasses keep their listening server in ``_server``: stop() closes it
        # and BaseRunner.addresses reads its sockets (as for aiohttp's own TCPSite).
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            **tls,
        )


def raise_file_limit(connections: int) -> tuple[int, int]:
    """Raise this process's soft limit of open files (never past the hard limit) so that
    ``connections`` client connections fit beside :data:`FILE_HEADROOM` others; returns the
    limit now in force and the one wanted."""
    wanted = connections + FILE_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass  # the caller warns with the figures
    return (wanted if soft == resource.RLIM_INFINITY else soft), wanted
