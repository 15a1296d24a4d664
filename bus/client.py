"""Small synchronous clients for tools and scripts: the broker's (``duplex status``), and the
DEALER base that other clients (the TTS client) share."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Self

import zmq

from bus import curve, sockets
from bus.envelope import decode, encode
from bus.errors import RemoteError, RequestTimeout
from bus.registry import RegistryMirror
from bus.schema import Message, decode_message, envelope_for
from bus.schema.system import (
    REGISTRY_TOPIC,
    Describe,
    Description,
    Discover,
    Error,
    Registration,
    RegistryChange,
    RegistryEvent,
    RegistrySnapshot,
)
from bus.topology import CurveConfig


class DealerClient:
    """One DEALER connected to ``endpoint`` in a context of its own; closes with the block."""

    def __init__(self, endpoint: str, *, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = sockets.prepare(self._ctx.socket(zmq.DEALER))

    def close(self) -> None:
        self.sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BrokerClient(DealerClient):
    """Request/reply with the broker over a DEALER, every call bounded by ``timeout_s``."""

    def __init__(
        self, endpoint: str, *, timeout_s: float = 2.0, curve_config: CurveConfig | None = None
    ) -> None:
        super().__init__(endpoint, timeout_s=timeout_s)
        self._curve: tuple[curve.KeyPair, bytes] | None = None
        if curve_config is not None and curve_config.enabled:
            self._curve = curve.actor_keys(curve_config)
            curve.make_client(self.sock, *self._curve)
        self.sock.connect(endpoint)

    def request(self, msg: Message) -> Message:
        """Send ``msg`` and return the reply; RequestTimeout or RemoteError otherwise."""
        env = envelope_for(msg, src="client")
        self.sock.send_multipart(encode(env))
        deadline_ms = int(self.timeout_s * 1000)
        while self.sock.poll(deadline_ms, zmq.POLLIN):
            reply_env = decode(self.sock.recv_multipart())
            if reply_env.reply_to != env.id:
                continue  # a late answer to an earlier request
            reply = decode_message(reply_env)
            if isinstance(reply, Error):
                raise RemoteError(reply.code, reply.message)
            return reply
        raise RequestTimeout(f"no answer from the broker at {self.endpoint} in {self.timeout_s} s")

    def discover(self, kind: str = "") -> RegistrySnapshot:
        """Live registrations (of ``kind``, or all)."""
        reply = self.request(Discover(kind=kind))
        if not isinstance(reply, RegistrySnapshot):
            raise RemoteError("UNEXPECTED_REPLY", reply.TYPE)
        return reply

    def describe(self) -> Description:
        """The broker's own description and counters."""
        reply = self.request(Describe())
        if not isinstance(reply, Description):
            raise RemoteError("UNEXPECTED_REPLY", reply.TYPE)
        return reply

    def watch(self) -> Iterator[tuple[RegistryChange, Registration]]:
        """Every registration now live (as ``added``), then every change as it happens.

        Follows the registry's event topic on the broker's proxy (snapshot + newer versioned
        events, re-snapshot on a gap, a restarted broker, or a quiet spell); runs until the
        caller stops iterating."""
        events_out = self.describe().registration.endpoints["events_out"]
        sub = sockets.prepare(self._ctx.socket(zmq.SUB))
        if self._curve is not None:
            curve.make_client(sub, *self._curve)
        sub.connect(sockets.advertised(events_out, sockets.host_of(self.endpoint)))
        sub.subscribe(REGISTRY_TOPIC)
        mirror = RegistryMirror()
        changes: list[tuple[RegistryChange, Registration]] = []
        mirror.listen(lambda change, reg: changes.append((change, reg)))
        try:
            mirror.apply_snapshot(self.discover())
            while True:
                yield from changes
                changes.clear()
                if sub.poll(int(self.timeout_s * 1000), zmq.POLLIN):
                    _topic, *frames = sub.recv_multipart()
                    event = decode_message(decode(frames))
                    if isinstance(event, RegistryEvent) and mirror.apply_event(event):
                        continue
                mirror.apply_snapshot(self.discover())
        finally:
            sub.close(linger=0)
