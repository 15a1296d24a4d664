"""A synchronous client of a TTS worker's inbox: start an utterance, grant credit as frames
arrive (the credit accounting of :class:`~transports.utterance_stream.UtteranceStream`),
control it, collect the audio. Used by ``duplex say``, the tests and bench_tts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from bus.client import DealerClient
from bus.envelope import Envelope, decode, encode, new_id
from bus.errors import RemoteError, RequestTimeout
from bus.schema import Message, decode_message, envelope_for
from bus.schema.system import Error
from bus.schema.tts import TtsEnd, TtsFrame
from transports.utterance_stream import UtteranceStream

CREDIT_BATCH = 25
"""Frames received before the client grants that many more."""


@dataclass(slots=True)
class Spoken:
    """An utterance as received."""

    frames: list[TtsFrame] = field(default_factory=list)
    end: TtsEnd | None = None
    errors: list[Error] = field(default_factory=list)
    started: float = 0.0
    """``time.monotonic()`` when the start was sent."""
    first_frame_at: float | None = None

    @property
    def pcm(self) -> bytes:
        return b"".join(f.pcm for f in self.frames)

    @property
    def first_audio_s(self) -> float | None:
        return None if self.first_frame_at is None else self.first_frame_at - self.started


class TtsClient(DealerClient):
    """Talks to one worker's inbox over a DEALER; every wait is bounded."""

    def __init__(self, endpoint: str, *, session: str = "", timeout_s: float = 30.0) -> None:
        super().__init__(endpoint, timeout_s=timeout_s)
        self.session = session or f"say-{new_id()[:8]}"
        self.sock.connect(endpoint)
        self.streams: dict[str, UtteranceStream] = {}

    def send(self, msg: Message, session: str | None = None) -> Envelope:
        env = envelope_for(
            msg, src="tts-client", session=self.session if session is None else session
        )
        self.sock.send_multipart(encode(env))
        return env

    def recv(self, timeout_s: float | None = None) -> tuple[Envelope, Message]:
        limit = self.timeout_s if timeout_s is None else timeout_s
        if not self.sock.poll(int(limit * 1000), zmq.POLLIN):
            raise RequestTimeout(f"nothing from the TTS worker at {self.endpoint} in {limit} s")
        env = decode(self.sock.recv_multipart())
        return env, decode_message(env)

    def start(
        self,
        text: str,
        *,
        utterance_id: str = "",
        voice: str = "",
        final: bool = True,
        credit: int = 100,
        options: dict[str, Any] | None = None,
    ) -> str:
        """Begin an utterance; returns its id."""
        stream = UtteranceStream(
            utterance_id or new_id()[:8],
            self.session,
            text,
            voice=voice,
            final=final,
            lead=credit,
            credit_batch=CREDIT_BATCH,
            options=options or {},
        )
        self.streams[stream.utterance_id] = stream
        self.send(stream.start(self.endpoint, voice))
        return stream.utterance_id

    def collect(self, utterance_id: str, spoken: Spoken | None = None) -> Spoken:
        """Receive until the utterance's ``tts.end``, granting credit as frames arrive."""
        spoken = spoken or Spoken(started=time.monotonic())
        stream = self.streams.get(utterance_id) or UtteranceStream(
            utterance_id, self.session, "", lead=0, credit_batch=CREDIT_BATCH
        )
        stream.worker_id = stream.worker_id or self.endpoint
        while spoken.end is None:
            _env, msg = self.recv()
            if isinstance(msg, TtsFrame) and stream.frame(msg):
                if spoken.first_frame_at is None:
                    spoken.first_frame_at = time.monotonic()
                spoken.frames.append(msg)
                credit = stream.used(1)
                if credit is not None:
                    self.send(credit)
            elif isinstance(msg, TtsEnd) and stream.end(msg):
                spoken.end = msg
            elif isinstance(msg, Error):
                spoken.errors.append(msg)
        self.streams.pop(utterance_id, None)
        return spoken

    def speak(self, text: str, *, voice: str = "", options: dict[str, Any] | None = None) -> Spoken:
        """Speak ``text`` and return everything received; RemoteError if the worker refused."""
        spoken = Spoken(started=time.monotonic())
        utterance_id = self.start(text, voice=voice, options=options)
        self.collect(utterance_id, spoken)
        if spoken.errors and not spoken.frames:
            raise RemoteError(spoken.errors[0].code, spoken.errors[0].message)
        return spoken
