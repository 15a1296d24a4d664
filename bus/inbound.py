"""What a handler receives: a validated message and where it came in."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bus.envelope import Envelope
from bus.schema import Message


class Via(enum.Enum):
    """Where a message came in."""

    BROKER = "broker"
    INBOX = "inbox"
    PEER = "peer"
    EVENTS = "events"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A received, validated message and where it came from (so it can be answered)."""

    env: Envelope
    message: Message
    via: Via
    identity: bytes = b""
    """ROUTER routing id of the sender (inbox messages)."""
    peer: str = ""
    """Actor id whose socket it came in on (peer replies)."""
    topic: bytes = b""
    """Event-bus topic (events)."""
