"""The one envelope every bus message travels in, and its msgpack codec.

On the wire an envelope is one or two ZeroMQ frames:

1. the header: a msgpack array ``[version, type, session, id, src, mono_ns, wall_ns,
   reply_to, body]`` where ``body`` is a map of the message's fields;
2. optionally the payload: raw bytes (audio), never re-encoded.

PUB/SUB traffic puts a topic frame in front; ROUTER sockets put the peer's routing id in front.
Those frames belong to the socket helpers, not to the envelope.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from bus.errors import DecodeError

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change of the header layout or of a message's meaning."""

MAX_HEADER_BYTES = 256 * 1024
"""Largest header frame accepted (the body is bounded here; text fields are bounded per field)."""

MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest payload frame accepted: ample for audio chunks, small enough to bound memory."""

MAX_ID_CHARS = 128
"""Longest session id, message id or actor id accepted."""

_HEADER_FIELDS = 9


def new_id() -> str:
    """A fresh 64-bit random id in hex."""
    return os.urandom(8).hex()


@dataclass(slots=True)
class Envelope:
    """One bus message: routing and timing facts plus a typed body and an optional raw payload.

    Treat it as immutable. It is not frozen only because a frozen dataclass costs microseconds
    per construction, and two are built for every message on the audio path."""

    type: str
    """Message type, e.g. ``heartbeat`` or ``audio.frame``."""
    body: dict[str, Any]
    """The message's fields (see :mod:`bus.schema`)."""
    payload: bytes | None = None
    """Raw bytes carried in their own frame (PCM audio)."""
    session: str = ""
    """Session id, empty for messages about no session."""
    id: str = field(default_factory=new_id)
    """Message id, unique per sender."""
    src: str = ""
    """Actor id of the sender."""
    mono_ns: int = field(default_factory=time.monotonic_ns)
    """Sender's monotonic clock at creation, nanoseconds (comparable across processes of a host)."""
    wall_ns: int = field(default_factory=time.time_ns)
    """Sender's wall clock at creation, nanoseconds since the Unix epoch."""
    reply_to: str = ""
    """For a reply: the id of the request it answers."""
    version: int = PROTOCOL_VERSION
    """Protocol version of the sender."""


def encode(env: Envelope) -> list[bytes]:
    """Frames for ``env``: header, then payload if any."""
    header = msgpack.packb(
        [
            env.version,
            env.type,
            env.session,
            env.id,
            env.src,
            env.mono_ns,
            env.wall_ns,
            env.reply_to,
            env.body,
        ],
        use_bin_type=True,
    )
    if env.payload is None:
        return [header]
    return [header, env.payload]


def decode(frames: Sequence[bytes]) -> Envelope:
    """Parse header (+ payload) frames into an envelope, or raise :class:`DecodeError`."""
    if not frames or len(frames) > 2:
        raise DecodeError("bad_frames", f"expected 1 or 2 frames, got {len(frames)}")
    raw = frames[0]
    if len(raw) > MAX_HEADER_BYTES:
        raise DecodeError("oversized", f"header of {len(raw)} bytes")
    payload = bytes(frames[1]) if len(frames) == 2 else None
    if payload is not None and len(payload) > MAX_PAYLOAD_BYTES:
        raise DecodeError("oversized", f"payload of {len(payload)} bytes")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise DecodeError("bad_msgpack", str(exc)) from exc
    if not isinstance(header, list) or len(header) != _HEADER_FIELDS:
        raise DecodeError("bad_header", "header is not a 9-element array")
    version, type_, session, id_, src, mono_ns, wall_ns, reply_to, body = header
    if version != PROTOCOL_VERSION:
        raise DecodeError(
            "bad_version", f"protocol version {version!r}, expected {PROTOCOL_VERSION}"
        )
    if not isinstance(type_, str) or not 0 < len(type_) <= 64:
        raise DecodeError("bad_header", "type must be a non-empty string")
    for name, value in (("session", session), ("id", id_), ("src", src), ("reply_to", reply_to)):
        if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
            raise DecodeError("bad_header", f"{name} must be a string of at most {MAX_ID_CHARS}")
    if type(mono_ns) is not int or type(wall_ns) is not int:
        raise DecodeError("bad_header", "timestamps must be integers")
    if not isinstance(body, dict):
        raise DecodeError("bad_header", "body must be a map")
    return Envelope(
        type=type_,
        body=body,
        payload=payload,
        session=session,
        id=id_,
        src=src,
        mono_ns=mono_ns,
        wall_ns=wall_ns,
        reply_to=reply_to,
        version=version,
    )
