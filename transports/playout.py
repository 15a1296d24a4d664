"""Bot audio out to one client, paced in real time against absolute deadlines.

Frame ``n`` of a run goes out at ``start + n * 20 ms - lead``: the schedule never drifts the way
chained sleeps do, and the small ``lead`` keeps the client's buffer fed. Utterances play whole
and in order (frames of one never interleave with another's). ``pause`` holds the next frame,
``resume`` re-anchors the schedule and carries on with it, ``flush`` drops an utterance's
queued frames; each takes effect on the next frame. ``hold`` is the barge-in pause: frames
already sent but not yet due to play (the lead) go back to the head of the queue, so the client
may drop its buffer and a resume loses nothing. When frames do not arrive in time the
schedule waits and counts an underrun, then re-anchors instead of bursting to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bus.audio_format import FRAME_S
from bus.schema.tts import EndReason


@dataclass(slots=True)
class _Utterance:
    utterance_id: str
    frames: deque[tuple[bytes, int]] = field(default_factory=deque)
    """(pcm, words spoken by the end of it) waiting to go out."""
    ended: EndReason | None = None
    """The end reason, once the producer has sent its last frame."""
    played: int = 0
    started: bool = False
    """Its start was reported."""
    heard_words: int = 0
    """Words of the text played by the end of the last frame sent."""
    recent: deque[tuple[float, bytes, int]] = field(default_factory=lambda: deque(maxlen=16))
    """(play time, pcm, words) of the last frames sent, for :meth:`Playout.hold`."""


@dataclass(slots=True)
class PlayoutStats:
    """What the listener got."""

    frames: int = 0
    underruns: int = 0
    """Deadlines reached with the utterance unfinished and no frame to send."""
    late: int = 0
    """Frames sent more than one frame after their deadline (the loop was held up)."""


SendFrame = Callable[[str, bytes, float], Awaitable[None]]
"""``(utterance_id, pcm, play_at)``: sends one frame of an utterance to the client, due to play
at ``play_at`` (monotonic seconds)."""
OnStarted = Callable[[str], Awaitable[None]]
"""``(utterance_id)``: its first frame is about to go out."""
OnEnded = Callable[[str, EndReason, int, int], Awaitable[None]]
"""``(utterance_id, reason, frames_played, words_heard)``: its last frame went out."""


class Playout:
    """One session's paced audio output; see the module docstring."""

    def __init__(
        self, send: SendFrame, on_started: OnStarted, on_ended: OnEnded, lead_s: float = 0.04
    ) -> None:
        self.send = send
        self.on_started = on_started
        self.on_ended = on_ended
        self.lead_s = lead_s
        self.stats = PlayoutStats()
        self.paused = False
        self._queue: deque[_Utterance] = deque()
        self._by_id: dict[str, _Utterance] = {}
        self._wake = asyncio.Event()
        """Set by anything that may let an idle loop send: frames, an end, control."""
        self._control = asyncio.Event()
        """Set by pause and flush: they cut a wait for a deadline short."""
        self._anchor: float | None = None
        self._sent_in_run = 0
        self._idle = False
        """Nothing was queued at the last look: the next utterance may start a new run."""

    # ------------------------------------------------------------------ producer side

    def add_frame(self, utterance_id: str, frame: bytes, words: int = 0) -> None:
        """Queue the next frame of ``utterance_id`` (a new id starts a new utterance); ``words``:
        words of its text spoken by the end of this frame."""
        utterance = self._by_id.get(utterance_id)
        if utterance is None:
            utterance = self._by_id[utterance_id] = _Utterance(utterance_id)
            self._queue.append(utterance)
        if utterance.ended is None:
            utterance.frames.append((frame, words))
            self._wake.set()

    def end(self, utterance_id: str, reason: EndReason = EndReason.COMPLETED) -> None:
        """No more frames will come for ``utterance_id``; it ends after those queued."""
        utterance = self._by_id.get(utterance_id)
        if utterance is None:
            utterance = self._by_id[utterance_id] = _Utterance(utterance_id)
            self._queue.append(utterance)
        if utterance.ended is None:
            utterance.ended = reason
        self._wake.set()

    # ------------------------------------------------------------------ control

    def pause(self) -> None:
        self.paused = True
        self._control.set()

    def hold(self, unplayed: int | None = None) -> int:
        """Pause, and take back the frames sent ahead of their play time (the client is told
        to drop them): the last ``unplayed`` frames sent, where the transport knows how many it
        dropped, else those whose play time is still to come. Returns how many. A resume sends
        them again."""
        self.pause()
        if not self._queue:
            return 0
        utterance, now, back = self._queue[0], time.monotonic(), 0
        if utterance.ended not in (None, EndReason.COMPLETED):
            return 0  # flushed: what was cut stays cut
        while utterance.recent and (
            utterance.recent[-1][0] > now if unplayed is None else back < unplayed
        ):
            _, frame, words = utterance.recent.pop()
            utterance.frames.appendleft((frame, words))
            utterance.played -= 1
            self.stats.frames -= 1
            back += 1
        if back:
            utterance.heard_words = utterance.recent[-1][2] if utterance.recent else 0
        return back

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._anchor = None  # the next frame starts a new run of deadlines
            self._wake.set()

    def flush(self, utterance_id: str | None = None, reason: EndReason = EndReason.STOPPED) -> int:
        """Drop the queued frames of one utterance (all, if None) and end it; returns how many
        frames were dropped. A pause on the dropped utterance is over: the next one plays."""
        dropped = 0
        for i, utterance in enumerate(list(self._queue)):
            if utterance_id is None or utterance.utterance_id == utterance_id:
                dropped += len(utterance.frames)
                utterance.frames.clear()
                if utterance.ended is None or utterance.ended is EndReason.COMPLETED:
                    utterance.ended = reason
                if i == 0 and self.paused:
                    self.paused, self._anchor = False, None
        self._wake.set()
        self._control.set()
        return dropped

    def has(self, utterance_id: str) -> bool:
        """``utterance_id`` is queued or playing (its end has not been reported)."""
        return utterance_id in self._by_id

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Pace frames out until cancelled."""
        while True:
            utterance = self._queue[0] if self._queue else None
            if utterance is not None and not utterance.frames and utterance.ended is not None:
                # All played, or flushed: reported even while paused (a pause right after a
                # stop must not leave the stopped utterance unended).
                self._queue.popleft()
                self._by_id.pop(utterance.utterance_id, None)
                await self.on_ended(
                    utterance.utterance_id, utterance.ended, utterance.played, utterance.heard_words
                )
                continue
            if (
                utterance is None
                or self.paused
                or (not utterance.frames and utterance.ended is None)
            ):
                if utterance is not None and not self.paused and self._anchor is not None:
                    self.stats.underruns += 1
                    self._anchor = None  # re-anchor when frames come, do not burst
                self._idle = utterance is None
                self._wake.clear()
                await self._wake.wait()
                continue
            if not await self._wait_for_deadline():
                continue  # paused or flushed while waiting: the frame stays, or is gone
            if not utterance.started:
                utterance.started = True
                await self.on_started(utterance.utterance_id)
                if self.paused or self._flushed_head():
                    self._sent_in_run -= 1  # its deadline comes again
                    continue  # held or cut while the start went out: no frame after that
            frame, words = utterance.frames.popleft()
            play_at = (self._anchor or 0.0) + (self._sent_in_run - 1) * FRAME_S
            utterance.played += 1
            utterance.heard_words = words
            utterance.recent.append((play_at, frame, words))  # before the send: a hold
            self.stats.frames += 1  # during it takes this frame back too
            await self.send(utterance.utterance_id, frame, play_at)

    async def _wait_for_deadline(self) -> bool:
        """Wait for the next frame's deadline; False if a pause or flush came first."""
        now = time.monotonic()
        if self._anchor is None or (
            self._idle and now > self._anchor + self._sent_in_run * FRAME_S
        ):
            # First frame, or the first after a silence the client has played out: a new run
            # of deadlines (continuing the old one would burst frames out to catch up).
            self._anchor, self._sent_in_run = now, 0
        self._idle = False
        deadline = self._anchor + self._sent_in_run * FRAME_S - self.lead_s
        if deadline > now:
            self._control.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - now):  # no task per frame, unlike wait_for
                    await self._control.wait()
        elif now - deadline > FRAME_S:
            self.stats.late += 1
        if self.paused or self._flushed_head():
            return False
        self._sent_in_run += 1
        return True

    def _flushed_head(self) -> bool:
        return bool(self._queue) and not self._queue[0].frames
