"""An actor's side of the event bus: a PUB into the broker's XSUB and a SUB on its XPUB,
connected once the broker says where they are (and moved if a restarted broker says otherwise)."""

from __future__ import annotations

from typing import Any

import zmq

from bus import curve, sockets
from bus.reactor import Reactor


class EventBus:
    """Publish and subscribe through the broker's proxy."""

    def __init__(self, reactor: Reactor[Any], tag: Any) -> None:
        self.topics: set[bytes] = set()
        """Topic prefixes subscribed to (kept across a move to another proxy)."""
        self.endpoints: tuple[str, str] = ("", "")
        """(events_in, events_out) connected to, once known."""
        self._reactor = reactor
        self._tag = tag
        self.pub: zmq.Socket[bytes] | None = None
        self.sub: zmq.Socket[bytes] | None = None
        self._made_with: tuple[Any, curve.KeyPair | None, bytes] | None = None

    def start(
        self, ctx: zmq.Context[zmq.Socket[bytes]], keys: curve.KeyPair | None, broker_public: bytes
    ) -> None:
        """Create both sockets (not yet connected: :meth:`connect` does that)."""
        self._made_with = (ctx, keys, broker_public)
        self.pub = sockets.prepare(ctx.socket(zmq.PUB))
        self.sub = sockets.prepare(ctx.socket(zmq.SUB))
        for sock in (self.pub, self.sub):
            if keys is not None:
                curve.make_client(sock, keys, broker_public)
        for topic in self.topics:
            self.sub.subscribe(topic)
        self._reactor.watch(self.sub, self._tag)

    def subscribe(self, topic: bytes) -> None:
        if topic in self.topics:
            return  # (ZeroMQ counts subscriptions: one unsubscribe must undo it)
        self.topics.add(topic)
        if self.sub is not None:
            self.sub.subscribe(topic)

    def unsubscribe(self, topic: bytes) -> None:
        if topic not in self.topics:
            return
        self.topics.discard(topic)
        if self.sub is not None:
            self.sub.unsubscribe(topic)

    def connect(self, events_in: str, events_out: str, broker_host: str) -> tuple[str, str]:
        """Point both sockets at the proxy (wildcard hosts mean the broker's host)."""
        endpoints = (
            sockets.advertised(events_in, broker_host),
            sockets.advertised(events_out, broker_host),
        )
        if endpoints != self.endpoints and self.pub is not None and self.sub is not None:
            for sock, old, new in zip((self.pub, self.sub), self.endpoints, endpoints, strict=True):
                if old:
                    sock.disconnect(old)
                sock.connect(new)
            self.endpoints = endpoints
        return endpoints

    def rebuild(self) -> None:
        """New sockets to the same proxy, every subscription kept. After the network to the
        broker was down a while, the old connections can sit in TCP's retransmission back-off
        for seconds once it is back (``tests/test_multihost.py`` saw some 10 s: the actor
        registered again through its rebuilt broker socket, yet deaf and mute), and they hold
        what queued meanwhile, which is stale: both go with the old sockets."""
        if self._made_with is None or self.pub is None or self.sub is None:
            return
        self._reactor.unwatch(self.sub)
        self.pub.close(linger=0)
        self.sub.close(linger=0)
        self.start(*self._made_with)
        assert self.pub is not None and self.sub is not None
        for sock, endpoint in zip((self.pub, self.sub), self.endpoints, strict=True):
            if endpoint:
                sock.connect(endpoint)

    def publish(self, frames: list[bytes]) -> None:
        """Send ``[topic, *envelope frames]``; dropped (PUB semantics) until connected."""
        assert self.pub is not None, "publish() before start()"
        self._reactor.send(self.pub, frames)

    def close(self) -> None:
        if self.pub is not None:
            self.pub.close(linger=0)
