"""The shared actor runtime: connect, register, heartbeat, reconnect, dispatch, stop, metrics.

An actor subclasses :class:`Actor` and overrides the hooks ``on_start``, ``on_message``,
``on_stop`` and ``on_failure`` (pykka's lifecycle). The runtime owns every socket:

- a DEALER to the broker (READY, HEARTBEAT, UPDATE, DISCONNECT, discovery requests);
- the actor's inbox, a ROUTER bound on ``config.bind`` where peers send direct messages;
- one DEALER per peer it talks to, connected to that peer's inbox;
- a PUB to the broker's XSUB and a SUB to its XPUB (audio and events).

Every received message is decoded and validated before a hook sees it; a message that fails is
counted and logged, never raised. Control messages are served before queued data messages.

Until the actor has its first registry snapshot, what would reach ``on_message`` is held (at
most :data:`HELD_MAX` messages, :data:`HOLD_S` seconds) and then handled in order: a peer
that saw this actor register may write to it before it knows that peer, and a reply sent then
would fail with :class:`PeerGone`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections import deque
from typing import Any

import msgspec
import zmq

from bus import curve, sockets
from bus.broker_link import BrokerLink
from bus.envelope import decode, encode
from bus.errors import BusError, DecodeError, PeerGone, RequestTimeout
from bus.events import EventBus
from bus.handlers import handling, outside_handler, refuse_request_in_handler
from bus.inbound import Inbound, Via
from bus.lifecycle import stop_on_signals
from bus.logs import RateLimitedLog, kv
from bus.metrics import ActorMetrics
from bus.peers import Peers
from bus.reactor import Reactor
from bus.registry import RegistryMirror
from bus.requests import PendingRequests
from bus.schema import Message, Priority, decode_message, envelope_for
from bus.schema.system import (
    REGISTRY_TOPIC,
    Describe,
    Description,
    Disconnect,
    Discover,
    Error,
    Heartbeat,
    Ping,
    Pong,
    Registered,
    Registration,
    RegistryChange,
    RegistryEvent,
    RegistrySnapshot,
    Update,
)
from bus.topology import ActorConfig

DRAIN_LIMIT = 256
"""Messages read from one socket before the others get a turn."""

DATA_BUDGET = 32
"""Data messages handled before the sockets are read again for control messages."""

HELD_MAX = 1000
"""Messages held while the first registry snapshot is awaited; beyond it they are dropped."""

HOLD_S = 10.0
"""The longest messages are held for the first snapshot (a broker that never answers)."""


class Actor:
    """Base of every Duplex actor; see the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        self.config = config.with_id()
        self.id = self.config.actor_id
        self.kind = self.config.kind
        self.log = logging.getLogger(f"duplex.{self.kind}")
        self.metrics = ActorMetrics(self.kind, self.config.restarts)
        self.registry = RegistryMirror()
        self.registry.listen(self._on_registry_change)
        self.capabilities: dict[str, Any] = {}
        self.resident_models: tuple[str, ...] = ()
        self.load = 0.0
        self.endpoints: dict[str, str] = {}
        self.started_wall_ns = time.time_ns()
        self.stats = {"received": 0, "sent": 0, "invalid": 0}
        self._bad = RateLimitedLog(self.log)
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._inbox: zmq.Socket[bytes] | None = None
        self._reactor: Reactor[Via] = Reactor()
        self.events = EventBus(self._reactor, Via.EVENTS)
        self.events.subscribe(REGISTRY_TOPIC)
        self._peers = Peers(self.registry, self._reactor, Via.PEER)
        self.broker = BrokerLink(
            self.config, self._reactor, Via.BROKER, self.registration, self._count_sent
        )
        self.registered = self.broker.registered
        """Set while the broker has this actor registered."""
        self._pending = PendingRequests()
        self._backlog: deque[Inbound] = deque()
        self._held: deque[Inbound] | None = deque()
        """What came for ``on_message`` before the first registry snapshot; None once served."""
        self._hold_over = False
        self._stopping = False
        self._rejoin_from = ""
        """Epoch of the broker run this actor lost (silent, or it said ``disconnect``)."""
        self._events_stale = False
        """Rebuild the event sockets once registered again (see ``EventBus.rebuild``)."""
        self._keys: curve.KeyPair | None = None
        self._authenticator: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = False
        """True once ``on_start`` has returned: what fails after that is a crash, not a start
        that failed (``duplex run`` restarts the one and not the other)."""

    # ------------------------------------------------------------------ hooks

    async def on_start(self) -> None:
        """Called once the sockets are up, before the first message is handled."""

    async def on_message(self, inbound: Inbound) -> None:
        """Handle a message the runtime does not handle itself. The default refuses requests."""
        if inbound.via is Via.INBOX:
            await self.reply(inbound, Error(code="UNSUPPORTED_TYPE", message=inbound.env.type))

    async def on_stop(self) -> None:
        """Called on the way out, before the sockets close."""

    async def on_purged(self) -> None:
        """Called when this actor is registered again with the same broker run after it had
        lost it (the broker was silent for ``heartbeat_ms`` x ``liveness``: the network to it
        was down, or this process was frozen, and the broker answered ``disconnect``): the
        broker purged it meanwhile, so whoever relied on it (a gateway that gave it sessions)
        went elsewhere. Not called after a broker restart (a new run keeps what it had)."""

    async def on_failure(self, exc: BaseException, inbound: Inbound) -> None:
        """Called when ``on_message`` raised; the actor keeps running."""
        self.log.error(
            "handler failed", exc_info=exc, extra=kv(type=inbound.env.type, src=inbound.env.src)
        )

    # ------------------------------------------------------------------ public API

    def registration(self) -> Registration:
        """What this actor tells the broker about itself."""
        return Registration(
            actor_id=self.id,
            kind=self.kind,
            host=self.config.host,
            pid=os.getpid(),
            endpoints=dict(self.endpoints),
            capabilities=dict(self.capabilities),
            resident_models=tuple(self.resident_models),
            load=self.load,
            public_key=self._keys.public.decode() if self._keys else "",
            started_wall_ns=self.started_wall_ns,
            restarts=self.config.restarts or msgspec.UNSET,
            replaces=self.config.replaces or msgspec.UNSET,
        )

    def stop(self) -> None:
        """Ask the actor to stop; :meth:`run` returns once it has shut down cleanly."""
        self._stopping = True
        self._reactor.poke()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by the actor (cancelled on stop, failures logged).
        A handler that needs to wait for a request's reply does it in a spawned task."""
        task = asyncio.get_running_loop().create_task(coro, context=outside_handler())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def subscribe(self, topic: bytes) -> None:
        """Receive event-bus messages whose topic starts with ``topic``."""
        self.events.subscribe(topic)

    def unsubscribe(self, topic: bytes) -> None:
        """Stop receiving what :meth:`subscribe` asked for (the proxy stops sending it)."""
        self.events.unsubscribe(topic)

    async def publish(self, topic: bytes, msg: Message, *, session: str = "") -> None:
        """Publish on the event bus (dropped, as PUB/SUB does, until the broker is reached)."""
        env = envelope_for(msg, src=self.id, session=session)
        self.events.publish([topic, *encode(env)])
        self._count_sent(env.type)

    async def send(
        self, peer_id: str, msg: Message, *, session: str = "", reply_to: str = ""
    ) -> str:
        """Send ``msg`` straight to ``peer_id``'s inbox; returns the message id.

        Raises :class:`PeerGone` for an unknown peer and :class:`Backpressure` when the peer's
        queue is full (it is not reading)."""
        return self.send_nowait(peer_id, msg, session=session, reply_to=reply_to)

    def send_or_warn(self, peer_id: str, msg: Message, session: str = "") -> bool:
        """:meth:`send`, logging a warning instead of raising when the peer is gone or not
        reading; True if it was sent."""
        try:
            self.send_nowait(peer_id, msg, session=session)
        except BusError as exc:
            self.log.warning("send failed", extra=kv(peer=peer_id, session=session, error=str(exc)))
            return False
        return True

    def send_nowait(
        self, peer_id: str, msg: Message, *, session: str = "", reply_to: str = ""
    ) -> str:
        """:meth:`send` for callbacks that cannot await; it never blocks either way, and keeps
        the order of everything sent to that peer."""
        env = envelope_for(msg, src=self.id, session=session, reply_to=reply_to)
        self._peers.send(peer_id, encode(env))
        self._count_sent(env.type)
        return env.id

    async def reply(self, inbound: Inbound, msg: Message) -> None:
        """Answer ``inbound`` on the connection it came in on (the asker's request resolves)."""
        self._answer(inbound, msg, reply_to=inbound.env.id)

    async def push(self, inbound: Inbound, msg: Message) -> bool:
        """Send ``msg`` to the sender of ``inbound`` on the same connection, not as a reply
        (a stream: TTS frames go back to whoever started the utterance). False if dropped:
        the sender is gone or its queue is full."""
        return self._answer(inbound, msg, reply_to="")

    def _answer(self, inbound: Inbound, msg: Message, reply_to: str) -> bool:
        env = envelope_for(msg, src=self.id, session=inbound.env.session, reply_to=reply_to)
        frames = encode(env)
        if inbound.via is Via.INBOX and self._inbox is not None:
            sent = self._reactor.send(self._inbox, [inbound.identity, *frames])
        elif inbound.via is Via.PEER and (peer := self._peers.get(inbound.peer)) is not None:
            sent = self._reactor.send(peer, frames)
        elif inbound.via is Via.BROKER:
            self.broker.send_envelope(env)
            return True
        else:
            return False
        if sent:
            self._count_sent(env.type)
        return sent

    async def request(
        self, peer_id: str, msg: Message, *, session: str = "", timeout: float | None = None
    ) -> Message:
        """Send a request to a peer and wait for its reply.

        Raises :class:`PeerGone` if the peer is not registered or leaves while we wait,
        :class:`RequestTimeout` if no reply comes in time, :class:`RemoteError` for an error reply.
        Not from inside a handler: the reply is read by the loop the handler holds up (that
        would wait out the timeout every time); :meth:`spawn` a task for it instead.
        """
        refuse_request_in_handler()
        if self.registry.get(peer_id) is None:
            raise PeerGone(f"{peer_id} is not registered")
        env = envelope_for(msg, src=self.id, session=session)
        future = self._pending.expect(env.id, peer_id)
        try:
            self._peers.send(peer_id, encode(env))
        except BusError:
            self._pending.forget(env.id)
            raise
        self._count_sent(env.type)
        return await self._pending.wait(env.id, future, self._timeout(timeout), peer_id)

    async def request_broker(self, msg: Message, *, timeout: float | None = None) -> Message:
        """Send a request to the broker and wait for its reply (see :meth:`request`)."""
        refuse_request_in_handler()
        env = envelope_for(msg, src=self.id)
        future = self._pending.expect(env.id, "broker")
        self.broker.send_envelope(env)
        return await self._pending.wait(env.id, future, self._timeout(timeout), "broker")

    async def update_registration(
        self,
        *,
        load: float | None = None,
        resident_models: tuple[str, ...] | None = None,
        capabilities: dict[str, Any] | None = None,
    ) -> None:
        """Change what the broker knows of this actor; watchers see the change."""
        if load is not None:
            self.load = load
        if resident_models is not None:
            self.resident_models = tuple(resident_models)
        if capabilities is not None:
            self.capabilities = dict(capabilities)
        if self.registered.is_set():
            self.broker.send(
                Update(load=load, resident_models=resident_models, capabilities=capabilities)
            )

    async def run(self) -> None:
        """Run until :meth:`stop`: set up, register, serve messages, then shut down cleanly."""
        try:
            self._setup_sockets()
            self.log.info(
                "actor starting",
                extra=kv(actor_id=self.id, broker=self.config.broker, **self.endpoints),
            )
            await self.on_start()  # an actor that cannot start never registers
            self.started = True
            self.broker.register()
            self.spawn(self.broker.heartbeat_loop())
            self.spawn(self._end_hold_after(HOLD_S))
            await self._serve()
        finally:
            await self._shutdown()

    # ------------------------------------------------------------------ set-up and teardown

    def _setup_sockets(self) -> None:
        ctx = self._ctx = zmq.Context()
        cfg = self.config
        broker_public = b""
        if cfg.curve.enabled:
            self._keys, broker_public = curve.actor_keys(cfg.curve)
            allow = curve.AllowList(cfg.curve.allow_dir)
            self._authenticator = curve.start_authenticator(ctx, allow)
        inbox = self._inbox = sockets.prepare(ctx.socket(zmq.ROUTER))
        if self._keys is not None:
            curve.make_server(inbox, self._keys)
        bound = sockets.bind(inbox, cfg.bind)
        self.endpoints["inbox"] = sockets.advertised(bound, cfg.advertise_host)
        self._reactor.watch(inbox, Via.INBOX)

        self.events.start(ctx, self._keys, broker_public)
        self.broker.start(ctx, self._keys, broker_public)
        self._peers.start(ctx, self._keys)

        if cfg.metrics_port is not None:
            port = self._serve_metrics(cfg)
            self.endpoints["metrics"] = f"http://{cfg.metrics_host}:{port}/metrics"

    def _serve_metrics(self, cfg: ActorConfig) -> int:
        """The metrics server's port: the configured one, or (the kind's shared port held by
        another instance on this host) a free one."""
        assert cfg.metrics_port is not None
        try:
            return self.metrics.serve(cfg.metrics_host, cfg.metrics_port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            where = f"{cfg.metrics_host}:{cfg.metrics_port}"
            if not cfg.metrics_port_shared:
                raise OSError(exc.errno, f"metrics port {where} is in use") from exc
        port = self.metrics.serve(cfg.metrics_host, 0)
        self.log.warning(
            "metrics port in use, serving on a free one",
            extra=kv(wanted=where, port=port, why="another actor of the kind on this host?"),
        )
        return port

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        try:
            await self.on_stop()
        except Exception:
            self.log.exception("on_stop failed")
        self._pending.fail_all("actor stopping")
        if self.registered.is_set():
            # Tell the broker now rather than letting it wait out our liveness.
            self.broker.send(Disconnect(reason="stopping"))
        self.broker.close(linger_ms=200)
        self._reactor.close_all()
        self.events.close()
        if self._authenticator is not None:
            self._authenticator.stop()
        if self._ctx is not None:
            # Closes whatever is still open (the PUB, a socket whose bind failed) and ends.
            self._ctx.destroy(linger=0)
        self.metrics.close()
        self.log.info("actor stopped", extra=kv(actor_id=self.id))

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ receive and dispatch

    async def _serve(self) -> None:
        while not self._stopping:
            self.broker.rebuild_if_asked()
            if self.broker.lost:
                self.broker.lost = False
                self._rejoin_from = self._rejoin_from or self.broker.epoch
            if self._events_stale and self.registered.is_set():
                self._events_stale = False
                self.events.rebuild()
            if self._held is not None and self._hold_over:
                held, self._held = self._held, None
                for inbound in held:
                    await self._dispatch(inbound)
            ready = self._reactor.ready()
            for sock, via in ready:
                await self._drain(sock, via)
            budget = DATA_BUDGET
            while self._backlog and budget and not self._stopping:
                await self._dispatch(self._backlog.popleft())
                budget -= 1
            if not ready and not self._backlog and not self._stopping:
                await self._reactor.wait()

    async def _drain(self, sock: zmq.Socket[bytes], via: Via) -> None:
        for _ in range(DRAIN_LIMIT):
            if sock.closed:
                return  # a peer socket closed in this round: its actor left the registry
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            inbound = self._decode(sock, via, frames)
            if inbound is None:
                continue
            if inbound.message.PRIORITY is Priority.DATA:
                if len(self._backlog) >= self.config.data_backlog:
                    dropped = self._backlog.popleft()
                    self.metrics.dropped.labels(dropped.env.type).inc()
                self._backlog.append(inbound)
            else:
                await self._dispatch(inbound)

    def _decode(self, sock: zmq.Socket[bytes], via: Via, frames: list[bytes]) -> Inbound | None:
        identity, topic, peer = b"", b"", ""
        if via is Via.INBOX:
            identity, frames = frames[0], frames[1:]
        elif via is Via.EVENTS:
            topic, frames = frames[0], frames[1:]
        elif via is Via.PEER:
            peer = self._peers.peer_of(sock)
        try:
            env = decode(frames)
            message = decode_message(env)
        except DecodeError as exc:
            self._count_invalid(exc, via)
            if via is Via.INBOX:
                self.spawn(self._refuse(identity, exc))
            return None
        self.stats["received"] += 1
        self.metrics.count(self.metrics.received, env.type)
        if via is Via.BROKER:
            self.broker.heard()
        return Inbound(env=env, message=message, via=via, identity=identity, peer=peer, topic=topic)

    def _hold(self, inbound: Inbound) -> None:
        assert self._held is not None
        if len(self._held) >= HELD_MAX:
            self.metrics.dropped.labels(inbound.env.type).inc()
            self._bad.warning(
                "held_full", "message dropped: held too many before the registry came"
            )
            return
        self._held.append(inbound)

    async def _end_hold_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._end_hold()

    def _end_hold(self) -> None:
        """Let the serving loop handle what is held."""
        if self._held is not None and not self._hold_over:
            self._hold_over = True
            self._reactor.poke()

    async def _refuse(self, identity: bytes, exc: DecodeError) -> None:
        if self._inbox is None:
            return
        code = "UNSUPPORTED_TYPE" if exc.reason == "unknown_type" else "INVALID_MESSAGE"
        env = envelope_for(Error(code=code, message=str(exc)[:1000]), src=self.id)
        self._reactor.send(self._inbox, [identity, *encode(env)])

    def _count_invalid(self, exc: DecodeError, via: Via) -> None:
        self.stats["invalid"] += 1
        self.metrics.invalid.labels(exc.reason).inc()
        self._bad.warning(
            exc.reason, "invalid message dropped", via=via.value, error=str(exc)[:200]
        )

    async def _dispatch(self, inbound: Inbound) -> None:
        env, msg = inbound.env, inbound.message
        if env.reply_to and self._pending.resolve(env.reply_to, msg):
            return
        started = time.perf_counter()
        try:
            with handling():
                if await self._handle_system(inbound):
                    return
                if self._held is not None:
                    self._hold(inbound)
                    return
                await self.on_message(inbound)
        except Exception as exc:
            self.metrics.handler_errors.labels(env.type).inc()
            await self.on_failure(exc, inbound)
            if inbound.via is Via.INBOX:
                # The asker learns at once rather than waiting out its timeout.
                await self.reply(inbound, Error(code="INTERNAL", message=str(exc)[:1000]))
        finally:
            self.metrics.handle_seconds.observe(time.perf_counter() - started)

    async def _handle_system(self, inbound: Inbound) -> bool:
        msg, via = inbound.message, inbound.via
        if via is Via.BROKER:
            if isinstance(msg, Registered):
                self._on_registered(msg)
            elif isinstance(msg, Disconnect):
                # The broker does not know us (it restarted, or purged us): register again.
                if self.registered.is_set():
                    self._rejoin_from = self._rejoin_from or self.broker.epoch
                self.broker.register()
            elif (
                isinstance(msg, Heartbeat)
                and self.registered.is_set()
                and self.registry.version < msg.registry_version
            ):
                self.spawn(self._resync())
            return True
        if via is Via.EVENTS and isinstance(msg, RegistryEvent):
            if not self.registry.apply_event(msg):
                self.spawn(self._resync())
            return True
        if via is Via.INBOX and isinstance(msg, Describe):
            await self.reply(
                inbound, Description(registration=self.registration(), stats=self._describe_stats())
            )
            return True
        if via is Via.INBOX and isinstance(msg, Ping):
            await self.reply(inbound, Pong())
            return True
        return False

    def _describe_stats(self) -> dict[str, Any]:
        return {**self.stats, "uptime_s": round((time.time_ns() - self.started_wall_ns) / 1e9, 3)}

    # ------------------------------------------------------------------ broker session

    def _on_registered(self, msg: Registered) -> None:
        first = self.broker.accept(msg)
        if self._rejoin_from:
            purged = msg.broker_epoch == self._rejoin_from
            self._rejoin_from = ""
            self._events_stale = True
            if purged:
                self.log.warning("registered again after being purged")
                self.spawn(self.on_purged())
        events = self.events.connect(
            msg.events_in, msg.events_out, sockets.host_of(self.config.broker)
        )
        if first:
            self.log.info(
                "registered", extra=kv(broker_epoch=msg.broker_epoch, events_out=events[1])
            )
        self.spawn(self._resync())

    async def _resync(self) -> None:
        snap: Message | None = None
        with contextlib.suppress(RequestTimeout, PeerGone):
            snap = await self.request_broker(Discover())
        if isinstance(snap, RegistrySnapshot):
            self.registry.apply_snapshot(snap)
        self._end_hold()  # with the snapshot or without it

    # ------------------------------------------------------------------ peers and requests

    def _on_registry_change(self, change: RegistryChange, reg: Registration) -> None:
        if change is not RegistryChange.REMOVED:
            self._peers.returned(reg)
            return
        self._pending.fail_peer(reg.actor_id, "left the registry")
        self._peers.left(reg.actor_id, time.monotonic())

    def _timeout(self, timeout: float | None) -> float:
        return self.config.request_timeout_s if timeout is None else timeout

    def _count_sent(self, type_: str) -> None:
        self.stats["sent"] += 1
        self.metrics.count(self.metrics.sent, type_)


__all__ = ["Actor", "Inbound", "Via", "serve_actor"]


async def serve_actor(actor: Actor) -> None:
    """Run ``actor`` until SIGTERM or SIGINT."""
    with stop_on_signals(actor.stop):
        await actor.run()
