"""One text synthesized for a consumer that takes the audio as it comes: an HTTP body
(``POST /v1/synthesize``, ``POST /v1/audio/speech``) or a Wyoming client.

:class:`Synthesis` is a :class:`~transports.utterance_stream.StreamSink`: the worker's frames
wait in a queue that credit bounds (at most ``lead`` frames ahead of the consumer, so a slow
reader slows the worker instead of filling memory), and :meth:`Synthesis.frames` yields them,
granting credit back as each is taken. Text may keep coming (``final=False`` and
:meth:`Synthesis.add_text`: Wyoming's streaming synthesis). One synthesis is one session for
the router (no worker affinity kept): :meth:`Synthesis.close` releases it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from bus.envelope import new_id
from bus.schema.tts import EndReason, TtsFrame
from transports.utterance_stream import StreamClient, UtteranceStream

LEAD_FRAMES = 100
"""Frames (2 s) the worker may synthesize ahead of the consumer."""
FRAME_TIMEOUT_S = 30.0
"""No frame for this long (the watchdog ends a lost stream long before): the synthesis fails."""


class SynthesisFailed(Exception):
    """No audio, or not all of it: ``code`` is the router's or worker's (``NO_WORKER``, ``BUSY``,
    ``INVALID_TEXT``, ...) or ``SYNTHESIS_FAILED``; ``started`` says whether frames came first."""

    def __init__(self, code: str, message: str, *, started: bool) -> None:
        super().__init__(message)
        self.code = code
        self.started = started


class Synthesis:
    """See the module docstring."""

    def __init__(
        self,
        streams: StreamClient,
        text: str,
        *,
        voice: str = "",
        options: dict[str, Any] | None = None,
        final: bool = True,
        prefix: str = "http",
        lead: int = LEAD_FRAMES,
    ) -> None:
        self.streams = streams
        self.stream = UtteranceStream(
            new_id()[:8],
            f"{prefix}-{new_id()[:12]}",
            text,
            voice=voice,
            final=final,
            lead=lead,
            credit_batch=max(1, lead // 4),
            options=dict(options or {}),
        )
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.frames_taken = 0
        self.reason: EndReason | None = None
        self._failure: tuple[str, str] | None = None
        self._opened = False

    @property
    def voice(self) -> str:
        """The voice the router chose (empty until routed)."""
        return self.stream.voice if self.stream.worker_id else ""

    def start(self) -> None:
        if not self._opened:
            self._opened = True
            self.streams.open(self.stream, self)

    def add_text(self, text: str, final: bool) -> None:
        """More text (a synthesis started with ``final=False``)."""
        self.streams.send(self.stream, self.stream.add_text(text, final))

    async def frames(self) -> AsyncIterator[bytes]:
        """The 48 kHz frames as they come; raises SynthesisFailed when the synthesis did not
        complete (after the frames that came)."""
        self.start()
        while True:
            try:
                pcm = await asyncio.wait_for(self._queue.get(), FRAME_TIMEOUT_S)
            except TimeoutError:
                self.stop()
                raise SynthesisFailed(
                    "SYNTHESIS_FAILED", "the worker sent nothing", started=self.frames_taken > 0
                ) from None
            if pcm is None:
                break
            self.frames_taken += 1
            self.streams.send(self.stream, self.stream.used(1))
            yield pcm
        if self._failure is not None or self.reason is not EndReason.COMPLETED:
            code, message = self._failure or ("SYNTHESIS_FAILED", str(self.reason))
            raise SynthesisFailed(code, message, started=self.frames_taken > 0)

    def stop(self) -> None:
        """The consumer went: stop the worker."""
        if not self.stream.ended:
            self.streams.stop(self.stream)

    def close(self) -> None:
        """Stop what is left and release the router's affinity."""
        self.stop()
        if self._opened:
            self.streams.release(self.stream.session)

    # ------------------------------------------------------------------ StreamSink

    async def on_frame(self, stream: UtteranceStream, msg: TtsFrame) -> None:
        self._queue.put_nowait(msg.pcm)

    async def on_end(self, stream: UtteranceStream, reason: EndReason, error: str) -> None:
        self.reason = reason
        if reason is not EndReason.COMPLETED and self._failure is None:
            self._failure = ("SYNTHESIS_FAILED", error or reason.value)
        self._queue.put_nowait(None)

    async def on_error(self, stream: UtteranceStream, code: str, message: str) -> None:
        self._failure = self._failure or (code, message)

    async def on_refused(self, stream: UtteranceStream, code: str, message: str) -> None:
        self._failure = (code, message)
        self.reason = EndReason.ERROR
        self._queue.put_nowait(None)
