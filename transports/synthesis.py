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
from collections import deque
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
        self._queue: deque[bytes | None] = deque()
        """Frames come in, None at the end."""
        self._arrived = asyncio.Event()
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
        async for chunk in self.chunks(1):
            yield chunk

    async def chunks(self, max_frames: int) -> AsyncIterator[bytes]:
        """The frames as they come, joined: each chunk is every frame already here, up to
        ``max_frames`` (so the first comes alone, at once). A consumer whose every message
        costs (Wyoming's events) sends fewer while the worker runs ahead, and waits for none.
        Raises SynthesisFailed when the synthesis did not complete."""
        self.start()
        while True:
            if not self._queue:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), FRAME_TIMEOUT_S)
                except TimeoutError:
                    self.stop()
                    raise SynthesisFailed(
                        "SYNTHESIS_FAILED", "the worker sent nothing", started=self.frames_taken > 0
                    ) from None
            chunk: list[bytes] = []
            while self._queue and self._queue[0] is not None and len(chunk) < max_frames:
                pcm = self._queue.popleft()
                assert pcm is not None
                chunk.append(pcm)
            if chunk:
                self.frames_taken += len(chunk)
                self.streams.send(self.stream, self.stream.used(len(chunk)))
                yield b"".join(chunk)
            elif self._queue:  # the end
                break
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

    def _put(self, item: bytes | None) -> None:
        self._queue.append(item)
        self._arrived.set()

    # ------------------------------------------------------------------ StreamSink

    async def on_frame(self, stream: UtteranceStream, msg: TtsFrame) -> None:
        self._put(msg.pcm)

    async def on_end(self, stream: UtteranceStream, reason: EndReason, error: str) -> None:
        self.reason = reason
        if reason is not EndReason.COMPLETED and self._failure is None:
            self._failure = ("SYNTHESIS_FAILED", error or reason.value)
        self._put(None)

    async def on_error(self, stream: UtteranceStream, code: str, message: str) -> None:
        self._failure = self._failure or (code, message)

    async def on_refused(self, stream: UtteranceStream, code: str, message: str) -> None:
        self._failure = (code, message)
        self.reason = EndReason.ERROR
        self._put(None)
