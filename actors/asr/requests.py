"""Transcription requests: audio sent straight to one ASR's inbox by a client of the bus (the
Wyoming server, the gateway's ``/v1/audio/transcriptions``), not heard on a session's stream.

A request is named by its sender and the envelope's ``session``; its ``asr.audio`` chunks come
numbered from 0 and are kept until one asks for the ``final`` transcript. Bounded: at most
``max_requests`` open at once (past it, one quiet for :data:`STALE_S` makes room for a new
one, else the new one is refused ``BUSY``), at most
``max_request_s`` of audio each, forgotten after :data:`IDLE_S` without a chunk. No sockets and
no model here: the actor (:mod:`.actor`) feeds chunks and queues the recognitions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bus.audio_format import MIC, SAMPLE_BYTES
from bus.schema.asr import RequestAudio

BYTES_PER_S = MIC.sample_rate * SAMPLE_BYTES
IDLE_S = 60.0
"""A request that sends nothing this long is forgotten."""
STALE_S = 10.0
"""With ``max_requests`` open, one that sent nothing this long makes room for a new one;
otherwise the new one is refused ``BUSY``."""


class RequestRefused(ValueError):
    """A chunk that cannot be taken, with the bus error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Request:
    """One request's audio so far."""

    pcm: bytearray = field(default_factory=bytearray)
    next_sequence: int = 0
    last_chunk: float = field(default_factory=time.monotonic)
    language: str = ""

    @property
    def seconds(self) -> float:
        return len(self.pcm) / BYTES_PER_S


class Requests:
    """The open requests of one ASR actor."""

    def __init__(self, max_requests: int, max_request_s: float) -> None:
        self.max_requests = max_requests
        self.max_bytes = int(max_request_s * BYTES_PER_S)
        self.open: dict[tuple[str, str], Request] = {}

    def add(self, key: tuple[str, str], chunk: RequestAudio) -> Request:
        """Take ``chunk``; the request it belongs to, or RequestRefused (the request is then
        forgotten: a client that lost a chunk cannot get a true transcript)."""
        now = time.monotonic()
        self.expire(now)
        request = self.open.get(key)
        if request is None:
            if chunk.sequence != 0:
                raise RequestRefused(
                    "INVALID_MESSAGE",
                    f"chunk {chunk.sequence} of a request this ASR does not have "
                    "(forgotten after a gap or idle time, or sent to another ASR)",
                )
            if len(self.open) >= self.max_requests:
                oldest = min(self.open, key=lambda k: self.open[k].last_chunk)
                if now - self.open[oldest].last_chunk < STALE_S:
                    raise RequestRefused("BUSY", f"{self.max_requests} requests are open here")
                del self.open[oldest]  # a client that went quiet makes room
            request = self.open[key] = Request(language=chunk.language)
        if chunk.sequence != request.next_sequence:
            del self.open[key]
            raise RequestRefused(
                "INVALID_MESSAGE",
                f"chunk {chunk.sequence} where {request.next_sequence} was due",
            )
        if len(request.pcm) + len(chunk.pcm) > self.max_bytes:
            del self.open[key]
            limit = self.max_bytes / BYTES_PER_S
            raise RequestRefused("AUDIO_TOO_LONG", f"a request holds at most {limit:g} s of audio")
        request.pcm += chunk.pcm
        request.next_sequence += 1
        request.last_chunk = now
        return request

    def expire(self, now: float) -> None:
        for key in [k for k, r in self.open.items() if now - r.last_chunk > IDLE_S]:
            del self.open[key]

    def finish(self, key: tuple[str, str]) -> None:
        self.open.pop(key, None)
