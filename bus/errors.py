"""Typed errors of the bus: what can go wrong with a message or with a peer."""

from __future__ import annotations


class BusError(Exception):
    """Base of every error the bus raises."""


class DecodeError(BusError):
    """Frames that are not a Duplex envelope (bad msgpack, wrong shape, too large)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        """Short machine-readable label, used as the metric label (e.g. ``oversized``)."""


class ValidationError(DecodeError):
    """An envelope whose type is unknown or whose body does not match its message schema."""


class Backpressure(BusError):
    """A peer's queue is full (it is not reading); the message was not sent."""


class RequestError(BusError):
    """A request that got no usable reply."""


class RequestTimeout(RequestError):
    """No reply arrived within the request's timeout."""


class PeerGone(RequestError):
    """The peer a request was sent to is not (or no longer) registered with the broker."""


class RemoteError(RequestError):
    """The peer answered with an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
