"""The Wyoming actor: Home Assistant's voice protocol as a front door to Duplex's TTS workers
and ASR, on the bus like the gateway (its own process; ``duplex run wyoming``).

Serves ``uri`` (``tcp://127.0.0.1:10210`` by default) with the ``wyoming`` package's
``AsyncTcpServer``; every connection is a :class:`~transports.wyoming_server.WyomingHandler`
(what it answers to what: that module's docstring, and docs/protocol.md, "Wyoming"). TTS goes
through the router to a worker like every other utterance (``route.request``, ``tts.start`` /
``tts.text`` / ``tts.credit`` to the worker, frames back); ASR through ``asr.audio`` requests
to the least loaded live ASR. Optionally announced over zeroconf (mDNS) for Home Assistant's
discovery (``zeroconf``: a service name; off by default; needs the ``zeroconf`` extra).

Wyoming has no authentication and no encryption: the server binds loopback by default, and
another address only with ``allow_remote: true`` (behind a firewall or a VPN).
Settings: :class:`WyomingSettings` (``actors.wyoming`` in topology.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlparse

from prometheus_client import Counter, Gauge
from wyoming.server import AsyncTcpServer

from bus.inbound import Inbound
from bus.logs import kv
from bus.runtime import Actor
from bus.settings import load_settings
from bus.topology import ActorConfig
from transports.access import is_loopback
from transports.utterance_stream import StreamClient
from transports.wyoming_server import WyomingHandler, WyomingLimits, WyomingService


@dataclass(frozen=True, slots=True)
class WyomingSettings:
    """``actors.wyoming`` in topology.yaml."""

    uri: str = "tcp://127.0.0.1:10210"
    """Where the server listens (``tcp://HOST:PORT``; port 0 picks a free one)."""
    allow_remote: bool = False
    """Serve an address beyond loopback (Wyoming has no token and no TLS)."""
    zeroconf: str = ""
    """Announce the server over mDNS under this name (empty: not announced)."""
    max_connections: int = 64
    """Clients at once; more are answered ``error`` ``BUSY`` and closed."""
    max_text_chars: int = 10_000
    max_audio_s: float = 300.0
    stream_transcripts: bool = True
    busy_wait_ms: float = 5000.0
    """Every fitting TTS worker saturated: ask the router again for this long."""

    def __post_init__(self) -> None:
        url = urlparse(self.uri)
        if url.scheme != "tcp" or not url.hostname or url.port is None:
            raise ValueError(f"uri {self.uri!r} is not tcp://HOST:PORT")
        if not self.allow_remote and not is_loopback(url.hostname):
            raise ValueError(
                f"uri {self.uri!r} is beyond loopback, and Wyoming has no authentication: "
                "set allow_remote: true to serve it anyway (behind a firewall or VPN)"
            )
        if self.max_connections < 1 or self.max_text_chars < 1 or self.max_audio_s <= 0:
            raise ValueError("max_connections, max_text_chars and max_audio_s must be positive")

    @property
    def host(self) -> str:
        return urlparse(self.uri).hostname or ""

    @property
    def port(self) -> int:
        return urlparse(self.uri).port or 0


class Wyoming(Actor):
    """See the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.settings = s = load_settings(WyomingSettings, config.settings, kind="wyoming")
        self.streams = StreamClient(self, busy_wait_s=s.busy_wait_ms / 1000)
        limits = WyomingLimits(
            max_text_chars=s.max_text_chars,
            max_audio_s=s.max_audio_s,
            stream_transcripts=s.stream_transcripts,
        )
        self.service = WyomingService(self, self.streams, limits)
        self.server = AsyncTcpServer(s.host, s.port)
        self.port = s.port
        self._zeroconf: Any = None
        registry = self.metrics.registry
        self.connections = Gauge(
            "duplex_wyoming_connections", "Wyoming clients connected", registry=registry
        )
        self.connections.set_function(lambda: self.service.connections)
        self.refused = Counter(
            "duplex_wyoming_refused_total",
            "Wyoming connections refused because max_connections were open",
            registry=registry,
        )

    async def on_start(self) -> None:
        await self.server.start(partial(self._handler))
        server = getattr(self.server, "_server", None)  # (the package keeps it private)
        if server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])
        host = self.settings.host
        self.endpoints["wyoming"] = f"tcp://{f'[{host}]' if ':' in host else host}:{self.port}"
        self.spawn(self.streams.watchdog())
        if self.settings.zeroconf:
            await self._announce()
        self.log.info("wyoming listening", extra=kv(uri=self.endpoints["wyoming"]))

    def _handler(self, reader: Any, writer: Any) -> WyomingHandler:
        if self.service.connections >= self.settings.max_connections:
            self.refused.inc()
            return _Full(self.service, reader, writer)
        return WyomingHandler(self.service, reader, writer)

    async def _announce(self) -> None:
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf
        except ImportError as exc:
            raise ValueError(
                "zeroconf is set but the zeroconf package is missing (pip install zeroconf)"
            ) from exc
        self._zeroconf = HomeAssistantZeroconf(
            port=self.port, name=self.settings.zeroconf, host=self.settings.host
        )
        await self._zeroconf.register_server()

    async def on_stop(self) -> None:
        await self.server.stop()

    async def on_message(self, inbound: Inbound) -> None:
        if not await self.streams.on_message(inbound):
            await super().on_message(inbound)


class _Full(WyomingHandler):
    """A connection over ``max_connections``: ``error`` ``BUSY``, closed."""

    async def run(self) -> None:
        from wyoming.error import Error

        self.service.count_error("BUSY")
        try:
            await self._send(Error(text="too many Wyoming clients", code="BUSY").event())
        finally:
            self.writer.close()
