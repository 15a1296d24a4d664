"""Acoustic echo cancellation: the bot's own voice taken out of the person's microphone.

With a loudspeaker the microphone hears the bot, and VAD takes the echo for the person: the bot
stops itself. The gateway knows exactly what it played to each session and when, so a session
with ``echo_cancellation`` on runs WebRTC's AEC3 (the ``pywebrtc-audio`` package) on its
microphone frames, before VAD and ASR, with its own playout as the far end:

- each bot frame the playout sends is decimated to 16 kHz (a stateful low-pass FIR, scipy; a
  soxr stream would hand its output out in 30 ms bursts, late for the reference) and written into a
  reference timeline at the time the playout scheduled it to be sent (its play time less the
  playout's lead: a client may play it the moment it comes, and an echo must never come before
  its reference), on the monotonic clock counted in 16 kHz samples; frames a barge-in takes
  back are erased from it;
- each microphone frame is placed on the same clock: its position in the microphone stream
  plus the stream's offset, the smallest of the last two seconds' (arrival time - stream
  time), its chunk's last sample taken as captured on arrival. So the reference is read as one
  unbroken stream, 20 ms per frame: placing each read by its own arrival would skip and repeat
  samples with the network's and the event loop's jitter, and AEC3 would never converge. The
  offset moves only when that minimum strays 10 ms (:data:`REALIGN_S`), when half a second of
  frames all came 80 ms or more later than it (the stream paused), and at once after a gap of a
  second.
  AEC3 estimates the rest of the delay (network, the client's buffer, the room: 300 ms and
  more) and follows a sound card's clock drift.

AEC3 with no echo to learn (a headset, a client that plays nothing aloud) suppresses the
person's voice 10-40 dB while the bot speaks for its first 4-8 s, until its own transparent mode
takes over: a barge-in there would come late or not at all. So the session also asks whether
the microphone hears the bot at all (:class:`EchoPath`: the raw microphone's correlation with
the reference, over quarter-second windows while the bot is audible). Once it has heard echo,
the cancelled audio goes on; after half a second of bot speech with no echo in it, the
microphone's own audio does (the canceller keeps learning, for echo that comes later). Until it
knows, a microphone that was streaming before the bot spoke gets the cancelled audio (the echo
comes first), and one whose audio begins while the bot speaks gets its own (a client that sends
audio only while the person talks: what it sends is the person).

The canceller's output lags its input by 8 ms (128 samples), and the microphone's own audio is
passed 8 ms late too, so a switch between them neither skips nor repeats; the stream keeps its
length.
"""

from __future__ import annotations

import itertools
import math
from collections import deque

import numpy as np
from pywebrtc_audio import EchoCanceller as Aec3
from scipy.signal import correlate, firwin, lfilter

from bus.audio_format import BOT, MIC

RATE = MIC.sample_rate
FRAME = MIC.frame_samples
HISTORY = 1 << 15
"""Reference samples kept (2 s): more than the playout's lead plus any delay looked back on."""
DECIMATION = BOT.sample_rate // RATE
LOW_PASS = firwin(63, 7_200, fs=BOT.sample_rate)
"""Anti-alias filter before taking every third sample: 0.65 ms of delay."""
OFFSET_FRAMES = 100
"""Microphone frames (2 s) over which the stream's offset is the smallest seen."""
REALIGN_S = 0.01
"""How far that smallest offset may stray before the reference is read from a new place."""
RECENT_FRAMES = 25
PAUSE_S = 0.08
"""Half a second of frames (:data:`RECENT_FRAMES`) all this much later than the offset: the
stream paused (jitter alone leaves some frame in half a second close to the offset)."""
AEC_LAG = 128
"""AEC3's output lags its input by this many samples."""
SENT_FRAMES = 256
"""Where the last bot frames were written, for a barge-in taking some back."""
GAP_S = 1.0
"""A microphone stream that comes this much later than its offset paused: placed again."""
AUDIBLE_RMS = 30.0
"""A reference frame this loud (int16 RMS, about -61 dBFS) counts as the bot speaking."""
WINDOW = RATE // 4
"""Microphone samples per echo-path judgement (0.25 s)."""
MAX_LAG = int(0.6 * RATE)
"""Longest echo delay looked for: 600 ms (network, the client's buffer, the room)."""
ECHO_CORRELATION = 0.3
"""A window's peak normalized correlation of the microphone with the reference that means echo.
Measured over 0.25 s windows (a simulated room: 20-300 ms, -30 to 0 dB, a 0.2 s reverberant
tail, a -60 dBFS noise floor): echo alone 0.24-0.78; no echo, noise alone 0.05-0.08, another
voice 0.09-0.25 (voiced speech against voiced speech correlates at some lag)."""
SAME_LAG = RATE // 500
"""Echo is heard in two windows whose peaks lie within 2 ms of each other: an echo path keeps
its delay, a chance likeness between two voices does not."""
NO_ECHO_CORRELATION = 0.15
"""Under this, a window says no echo; between the two it says nothing."""
NO_ECHO_WINDOWS = 2
"""Windows that say no echo (half a second) before the microphone goes uncancelled."""


class Timeline:
    """Samples on the monotonic clock at :data:`RATE`; anything not written reads as silence."""

    def __init__(self, size: int = HISTORY) -> None:
        self._ring = np.zeros(size, dtype=np.int16)
        self._end = 0
        """One past the last sample written; the ring holds ``[end - size, end)``."""

    def write(self, at: int, samples: np.ndarray) -> None:
        size = len(self._ring)
        if at > self._end:  # a gap since the last write: silence
            self._put(max(self._end, at - size), np.zeros(min(at - self._end, size), np.int16))
        self._put(at, samples[-size:] if len(samples) > size else samples)
        self._end = at + min(len(samples), size)

    def erase_from(self, at: int) -> None:
        """Forget what was written from ``at`` on."""
        self._end = min(self._end, at)

    def read(self, at: int, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.int16)
        start, stop = max(at, self._end - len(self._ring)), min(at + n, self._end)
        if start < stop:
            out[start - at : stop - at] = self._ring[np.arange(start, stop) % len(self._ring)]
        return out

    def _put(self, at: int, samples: np.ndarray) -> None:
        self._ring[np.arange(at, at + len(samples)) % len(self._ring)] = samples


class EchoPath:
    """Does the microphone hear the bot? None until known; see the module docstring."""

    def __init__(self) -> None:
        self.heard: bool | None = None
        self._mic: list[np.ndarray] = []
        self._quiet = 0
        self._lag: int | None = None
        """Where the last window that looked like echo found it."""
        self._listened = False
        """The microphone streamed while the bot was silent."""

    @property
    def cancelled(self) -> bool:
        """Whether the canceller's output should go on rather than the microphone's own."""
        return self.heard if self.heard is not None else self._listened

    def observe(self, near: np.ndarray, end: int, reference: Timeline) -> None:
        """A raw microphone frame ending at sample ``end`` (the reference's clock)."""
        self._mic.append(near)
        if len(self._mic) * len(near) < WINDOW:
            return
        mic = np.concatenate(self._mic).astype(np.float64)
        self._mic.clear()
        ref = reference.read(end - len(mic) - MAX_LAG, len(mic) + MAX_LAG).astype(np.float64)
        blocks = ref[: len(ref) // FRAME * FRAME].reshape(-1, FRAME)
        if np.mean(np.sqrt(np.mean(blocks**2, axis=1)) >= AUDIBLE_RMS) < 0.5:
            self._listened = True
            return  # the bot mostly silent: nothing to tell
        correlation, lag = peak_correlation(mic, ref)
        if correlation >= ECHO_CORRELATION:
            if self._lag is not None and abs(lag - self._lag) <= SAME_LAG:
                self.heard = True
            self._lag = lag
        elif self.heard is None and correlation < NO_ECHO_CORRELATION:
            self._quiet += 1
            if self._quiet >= NO_ECHO_WINDOWS:
                self.heard = False


def peak_correlation(mic: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """The largest normalized correlation of ``mic`` with a window of ``ref`` and its lag: how
    many samples ``mic`` trails the window (from ``len(ref) - len(mic)`` down to 0)."""
    products = correlate(ref, mic, mode="valid", method="fft")
    energy = np.concatenate([[0.0], np.cumsum(ref * ref)])
    windows = energy[len(mic) :] - energy[: -len(mic)]
    scale = np.sqrt(max(float(np.dot(mic, mic)), 1.0) * np.maximum(windows, 1.0))
    normalized = np.abs(products) / scale
    best = int(np.argmax(normalized))
    return float(normalized[best]), len(ref) - len(mic) - best


class EchoCanceller:
    """One session's canceller; see the module docstring. Not thread-safe (one per session)."""

    def __init__(self) -> None:
        self._aec = Aec3(sample_rate=RATE, num_channels=1)
        self._filter_state = np.zeros(len(LOW_PASS) - 1)
        self._phase = 0
        self._reference = Timeline()
        self._next: int | None = None
        """Where the next reference sample goes while a run of frames continues."""
        self._sent: deque[int] = deque(maxlen=SENT_FRAMES)
        """Where each recent bot frame was written."""
        self._raw_tail = np.zeros(AEC_LAG, dtype=np.int16)
        self._mic_samples = 0
        self._offsets: deque[float] = deque(maxlen=OFFSET_FRAMES)
        self._offset: float | None = None
        """Monotonic time of the microphone stream's sample 0, as the reference reads it."""
        self.path = EchoPath()
        self._energy = np.zeros((2, 2))
        """Microphone energy while the bot was audible and heard, before and after cancelling:
        row 0 for the session, row 1 since :meth:`take_erle_db`."""

    def played(self, pcm: bytes, sent_at: float) -> None:
        """A bot frame (48 kHz s16le) the playout sent at ``sent_at`` (monotonic seconds)."""
        at = round(sent_at * RATE)
        # A new run of frames after a silence; never back over frames already sent (a run
        # re-anchored after an underrun can be labelled up to the lead before the last one).
        if self._next is None or at > self._next + FRAME:
            self._next = at
        samples = self._decimate(np.frombuffer(pcm, dtype="<i2"))
        self._reference.write(self._next, samples)
        self._sent.append(self._next)
        self._next += len(samples)

    def _decimate(self, pcm: np.ndarray) -> np.ndarray:
        filtered, self._filter_state = lfilter(LOW_PASS, 1.0, pcm, zi=self._filter_state)
        kept: np.ndarray = filtered[self._phase :: DECIMATION]
        self._phase = (self._phase - len(pcm)) % DECIMATION
        return np.clip(np.round(kept), -32768, 32767).astype(np.int16)

    def taken_back(self, frames: int) -> None:
        """The last ``frames`` bot frames sent will not play (a barge-in took them back)."""
        if frames > 0 and self._sent:
            self._reference.erase_from(self._sent[-min(frames, len(self._sent))])
            for _ in range(min(frames, len(self._sent))):
                self._sent.pop()
        self._next = None

    def cancel(self, pcm: bytes, captured_by: float) -> bytes:
        """One 16 kHz microphone frame whose last sample was captured by ``captured_by``."""
        near = np.frombuffer(pcm, dtype="<i2")
        self._mic_samples += len(near)
        offset = captured_by - self._mic_samples / RATE
        if self._offset is not None and offset - self._offset > GAP_S:
            self._offsets.clear()  # the stream paused: its samples come later than before
            self._offset = None
        self._offsets.append(offset)
        recent = min(itertools.islice(reversed(self._offsets), RECENT_FRAMES))
        if self._offset is not None and recent - self._offset > PAUSE_S:
            while len(self._offsets) > RECENT_FRAMES:  # a pause: the older arrivals are stale
                self._offsets.popleft()
        smallest = min(self._offsets)
        if self._offset is None or abs(smallest - self._offset) > REALIGN_S:
            self._offset = smallest
        end = round((self._offset + self._mic_samples / RATE) * RATE)
        far = self._reference.read(end - len(near), len(near))
        out = self._aec.process(near, far)
        self.path.observe(near, end, self._reference)
        raw = np.concatenate([self._raw_tail, near])
        self._raw_tail = raw[len(near) :]
        if not self.path.cancelled:
            return raw[: len(near)].astype("<i2", copy=False).tobytes()
        if self.path.heard and _rms(far) >= AUDIBLE_RMS:
            self._energy += (_energy(near), _energy(out))
        return out.astype("<i2", copy=False).tobytes()

    def cancel_frames(self, frames: list[bytes], captured_by: list[float]) -> list[bytes]:
        """:meth:`cancel` for each frame of a chunk, in order (run it off the event loop)."""
        return [self.cancel(pcm, at) for pcm, at in zip(frames, captured_by, strict=True)]

    def erle_db(self) -> float | None:
        """Echo return loss enhancement over the session while the bot was audible (speech of
        the person's over it counts as echo left); None before the bot has been heard."""
        return _erle_db(*self._energy[0])

    def take_erle_db(self) -> float | None:
        """The same since the last call (an utterance's), and start counting again."""
        erle = _erle_db(*self._energy[1])
        self._energy[1] = 0
        return erle


def _erle_db(before: float, after: float) -> float | None:
    if before <= 0:
        return None
    return round(10 * math.log10(before / max(after, 1.0)), 1)


def _energy(samples: np.ndarray) -> float:
    return float(np.dot(samples.astype(np.float64), samples.astype(np.float64)))


def _rms(samples: np.ndarray) -> float:
    return math.sqrt(_energy(samples) / max(1, len(samples)))
