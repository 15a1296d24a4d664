"""An actor's side of the broker protocol: the DEALER, READY / HEARTBEAT, liveness, reconnect.

Paranoid Pirate on the actor side: heartbeat every interval; when the broker has been silent
for ``interval * liveness`` the link is down, READY is sent on every tick until a ``registered``
arrives, and the socket is rebuilt (dropping whatever queued for the dead broker) with a
backoff that doubles up to :data:`MAX_RECONNECT_BACKOFF_S`. A restarted broker answers the
first heartbeat it does not recognise with ``disconnect``, which triggers READY at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from bus import curve, sockets
from bus.envelope import Envelope, encode
from bus.logs import kv
from bus.reactor import Reactor
from bus.schema import Message, envelope_for
from bus.schema.system import Heartbeat, Ready, Registered, Registration
from bus.topology import ActorConfig

MAX_RECONNECT_BACKOFF_S = 8.0
"""Longest wait between two rebuilds of the broker socket while the broker is silent."""


class BrokerLink:
    """Owns the broker socket and the registration state of one actor."""

    def __init__(
        self,
        config: ActorConfig,
        reactor: Reactor[Any],
        tag: Any,
        registration: Callable[[], Registration],
        on_sent: Callable[[str], None],
    ) -> None:
        self.config = config
        self.registered = asyncio.Event()
        """Set while the broker has this actor registered."""
        self.epoch = ""
        """Id of the broker run we are registered with."""
        self.heartbeat_s = config.heartbeat_ms / 1000
        self.liveness = config.liveness
        self.socket: zmq.Socket[bytes] | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._reactor = reactor
        self._tag = tag
        self._registration = registration
        self._on_sent = on_sent
        self._keys: curve.KeyPair | None = None
        self._broker_public = b""
        self._last_heard = time.monotonic()
        self._rebuild_asked = False
        self.lost = False
        """Set when the broker went silent while this actor was registered; the runtime clears
        it once it has acted on it (see ``Actor.on_purged``)."""
        self._log = logging.getLogger(f"duplex.{config.kind}")

    def start(
        self, ctx: zmq.Context[zmq.Socket[bytes]], keys: curve.KeyPair | None, broker_public: bytes
    ) -> None:
        """Create the socket in ``ctx`` (with CURVE ``keys`` if given) and connect."""
        self._ctx, self._keys, self._broker_public = ctx, keys, broker_public
        self.connect()

    def connect(self) -> None:
        """(Re)build the DEALER and connect it to the broker."""
        assert self._ctx is not None, "connect() before start()"
        if self.socket is not None:
            self._reactor.unwatch(self.socket)
            self.socket.close(linger=0)
        sock = self.socket = sockets.prepare(self._ctx.socket(zmq.DEALER), hwm=1000)
        # One identity for every socket this actor makes (the broker hands the identity over to
        # the newest connection): after a partition, what an earlier socket left in the
        # kernel's send buffer reaches the broker late, and under an identity of its own it
        # would register the actor there, and the live socket's next heartbeat be answered
        # "not registered".
        sock.setsockopt(zmq.ROUTING_ID, b"actor:" + self.config.actor_id.encode()[:240])
        if self._keys is not None:
            curve.make_client(sock, self._keys, self._broker_public)
        sock.connect(self.config.broker)
        self._reactor.watch(sock, self._tag)

    def rebuild_if_asked(self) -> None:
        """Rebuild the socket if the heartbeat loop asked for it (done by the serving loop,
        between reads, never under a receive in progress)."""
        if self._rebuild_asked:
            self._rebuild_asked = False
            self.connect()

    def heard(self) -> None:
        """Note a message from the broker (any message proves it alive)."""
        self._last_heard = time.monotonic()

    def accept(self, msg: Registered) -> bool:
        """Take the broker's ``registered``; True if we were not registered before."""
        first = not self.registered.is_set()
        self.epoch = msg.broker_epoch
        self.heartbeat_s = msg.heartbeat_ms / 1000
        self.liveness = msg.liveness
        self.registered.set()
        return first

    def register(self) -> None:
        """Send READY with the actor's current registration."""
        self.registered.clear()
        self.send(Ready(registration=self._registration()))

    def send(self, msg: Message) -> None:
        """Send ``msg`` to the broker without blocking."""
        self.send_envelope(envelope_for(msg, src=self.config.actor_id))

    def send_envelope(self, env: Envelope) -> None:
        """Send ``env`` without blocking; dropped while the broker is unreachable and the
        queue is full (the heartbeat loop rebuilds the socket)."""
        if self.socket is not None and self._reactor.send(self.socket, encode(env)):
            self._on_sent(env.type)

    async def heartbeat_loop(self) -> None:
        """Heartbeat, judge the broker's liveness, re-register and rebuild when it is gone."""
        backoff = self.heartbeat_s
        last_rebuild = time.monotonic()
        self._last_heard = time.monotonic()
        while True:
            slept_at = time.monotonic()
            await asyncio.sleep(self.heartbeat_s)
            now = time.monotonic()
            # Woken late: this actor was not running (a stalled host or a busy loop) and the
            # broker's heartbeats of that time may still be unread, so it is not the broker's
            # silence.
            late = now - slept_at - self.heartbeat_s
            if late > 0:
                self._last_heard = min(now, self._last_heard + late)
            silent = now - self._last_heard
            if silent > self.heartbeat_s * self.liveness:
                if self.registered.is_set():
                    self.registered.clear()
                    self.lost = True
                    self._reactor.poke()
                    self._log.warning(
                        "broker silent, reconnecting", extra=kv(silent_s=round(silent, 2))
                    )
                if now - last_rebuild >= backoff:
                    self._rebuild_asked = True
                    self._reactor.poke()
                    last_rebuild = now
                    backoff = min(backoff * 2, MAX_RECONNECT_BACKOFF_S)
            else:
                backoff = self.heartbeat_s
            if self.registered.is_set():
                self.send(Heartbeat())
            else:
                self.send(Ready(registration=self._registration()))

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket, waiting up to ``linger_ms`` for queued messages to leave."""
        if self.socket is not None:
            self._reactor.unwatch(self.socket)
            self.socket.close(linger=linger_ms)
            self.socket = None
