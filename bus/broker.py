"""The broker: registry, heartbeats, discovery and the event proxy.

Consumes on its ROUTER (``config.control``): ``ready``, ``heartbeat``, ``update``,
``disconnect``, ``discover``, ``describe``, ``ping``; and ``gone`` from ``duplex run``'s watcher
when an actor process died.
Emits: ``registered``, ``heartbeat`` (every interval, to each actor), ``disconnect`` (to an
actor it does not know), ``registry.snapshot``, ``description``, ``pong``, ``error``; the
``registry.event`` of a removal in answer to ``gone``; and ``registry.event`` on the event bus
topic ``sys.registry`` for every change.

The event proxy (XSUB ``events_in`` → XPUB ``events_out``) runs in libzmq's own proxy in a
thread, so audio never passes through Python here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import msgspec
import zmq
import zmq.asyncio
from prometheus_client import Counter, Gauge

from bus import curve, sockets
from bus.envelope import decode, encode, new_id
from bus.errors import DecodeError
from bus.lifecycle import stop_on_signals
from bus.limits import PeerRateLimit
from bus.logs import RateLimitedLog, kv
from bus.metrics import BusMetrics
from bus.registry import Registry
from bus.schema import Message, decode_message, envelope_for
from bus.schema.system import (
    REGISTRY_TOPIC,
    Describe,
    Description,
    Disconnect,
    Discover,
    Error,
    Gone,
    Heartbeat,
    Ping,
    Pong,
    Ready,
    Registered,
    Registration,
    RegistryChange,
    RegistryEvent,
    Update,
)
from bus.topology import BrokerConfig

MAX_ACTORS = 10_000
"""Registrations the broker accepts before it refuses new ones."""

PEER_RATE = 200.0
"""Messages per second one peer may send the broker on average (an actor sends about one)."""

PEER_BURST = 1000.0
"""Messages one peer may send the broker in a burst."""
STALL_NOISE_S = 0.05
"""Lateness of a serving round below which it is taken as scheduling noise, not a stall."""


class BrokerMetrics(BusMetrics):
    """Bus counters plus the registry's own."""

    def __init__(self) -> None:
        super().__init__("broker")
        self.actors = Gauge(
            "duplex_broker_actors",
            "Live registered actors, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.changes = Counter(
            "duplex_broker_registry_changes_total",
            "Registry changes, by change and reason",
            ["change", "reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "duplex_broker_rate_limited_total",
            "Messages dropped because their sender exceeded its rate",
            registry=self.registry,
        )
        self.curve_refused = Counter(
            "duplex_broker_curve_refused_total",
            "Connections refused by the CURVE allow-list",
            registry=self.registry,
        )
        self.stalled = Counter(
            "duplex_broker_stalled_seconds_total",
            "Time the broker's own loop was not running (host or process stall), not counted "
            "as silence of the actors",
            registry=self.registry,
        )


class Broker:
    """The one well-known address of a Duplex deployment."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.epoch = new_id()[:12]
        self.heartbeat_s = config.heartbeat_ms / 1000
        self.registry = Registry(self.epoch, self.heartbeat_s * config.liveness)
        self.metrics = BrokerMetrics()
        self.log = logging.getLogger("duplex.broker")
        self.endpoints: dict[str, str] = {}
        self.bound = threading.Event()
        """Set once every endpoint is bound (tests and embedders wait on it)."""
        self.started_wall_ns = time.time_ns()
        self.stats = {"received": 0, "sent": 0, "invalid": 0}
        self._bad = RateLimitedLog(self.log)
        self._rate = PeerRateLimit(PEER_RATE, PEER_BURST)
        self._stopping = False
        self._ctx: zmq.asyncio.Context | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._events: zmq.asyncio.Socket | None = None
        self._proxy_ctl: zmq.asyncio.Socket | None = None
        self._proxy_thread: threading.Thread | None = None
        self._authenticator: Any = None
        self._registration = Registration(
            actor_id=f"broker-{socket.gethostname()}-{os.getpid()}",
            kind="broker",
            host=socket.gethostname(),
            pid=os.getpid(),
            started_wall_ns=self.started_wall_ns,
        )

    def stop(self) -> None:
        """Ask the broker to stop; :meth:`run` returns once it has shut down."""
        self._stopping = True

    async def run(self) -> None:
        """Bind, serve until :meth:`stop`, then close everything."""
        try:
            self._setup()
            self.log.info("broker started", extra=kv(epoch=self.epoch, **self.endpoints))
            await self._serve()
        finally:
            self._teardown()

    # ------------------------------------------------------------------ set-up

    def _setup(self) -> None:
        ctx = self._ctx = zmq.asyncio.Context()
        cfg = self.config
        keys = None
        if cfg.curve.enabled:
            keys = curve.load_keypair(cfg.curve.keys_dir / f"{cfg.curve.broker_key}.key_secret")
            allow = curve.AllowList(
                cfg.curve.allow_dir, on_refused=lambda _key: self.metrics.curve_refused.inc()
            )
            self._authenticator = curve.start_authenticator(ctx, allow)
        router = self._router = sockets.prepare(ctx.socket(zmq.ROUTER))
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # an actor's newest connection takes its id
        if keys is not None:
            curve.make_server(router, keys)
        self.endpoints["control"] = sockets.bind(router, cfg.control)

        # Registry events enter the proxy like any publisher's, through an inproc link.
        events_link = f"inproc://broker-events-{self.epoch}"
        self._events = ctx.socket(zmq.PUB)
        self._events.bind(events_link)
        sync_ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(ctx.underlying)
        xsub = sockets.prepare(sync_ctx.socket(zmq.XSUB))
        xpub = sockets.prepare(sync_ctx.socket(zmq.XPUB))
        for sock in (xsub, xpub):
            if keys is not None:
                curve.make_server(sock, keys)
        self.endpoints["events_in"] = sockets.bind(xsub, cfg.events_in)
        self.endpoints["events_out"] = sockets.bind(xpub, cfg.events_out)
        xsub.connect(events_link)
        ctl_link = f"inproc://broker-proxy-ctl-{self.epoch}"
        proxy_ctl = sync_ctx.socket(zmq.PAIR)
        proxy_ctl.bind(ctl_link)
        self._proxy_ctl = ctx.socket(zmq.PAIR)
        self._proxy_ctl.connect(ctl_link)
        self._proxy_thread = threading.Thread(
            target=_run_proxy, args=(xsub, xpub, proxy_ctl), name="event-proxy", daemon=True
        )
        self._proxy_thread.start()
        if cfg.metrics_port is not None:
            port = self.metrics.serve(cfg.metrics_host, cfg.metrics_port)
            self.endpoints["metrics"] = f"http://{cfg.metrics_host}:{port}/metrics"
        self._registration = msgspec.structs.replace(
            self._registration, endpoints=dict(self.endpoints)
        )
        self.bound.set()

    def _teardown(self) -> None:
        if self._proxy_ctl is not None and self._proxy_thread is not None:
            self._proxy_ctl.send(b"TERMINATE")
            self._proxy_thread.join(timeout=2)
        for sock in (self._router, self._events, self._proxy_ctl):
            if sock is not None:
                sock.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
        if self._ctx is not None:
            self._ctx.term()
        self.metrics.close()
        self.log.info("broker stopped", extra=kv(epoch=self.epoch))

    # ------------------------------------------------------------------ serve

    async def _serve(self) -> None:
        assert self._router is not None
        router = self._router
        next_beat = time.monotonic() + self.heartbeat_s
        while not self._stopping:
            began = time.monotonic()
            timeout_ms = max(0, min(200, int((next_beat - began) * 1000)))
            if await router.poll(timeout_ms):
                for _ in range(256):
                    try:
                        frames = await router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    await self._handle(frames)
            now = time.monotonic()
            self._forgive_stall(now - began - timeout_ms / 1000, now)
            for event in self.registry.expire(now):
                self.log.info(
                    "actor expired",
                    extra=kv(actor_id=event.registration.actor_id, kind=event.registration.kind),
                )
                await self._publish(event)
            if now >= next_beat:
                next_beat = now + self.heartbeat_s
                self._rate.prune(now)
                beat = Heartbeat(registry_version=self.registry.version)
                for entry in self.registry.entries():
                    await self._send(entry.identity, beat)

    def _forgive_stall(self, late_s: float, now: float) -> None:
        """A round that ended ``late_s`` after its poll could have: beyond a little scheduling
        noise, the broker itself was not running (a stalled host, or a starved process), so it
        could not hear anybody. That time is not the actors' silence: without this, one stall
        longer than the expiry expires every actor at once and breaks every stream in flight."""
        if late_s < STALL_NOISE_S:
            return
        self.registry.forgive(late_s, now)
        self.metrics.stalled.inc(late_s)
        if late_s >= self.heartbeat_s:
            self._bad.warning(
                "stall",
                "broker stalled; the time is not counted as the actors' silence",
                stalled_s=round(late_s, 2),
            )

    async def _handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self._invalid(b"", DecodeError("bad_frames", "no identity or no header"))
            return
        identity = frames[0]
        if not self._rate.allow(identity):
            self.metrics.rate_limited.inc()
            self._bad.warning("rate", "peer over its rate, message dropped", peer=identity.hex())
            return
        try:
            env = decode(frames[1:])
            msg = decode_message(env)
        except DecodeError as exc:
            self._invalid(identity, exc)
            code = "UNSUPPORTED_TYPE" if exc.reason == "unknown_type" else "INVALID_MESSAGE"
            await self._send(identity, Error(code=code, message=str(exc)[:1000]))
            return
        self.stats["received"] += 1
        self.metrics.received.labels(env.type).inc()
        now = time.monotonic()
        known = self.registry.touch(identity, now)
        reply: Message | None = None
        if isinstance(msg, Ready):
            reply = await self._on_ready(identity, msg.registration, now)
        elif isinstance(msg, Heartbeat):
            reply = None if known else Disconnect(reason="not registered")
        elif isinstance(msg, Update):
            event = self.registry.update(identity, msg, now)
            if event is None:
                reply = Disconnect(reason="not registered")
            else:
                await self._publish(event)
        elif isinstance(msg, Disconnect):
            event = self.registry.remove(identity, "disconnect")
            if event is not None:
                self.log.info("actor left", extra=kv(actor_id=event.registration.actor_id))
                await self._publish(event)
        elif isinstance(msg, Gone):
            reply = await self._on_gone(msg)
        elif isinstance(msg, Discover):
            reply = self.registry.snapshot(msg.kind)
        elif isinstance(msg, Describe):
            reply = Description(registration=self._registration, stats=self._describe_stats())
        elif isinstance(msg, Ping):
            reply = Pong()
        else:
            reply = Error(
                code="UNSUPPORTED_TYPE", message=f"the broker does not serve {env.type!r}"
            )
        if reply is not None:
            await self._send(identity, reply, reply_to=env.id)

    async def _on_ready(self, identity: bytes, reg: Registration, now: float) -> Message:
        if not reg.actor_id or not reg.kind:
            return Error(code="INVALID_MESSAGE", message="actor_id and kind must not be empty")
        known = self.registry.actor_for(identity) == reg.actor_id
        if not known and len(self.registry) >= MAX_ACTORS:
            return Error(code="REGISTRY_FULL", message=f"{MAX_ACTORS} actors registered")
        predecessor = self.registry.remove_predecessor(reg)
        if predecessor is not None:
            # Published first: a mirror never sees the crashed process and its successor at once.
            self.log.info(
                "actor replaced",
                extra=kv(actor_id=reg.replaces, by=reg.actor_id, restarts=reg.restarts or 0),
            )
            await self._publish(predecessor)
        event = self.registry.register(reg, identity, now)
        if event.change is RegistryChange.ADDED:
            self.log.info(
                "actor registered",
                extra=kv(actor_id=reg.actor_id, kind=reg.kind, host=reg.host, pid=reg.pid),
            )
        await self._publish(event)
        return Registered(
            heartbeat_ms=self.config.heartbeat_ms,
            liveness=self.config.liveness,
            broker_epoch=self.epoch,
            events_in=self.endpoints["events_in"],
            events_out=self.endpoints["events_out"],
        )

    async def _on_gone(self, msg: Gone) -> Message:
        event = self.registry.remove_actor(msg.actor_id, msg.pid, "exited")
        if event is None:
            return Error(code="NOT_REGISTERED", message=f"no {msg.actor_id} with pid {msg.pid}")
        self.log.info("actor exited", extra=kv(actor_id=msg.actor_id, pid=msg.pid, how=msg.reason))
        await self._publish(event)
        return event

    # ------------------------------------------------------------------ helpers

    async def _send(self, identity: bytes, msg: Message, reply_to: str = "") -> None:
        assert self._router is not None
        env = envelope_for(msg, src=self._registration.actor_id, reply_to=reply_to)
        try:
            await self._router.send_multipart([identity, *encode(env)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EAGAIN, zmq.EHOSTUNREACH):
                return  # that actor is gone or not reading; it will be purged if it stays so
            raise
        self.stats["sent"] += 1
        self.metrics.sent.labels(env.type).inc()

    async def _publish(self, event: RegistryEvent) -> None:
        assert self._events is not None
        reg = event.registration
        self.metrics.changes.labels(event.change.value, event.reason).inc()
        kinds: dict[str, int] = {}
        for entry in self.registry.entries():
            kinds[entry.registration.kind] = kinds.get(entry.registration.kind, 0) + 1
        self.metrics.actors.labels(reg.kind).set(kinds.get(reg.kind, 0))
        env = envelope_for(event, src=self._registration.actor_id)
        await self._events.send_multipart([REGISTRY_TOPIC, *encode(env)])

    def _invalid(self, identity: bytes, exc: DecodeError) -> None:
        self.stats["invalid"] += 1
        self.metrics.invalid.labels(exc.reason).inc()
        self._bad.warning(
            exc.reason, "invalid message dropped", peer=identity.hex(), error=str(exc)[:200]
        )

    def _describe_stats(self) -> dict[str, Any]:
        return {
            **self.stats,
            "actors": len(self.registry),
            "registry_version": self.registry.version,
            "epoch": self.epoch,
            "uptime_s": round((time.time_ns() - self.started_wall_ns) / 1e9, 3),
        }


def _run_proxy(xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes], ctl: zmq.Socket[bytes]) -> None:
    try:
        zmq.proxy_steerable(xsub, xpub, None, ctl)
    except zmq.ContextTerminated:
        pass
    finally:
        for sock in (xsub, xpub, ctl):
            sock.close(linger=0)


async def serve_broker(broker: Broker) -> None:
    """Run ``broker`` until SIGTERM or SIGINT."""
    with stop_on_signals(broker.stop):
        await broker.run()
