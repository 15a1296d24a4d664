"""Audio of a WebRTC session: the bot's outbound track, the microphone reader, and a jitter
buffer for the microphone that adds no fixed delay.

:class:`BotTrack` is the one pacer of the bot's audio on the wire: aiortc's sender calls
:meth:`BotTrack.recv` in a loop with no pacing of its own, and each call waits for its absolute
deadline (``anchor + n * 20 ms``), then returns the next queued 48 kHz frame, or silence when
there is none (RTP keeps flowing; timestamps stay continuous). Its queue holds
:data:`TRACK_QUEUE_FRAMES` frames: the session's playout feeds it and waits when it is full, so a
barge-in flush (:meth:`BotTrack.discard`) silences the bot from the next frame, with a
:data:`FADE_MS` fade of the frame that would have played instead of a click.

:class:`MicReader` drains the browser's decoded Opus (48 kHz stereo s16 from aiortc) into the
session's microphone path as mono; aiortc's receive queue is unbounded, so a reader that falls
behind drops the backlog beyond :data:`MAX_MIC_BACKLOG` frames and counts it.

:class:`PassThroughAudioBuffer` replaces aiortc's audio jitter buffer (``capacity=16,
prefetch=4``: a packet leaves only when the fourth newer one has arrived, 80 ms of fixed delay
on the microphone; one Opus packet is one whole frame, so nothing needs reassembly). It hands
each packet on as it arrives and drops only late, out-of-order ones. Installing it touches a
private attribute of ``aiortc.RTCRtpReceiver``: pyproject.toml pins aiortc's minor version and
tests/test_webrtc_audio.py checks it.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from bus.audio_format import BOT, FRAME_S

TRACK_QUEUE_FRAMES = 2
"""Frames the bot track holds ahead of the wire (the playout's 40 ms lead)."""
FADE_MS = 4.0
"""A flush fades the cut signal out over this long instead of stopping on a click."""
MAX_LATE_FRAMES = 5
"""A sender this many frames behind its deadlines re-anchors instead of bursting."""
MAX_MIC_BACKLOG = 5
"""Decoded microphone frames (20 ms each) allowed to wait for the reader; more are dropped."""
_SILENCE = bytes(BOT.frame_bytes)
_FADE = np.linspace(1.0, 0.0, int(BOT.sample_rate * FADE_MS / 1000), dtype=np.float32)


class BotTrack(MediaStreamTrack):
    """The bot's audio to one browser; see the module docstring."""

    kind = "audio"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.frames_sent = 0
        """Frames returned to the sender (audio and silence)."""
        self.audio_frames = 0
        """Of them, frames that carried the bot's audio."""
        self.reanchors = 0
        self._queue: deque[bytes] = deque()
        self._space = asyncio.Event()
        self._space.set()
        self._generation = 0
        """Bumped by :meth:`discard`: a put waiting across it drops its frame."""
        self._blocked_puts = 0
        self._fade_next: bytes | None = None
        self._anchor: float | None = None
        self._pts = 0
        self._time_base = fractions.Fraction(1, BOT.sample_rate)

    # ------------------------------------------------------------------ producer side

    async def put(self, pcm: bytes) -> None:
        """Queue one 20 ms frame (48 kHz mono s16le); waits while the queue is full."""
        if len(pcm) != BOT.frame_bytes:
            raise ValueError(f"a bot frame is {BOT.frame_bytes} bytes, not {len(pcm)}")
        generation = self._generation
        self._blocked_puts += 1
        try:
            while len(self._queue) >= TRACK_QUEUE_FRAMES and self.readyState == "live":
                self._space.clear()
                await self._space.wait()
                if generation != self._generation:
                    return  # discarded while waiting
        finally:
            self._blocked_puts -= 1
        if generation == self._generation and self.readyState == "live":
            self._queue.append(pcm)

    def discard(self) -> int:
        """Drop every frame not yet on the wire (a put waiting included); the next frame
        fades out what would have played. Returns how many frames were dropped."""
        dropped = len(self._queue) + self._blocked_puts
        if self._queue:
            self._fade_next = self._queue[0]
        self._queue.clear()
        self._generation += 1
        self._space.set()
        return dropped

    # ------------------------------------------------------------------ aiortc's side

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self.clock()
        if self._anchor is None or now - self._deadline() > MAX_LATE_FRAMES * FRAME_S:
            if self._anchor is not None:
                self.reanchors += 1
            self._anchor, self.frames_sent = now, 0
        wait = self._deadline() - now
        if wait > 0:
            await asyncio.sleep(wait)
        pcm = self._next_pcm()
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = BOT.sample_rate
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += BOT.frame_samples
        self.frames_sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._space.set()

    def _deadline(self) -> float:
        return (self._anchor or 0.0) + self.frames_sent * FRAME_S

    def _next_pcm(self) -> bytes:
        if self._fade_next is not None:
            cut, self._fade_next = self._fade_next, None
            samples = np.frombuffer(cut, dtype="<i2").astype(np.float32)
            out = np.zeros_like(samples)
            out[: len(_FADE)] = samples[: len(_FADE)] * _FADE
            return out.astype("<i2").tobytes()
        if not self._queue:
            return _SILENCE
        pcm = self._queue.popleft()
        self._space.set()
        self.audio_frames += 1
        return pcm


class MicReader:
    """Reads one browser microphone track into ``deliver`` (48 kHz mono s16le chunks)."""

    def __init__(
        self,
        track: MediaStreamTrack,
        deliver: Callable[[bytes], Awaitable[None]],
        on_dropped: Callable[[int], None],
    ) -> None:
        self.track = track
        self.deliver = deliver
        self.on_dropped = on_dropped
        self.frames = 0
        self.dropped = 0
        self.last_frame_at = time.monotonic()
        """When the last frame came (a silent peer is closed after a while)."""

    async def run(self) -> None:
        """Until the track ends."""
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            self.last_frame_at = time.monotonic()
            self._drain_backlog()
            if not isinstance(frame, av.AudioFrame):
                continue
            pcm = mono_s16(frame)
            if pcm:
                self.frames += 1
                await self.deliver(pcm)

    def _drain_backlog(self) -> None:
        queue: asyncio.Queue[Any] | None = getattr(self.track, "_queue", None)
        if queue is None:
            return
        dropped = 0
        while queue.qsize() > MAX_MIC_BACKLOG:
            if queue.get_nowait() is None:  # the end: put it back for the next recv
                queue.put_nowait(None)
                break
            dropped += 1
        if dropped:
            self.dropped += dropped
            self.on_dropped(dropped)


def mono_s16(frame: av.AudioFrame) -> bytes:
    """A decoded frame as 48 kHz mono s16le (the left channel of aiortc's interleaved
    stereo: browsers send a mono microphone as two equal channels)."""
    if frame.sample_rate != BOT.sample_rate or frame.format.name != "s16":
        raise ValueError(f"unexpected microphone frame {frame.format.name} {frame.sample_rate}")
    samples = frame.to_ndarray().reshape(-1)
    channels = len(frame.layout.channels)
    if channels > 1:
        samples = samples[::channels]
    return samples.astype("<i2").tobytes()


class PassThroughAudioBuffer:
    """Stands in for aiortc's audio ``JitterBuffer``: each packet is a frame, handed on as it
    arrives; a packet older than the newest one handed on is dropped (the decoder would only
    glitch on it)."""

    capacity = 16

    def __init__(self) -> None:
        self._last: int | None = None
        self.late = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None and uint16_add(seq, -self._last) > 0x8000 - 1:
            self.late += 1
            return False, None
        if seq == self._last:
            return False, None
        self._last = seq
        data: bytes = getattr(packet, "_data", b"")
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


_JITTER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


def install_pass_through(receiver: RTCRtpReceiver) -> PassThroughAudioBuffer:
    """Swap ``receiver``'s audio jitter buffer for :class:`PassThroughAudioBuffer`."""
    if not hasattr(receiver, _JITTER_ATTRIBUTE):
        raise RuntimeError(
            "this aiortc has no RTCRtpReceiver jitter buffer attribute; "
            "set actors.gateway.webrtc_jitter_buffer: aiortc"
        )
    buffer = PassThroughAudioBuffer()
    setattr(receiver, _JITTER_ATTRIBUTE, buffer)
    return buffer
