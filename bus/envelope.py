"""The one envelope every bus message travels in, and its msgpack codec (msgspec's).

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
from typing import Annotated, Any

import msgspec

from bus.errors import DecodeError

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change of the header layout or of a message's meaning."""

MAX_HEADER_BYTES = 256 * 1024
"""Largest header frame accepted (the body is bounded here; text fields are bounded per field)."""

MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest payload frame accepted: ample for audio chunks, small enough to bound memory."""

MAX_ID_CHARS = 128
"""Longest session id, message id or actor id accepted."""


_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]


class _Header(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """The header frame as msgspec decodes and checks it: an array of exactly these nine."""

    version: Any  # any value, so that a wrong one is refused as ``bad_version``
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    session: _Id
    id: _Id
    src: _Id
    mono_ns: int
    wall_ns: int
    reply_to: _Id
    body: dict[str, Any]


_ENCODER = msgspec.msgpack.Encoder()
_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)


def new_id() -> str:
    """A fresh 64-bit random id in hex."""
    return os.urandom(8).hex()


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One bus message: routing and timing facts plus a typed body and an optional raw payload.

    A msgspec Struct rather than a dataclass: two are built for every message on the audio path,
    and a Struct is built in a quarter of the time (frozen costs it nothing)."""

    type: str
    """Message type, e.g. ``heartbeat`` or ``audio.frame``."""
    body: dict[str, Any]
    """The message's fields (see :mod:`bus.schema`)."""
    payload: bytes | None = None
    """Raw bytes carried in their own frame (PCM audio)."""
    session: str = ""
    """Session id, empty for messages about no session."""
    id: str = msgspec.field(default_factory=new_id)
    """Message id, unique per sender."""
    src: str = ""
    """Actor id of the sender."""
    mono_ns: int = msgspec.field(default_factory=time.monotonic_ns)
    """Sender's monotonic clock at creation, nanoseconds (comparable across processes of a host)."""
    wall_ns: int = msgspec.field(default_factory=time.time_ns)
    """Sender's wall clock at creation, nanoseconds since the Unix epoch."""
    reply_to: str = ""
    """For a reply: the id of the request it answers."""
    version: int = PROTOCOL_VERSION
    """Protocol version of the sender."""


def encode(env: Envelope) -> list[bytes]:
    """Frames for ``env``: header, then payload if any."""
    header = _ENCODER.encode(
        (
            env.version,
            env.type,
            env.session,
            env.id,
            env.src,
            env.mono_ns,
            env.wall_ns,
            env.reply_to,
            env.body,
        )
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
        header = _HEADER_DECODER.decode(raw)
    except msgspec.ValidationError as exc:  # well-formed msgpack, not a header
        raise DecodeError("bad_header", str(exc)) from exc
    except Exception as exc:  # malformed msgpack; nesting too deep is a RecursionError
        raise DecodeError("bad_msgpack", str(exc)) from exc
    if type(header.version) is not int or header.version != PROTOCOL_VERSION:
        raise DecodeError(
            "bad_version", f"protocol version {header.version!r}, expected {PROTOCOL_VERSION}"
        )
    return Envelope(
        type=header.type,
        body=header.body,
        payload=payload,
        session=header.session,
        id=header.id,
        src=header.src,
        mono_ns=header.mono_ns,
        wall_ns=header.wall_ns,
        reply_to=header.reply_to,
        version=header.version,
    )
