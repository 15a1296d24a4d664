"""The DEALER sockets an actor keeps to its peers' inboxes, opened on first use and closed a
while after the peer leaves the registry."""

from __future__ import annotations

import time
from typing import Any

import zmq

from bus import curve, sockets
from bus.errors import Backpressure, PeerGone
from bus.reactor import Reactor
from bus.registry import RegistryMirror
from bus.schema.system import Registration

LINGER_S = 10.0
"""How long the socket to a peer that left the registry stays open. A peer expired by a stall
re-registers within a few heartbeats, and what flows on this socket meanwhile (a TTS worker
streams its frames back on it) must survive that; closing at once ended every such stream.
A peer that does not come back within this is closed."""


class Peers:
    """One DEALER per peer, found through the registry mirror and served by the reactor."""

    def __init__(self, registry: RegistryMirror, reactor: Reactor[Any], tag: Any) -> None:
        self._registry = registry
        self._reactor = reactor
        self._tag = tag
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._keys: curve.KeyPair | None = None
        self._by_id: dict[str, zmq.Socket[bytes]] = {}
        self._id_of: dict[zmq.Socket[bytes], str] = {}
        self._endpoint: dict[str, str] = {}
        self._left: dict[str, float] = {}
        """Peers with an open socket that are not in the registry: when they left."""

    def start(self, ctx: zmq.Context[zmq.Socket[bytes]], keys: curve.KeyPair | None) -> None:
        """Open sockets in ``ctx``, as CURVE clients with ``keys`` when given."""
        self._ctx, self._keys = ctx, keys

    def send(self, peer_id: str, frames: list[bytes]) -> None:
        """Send to ``peer_id``'s inbox: :class:`PeerGone` if it is not registered (and has no
        socket still lingering), :class:`Backpressure` if its queue is full."""
        if not self._reactor.send(self.socket(peer_id), frames):
            raise Backpressure(f"{peer_id} is not reading: its queue is full")

    def socket(self, peer_id: str) -> zmq.Socket[bytes]:
        """The socket to ``peer_id``, connected on first use (kept for :data:`LINGER_S` after
        the peer leaves the registry)."""
        if self._left:
            self.sweep(time.monotonic())
        sock = self._by_id.get(peer_id)
        if sock is not None:
            return sock
        reg = self._registry.get(peer_id)
        if reg is None or "inbox" not in reg.endpoints:
            raise PeerGone(f"{peer_id} is not registered")
        assert self._ctx is not None, "socket() before start()"
        sock = sockets.prepare(self._ctx.socket(zmq.DEALER))
        if self._keys is not None:
            curve.make_client(sock, self._keys, reg.public_key.encode())
        sock.connect(reg.endpoints["inbox"])
        self._by_id[peer_id] = sock
        self._endpoint[peer_id] = reg.endpoints["inbox"]
        self._id_of[sock] = peer_id
        self._reactor.watch(sock, self._tag)
        return sock

    def get(self, peer_id: str) -> zmq.Socket[bytes] | None:
        """The socket to ``peer_id`` if one is open."""
        return self._by_id.get(peer_id)

    def peer_of(self, sock: zmq.Socket[bytes]) -> str:
        """Actor id behind ``sock`` (empty if it is not a peer socket)."""
        return self._id_of.get(sock, "")

    def left(self, peer_id: str, now: float) -> None:
        """``peer_id`` left the registry at ``now``: its socket closes if it stays away."""
        if peer_id in self._by_id:
            self._left.setdefault(peer_id, now)

    def returned(self, reg: Registration) -> None:
        """``reg`` is (again) in the registry; a socket to an address it no longer has (a new
        process) is closed, and the next send connects to the new one."""
        self._left.pop(reg.actor_id, None)
        known = self._endpoint.get(reg.actor_id)
        if known is not None and known != reg.endpoints.get("inbox"):
            self.forget(reg.actor_id)

    def sweep(self, now: float) -> None:
        """Close the sockets of peers gone for longer than :data:`LINGER_S`."""
        for peer_id, since in list(self._left.items()):
            if now - since > LINGER_S:
                self.forget(peer_id)

    def forget(self, peer_id: str) -> None:
        """Close the socket to a peer."""
        self._left.pop(peer_id, None)
        self._endpoint.pop(peer_id, None)
        sock = self._by_id.pop(peer_id, None)
        if sock is not None:
            self._id_of.pop(sock, None)
            self._reactor.unwatch(sock)
            sock.close(linger=0)
