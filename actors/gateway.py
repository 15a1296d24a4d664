"""The gateway actor: the outside world's door. Clients connect over WebSocket (the protocol
in docs/protocol.md) and HTTP on one port (aiohttp); each connection is a transport-neutral
:class:`~transports.session.ClientSession` in the actor's :class:`~transports.sessions.SessionHub`.

Clients: the WebSocket (:mod:`transports.websocket`; at ``/`` in the older project's protocol),
browsers over WebRTC (:mod:`transports.webrtc`, signalling on the same port), and OpenAI's
audio API (:mod:`transports.openai_api`). Who may use the port is
:mod:`transports.access`'s; the connection caps and the handshake deadline that keep slow and
hostile clients from costing the others anything are :mod:`transports.guard`'s.

Consumes from clients: the protocol's commands and microphone audio, and HTTP requests. On the
bus: from the supervisor ``session.state``, ``playout.speak`` / ``playout.text``,
``control.barge_in_outcome``, ``control.stop``, ``session.reply``, ``session.closed`` and
``error``; from TTS workers ``tts.frame`` / ``tts.end`` / ``error``; on the event bus ``vad.*``
(``speech_start`` holds playout: the barge-in) and ``asr.transcript`` for its clients.
Emits: ``session.opened`` / ``session.config`` / ``session.text`` / ``control.*`` /
``playout.event`` / ``session.closed`` to the supervisor; ``route.request`` /
``route.release`` to the router; ``tts.start`` / ``tts.text`` / ``tts.credit`` /
``control.*`` / ``tts.query`` to workers (it alone controls a session's utterance); the
microphone as 16 kHz 20 ms ``audio.frame`` on ``audio.in.<session>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import http_exceptions, web

from bus import topics
from bus.inbound import Inbound
from bus.logs import kv
from bus.runtime import Actor
from bus.schema.system import Registration, RegistryChange
from bus.settings import load_settings
from bus.topology import ActorConfig
from transports import access, guard, websocket
from transports.http_api import HttpApi
from transports.openai_api import OpenAiAudio
from transports.session import StallPolicy
from transports.sessions import SessionHub
from transports.webrtc import WebRtcOptions, WebRtcServer

MAX_HTTP_BODY_BYTES = 256 * 1024


class _BadRequestsInOneLine(logging.Filter):
    """aiohttp logs a request it could not parse (a header over 8 KiB, a garbled request line)
    at error level with a traceback, though it answered 400 and nothing failed: one warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, http_exceptions.HttpProcessingError):
            record.msg, record.args, record.exc_info = "bad request refused", (), None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.__dict__["status"] = exc.code
            record.__dict__["error"] = str(exc.message)[:200]
        return True


def _quiet_bad_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestsInOneLine) for f in server_log.filters):
        server_log.addFilter(_BadRequestsInOneLine())


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """``actors.gateway`` in topology.yaml."""

    http_host: str = "127.0.0.1"
    """Address of the client port (WebSocket ``/ws`` and HTTP)."""
    http_port: int = 8080
    """0 picks a free port."""
    max_text_chars: int = 2000
    """Longer text gets ``TEXT_TOO_LONG``."""
    busy_wait_ms: float = 5000.0
    """Every fitting TTS worker saturated: ask the router again for this long, milliseconds."""
    max_client_backlog_ms: float = 2000.0
    """Audio sent to a client and not taken by it (its socket stopped draining) before its
    utterance pauses, milliseconds."""
    stalled_stop_ms: float = 5000.0
    """A client stalled this long has its utterance stopped (the worker's stream slot freed)."""
    stalled_close_ms: float = 20000.0
    """A client stalled this long is cut off: its session ends ``client_stalled``."""
    webrtc: dict[str, Any] = field(default_factory=dict)
    """Browser sessions: :class:`~transports.webrtc.WebRtcOptions` (ICE servers, timeouts)."""
    tls_cert: Path | None = None
    """PEM certificate: with ``tls_key`` the port serves HTTPS and WSS (relative: from the
    current directory)."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``, unencrypted."""
    token: str = ""
    """Access token clients must present (``$DUPLEX_TOKEN`` wins); required off loopback."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins besides the gateway's own that may open ``/ws`` and send non-GET
    requests, e.g. ``https://app.example``."""
    handshake_timeout_s: float = 10.0
    """A connection's first request headers (TLS handshake included) must be complete this
    long after it is accepted, a kept-alive connection's next request this long after the
    previous response; else it is closed unanswered. Seconds."""
    first_message_timeout_s: float = 30.0
    """A ``/ws`` client that sends nothing this long after the upgrade is ended
    (``error`` ``TIMEOUT``, ``session_end`` ``first_message_timeout``), seconds."""
    idle_timeout_s: float = 300.0
    """A ``/ws`` client that sends nothing this long while the bot is silent is ended
    (``error`` ``TIMEOUT``, ``session_end`` ``idle_timeout``), seconds."""
    max_connections: int = 1000
    """TCP connections open at once on the port; more are answered 503 ``GATEWAY_FULL``."""
    max_connections_per_address: int = 64
    """TCP connections open at once from one IP address; more are answered 429
    ``TOO_MANY_CONNECTIONS``. 0: no such cap (behind a reverse proxy, whose clients all have
    its address)."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"http_port must be 0..65535, not {self.http_port}")
        if self.max_text_chars < 1 or self.busy_wait_ms < 0:
            raise ValueError("max_text_chars must be positive and busy_wait_ms not negative")
        stall = (self.max_client_backlog_ms, self.stalled_stop_ms, self.stalled_close_ms)
        if not (stall[0] > 0 and 0 <= stall[1] <= stall[2]):
            raise ValueError(
                "max_client_backlog_ms must be positive and stalled_stop_ms <= stalled_close_ms"
            )
        for name in ("handshake_timeout_s", "first_message_timeout_s", "idle_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be more than 0")
        if self.max_connections < 1 or self.max_connections_per_address < 0:
            raise ValueError(
                "max_connections must be positive and max_connections_per_address not negative"
            )

    def stall_policy(self) -> StallPolicy:
        return StallPolicy(
            self.max_client_backlog_ms / 1000,
            self.stalled_stop_ms / 1000,
            self.stalled_close_ms / 1000,
        )

    @property
    def connection_limits(self) -> guard.ConnectionLimits:
        return guard.ConnectionLimits(
            handshake_timeout_s=self.handshake_timeout_s,
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
        )

    @property
    def silence_limits(self) -> websocket.SilenceLimits:
        return websocket.SilenceLimits(
            first_message_s=self.first_message_timeout_s, idle_s=self.idle_timeout_s
        )


class Gateway(Actor):
    """Terminates client connections; see the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.settings = load_settings(GatewaySettings, config.settings, kind="gateway")
        self.http_port = self.settings.http_port
        self.hub = SessionHub(
            self,
            self.metrics.registry,
            max_text_chars=self.settings.max_text_chars,
            busy_wait_s=self.settings.busy_wait_ms / 1000,
            stall=self.settings.stall_policy(),
        )
        self.http = HttpApi(
            self.hub,
            self.registry,
            self.metrics.registry,
            self._health,
            older_websocket=self._older_websocket,
        )
        self.openai = OpenAiAudio(self.hub, self.registry, self)
        webrtc = load_settings(WebRtcOptions, self.settings.webrtc, kind="gateway.webrtc")
        self.webrtc = WebRtcServer(self.hub, webrtc, self.metrics.registry)
        self._runner: web.AppRunner | None = None
        self.guard = guard.ConnectionGuard(
            self.settings.connection_limits, guard.GuardMetrics(self.metrics.registry)
        )
        self.access = access.AccessPolicy.for_gateway(
            self.settings.http_host,
            access.configured_token(self.settings.token),
            self.settings.allowed_origins,
        )
        self.subscribe(topics.VAD)
        self.subscribe(topics.ASR)
        self.registry.listen(self._on_registry)
        _quiet_bad_requests()

    def _on_registry(self, change: RegistryChange, reg: Registration) -> None:
        self.hub.on_registry(change, reg, resync=self.registry.in_snapshot)

    async def on_start(self) -> None:
        cert, key = self.settings.tls_cert, self.settings.tls_key
        tls = access.server_ssl_context(cert, key) if cert and key else None
        app = web.Application(
            client_max_size=MAX_HTTP_BODY_BYTES,
            middlewares=[
                self.guard.middleware(),
                access.middleware(self.access, self.metrics.registry),
            ],
        )
        app.router.add_get("/ws", self._websocket)
        self.http.add_routes(app)
        self.openai.add_routes(app)
        self.webrtc.add_routes(app)
        # aiohttp closes a kept-alive connection that waits this long for its next request.
        keepalive = self.settings.handshake_timeout_s
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive)
        await self._runner.setup()
        files, wanted = guard.raise_file_limit(self.settings.max_connections)
        if files < wanted:
            self.log.warning(
                "open-file limit below max_connections",
                extra=kv(limit=files, wanted=wanted, max_connections=self.settings.max_connections),
            )
        host = self.settings.http_host
        site = guard.GuardedSite(self._runner, self.guard, host, self.http_port, ssl_context=tls)
        await site.start()
        if self._runner.addresses:
            self.http_port = int(self._runner.addresses[0][1])
        where = f"{f'[{host}]' if ':' in host else host}:{self.http_port}"
        self.endpoints["ws"] = f"{'wss' if tls else 'ws'}://{where}/ws"
        self.spawn(self.hub.streams.watchdog())
        self.spawn(self.hub.watch_clients())
        http = f"{'https' if tls else 'http'}://{where}/"
        self.log.info("gateway listening", extra=kv(url=self.endpoints["ws"], http=http))

    async def on_stop(self) -> None:
        await self.hub.shutdown()
        await self.webrtc.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        silence, timeouts = self.settings.silence_limits, self.guard.metrics.timeouts
        return await websocket.serve(request, self.hub, silence, timeouts)

    async def _older_websocket(self, request: web.Request) -> web.StreamResponse:
        silence, timeouts = self.settings.silence_limits, self.guard.metrics.timeouts
        return await websocket.serve(request, self.hub, silence, timeouts, older_project=True)

    async def on_message(self, inbound: Inbound) -> None:
        await self.hub.on_message(inbound)

    def _health(self) -> dict[str, Any]:
        return {
            "actor_id": self.id,
            "sessions": len(self.hub.sessions),
            "webrtc_sessions": len(self.webrtc.peers),
            "registered": self.registered.is_set(),
        }
