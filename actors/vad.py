"""The VAD actor: when each session's person starts and stops speaking.

Serves the sessions its gateways give it (``session.serve`` / ``session.drop`` to its inbox;
:mod:`bus.served`), and hears only theirs: on the event bus, ``audio.frame`` on
``audio.in.<session>`` (16 kHz mono 20 ms, from the gateway) and ``session.state`` on
``session.state.<session>`` (from the supervisor: while the bot is SPEAKING the stricter
thresholds apply). Emits ``vad.speech_start`` / ``vad.speech_end``
on ``vad.<session>``, stamped in stream samples. A stream that stops sending mid-speech is ended
after ``stall_ms``; a session silent for ``forget_s`` (or ENDED) is forgotten.

Settings: :class:`VadSettings` (``actors.vad`` in topology.yaml).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import Counter, Histogram

from adapters.vad.detector import Boundary, Detector, DetectorConfig
from adapters.vad.models import VadModel, load_model
from bus import topics
from bus.audio_format import MIC
from bus.inbound import Inbound
from bus.logs import kv
from bus.runtime import Actor
from bus.schema.audio import AudioFrame
from bus.schema.session import SessionState, StateChanged
from bus.schema.vad import SpeechEnd, SpeechStart
from bus.served import ServedSessions
from bus.settings import load_settings
from bus.topology import ActorConfig


@dataclass(frozen=True, slots=True)
class VadSettings:
    """``actors.vad`` in topology.yaml. While the bot speaks the ``speaking_`` values apply:
    its own echo and room noise must work harder to interrupt it."""

    model: Literal["webrtc", "silero"] = "webrtc"
    """``webrtc`` (WebRTC's GMM, microseconds a frame) or ``silero`` (its ONNX file)."""
    aggressiveness: int = 2
    """webrtc only, 0 (lenient) to 3 (strict), while listening."""
    speaking_aggressiveness: int = 2
    """webrtc only, while the bot speaks (3 hears "st..." onsets ~100 ms late)."""
    threshold: float = 0.5
    """Speech score, in (0, 1], at which a frame is voiced while listening (silero's
    probability; webrtc scores 0 or 1)."""
    speaking_threshold: float = 0.7
    """The same while the bot speaks."""
    gate_dbfs: float = -50.0
    """Decibels full scale: quieter frames are silence whatever the model says."""
    speaking_gate_boost_db: float = 10.0
    """Decibels the gate is raised by while the bot speaks."""
    min_speech_ms: float = 60.0
    """Milliseconds of voiced frames that start speech (debounce)."""
    speaking_min_speech_ms: float = 60.0
    """The same while the bot speaks (barge-in latency grows with it)."""
    min_silence_ms: float = 240.0
    """Milliseconds of silence that end speech (turn latency grows with it)."""
    preroll_ms: float = 300.0
    """Milliseconds of audio before the start that ASR transcribes too."""
    max_speech_s: float = 28.0
    """Seconds: longer speech is cut (Whisper's window is 30 s)."""
    stall_ms: float = 400.0
    """Milliseconds without frames after which a stream's speech is ended."""
    forget_s: float = 60.0
    """Seconds without frames after which a session is forgotten."""
    max_sessions: int = 1000
    """Sessions served at once (its registration's load is served over this); more are
    refused."""

    def __post_init__(self) -> None:
        for name in ("threshold", "speaking_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name)} is outside (0, 1]")
        for name in ("aggressiveness", "speaking_aggressiveness"):
            if getattr(self, name) not in (0, 1, 2, 3):
                raise ValueError(f"{name} {getattr(self, name)} is not 0..3")

    def detector_config(self) -> DetectorConfig:
        """The speech start/end rules these settings describe."""
        return DetectorConfig.from_ms(
            threshold=self.threshold,
            gate_dbfs=self.gate_dbfs,
            min_speech_ms=self.min_speech_ms,
            speaking_threshold=self.speaking_threshold,
            speaking_gate_dbfs=self.gate_dbfs + self.speaking_gate_boost_db,
            speaking_min_speech_ms=self.speaking_min_speech_ms,
            min_silence_ms=self.min_silence_ms,
            preroll_ms=self.preroll_ms,
            max_speech_s=self.max_speech_s,
        )

    def new_model(self) -> VadModel:
        """A fresh model for one stream (models keep per-stream state)."""
        return load_model(
            self.model,
            aggressiveness=self.aggressiveness,
            speaking_aggressiveness=self.speaking_aggressiveness,
        )


@dataclass(slots=True)
class Stream:
    detector: Detector
    last_frame: float = field(default_factory=time.monotonic)
    next_sequence: int = 0
    stalled: bool = False


class Vad(Actor):
    """Speech boundaries per session; see the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.settings = load_settings(VadSettings, config.settings, kind=config.kind)
        self.model_name = self.settings.model
        self.detector_config = self.settings.detector_config()
        self.stall_s = self.settings.stall_ms / 1000
        self.forget_s = self.settings.forget_s
        self.max_sessions = self.settings.max_sessions
        self.streams: dict[str, Stream] = {}
        self.bot_speaking: set[str] = set()
        """Sessions whose bot is SPEAKING (known before their audio may start)."""
        self.capabilities = {"model": self.model_name}
        self.served = ServedSessions(
            self, (topics.AUDIO_IN, topics.STATE), self.max_sessions, on_drop=self._forget
        )
        registry = self.metrics.registry
        self.frames = Counter("duplex_vad_frames_total", "Frames judged", registry=registry)
        self.rejected = Counter(
            "duplex_vad_frames_rejected_total",
            "Audio frames refused (not 16 kHz mono 20 ms, or too many sessions)",
            registry=registry,
        )
        self.gaps = Counter(
            "duplex_vad_sequence_gaps_total", "Frames missing from a stream", registry=registry
        )
        self.boundaries = Counter(
            "duplex_vad_events_total", "Speech boundaries", ["event"], registry=registry
        )
        self.frame_time = Histogram(
            "duplex_vad_frame_seconds",
            "Time to judge one frame",
            buckets=(5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2),
            registry=registry,
        )

    async def on_start(self) -> None:
        self.settings.new_model()  # a model that cannot load (silero missing) fails here, loudly
        self.spawn(self._sweep())
        self.log.info("vad ready", extra=kv(model=self.model_name))

    async def on_message(self, inbound: Inbound) -> None:
        msg, sid = inbound.message, inbound.env.session
        if isinstance(msg, AudioFrame):
            await self._frame(sid, msg)
        elif await self.served.handle(inbound):
            pass
        elif isinstance(msg, StateChanged):
            if msg.state is SessionState.SPEAKING:
                self.bot_speaking.add(sid)
            else:
                self.bot_speaking.discard(sid)
            if msg.state is SessionState.ENDED:
                self.streams.pop(sid, None)
        else:
            await super().on_message(inbound)

    async def on_purged(self) -> None:
        await self.served.drop_all()

    def _forget(self, sid: str) -> None:
        self.streams.pop(sid, None)
        self.bot_speaking.discard(sid)

    async def _frame(self, sid: str, msg: AudioFrame) -> None:
        if (
            msg.sample_rate != MIC.sample_rate
            or msg.channels != 1
            or len(msg.pcm) != MIC.frame_bytes
        ):
            self.rejected.inc()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid not in self.served:  # (a frame that crossed its session.drop)
                self.rejected.inc()
                return
            model = self.settings.new_model()
            stream = self.streams[sid] = Stream(Detector(model, self.detector_config))
        if msg.sequence > stream.next_sequence:
            self.gaps.inc(msg.sequence - stream.next_sequence)
        stream.next_sequence = msg.sequence + 1
        stream.last_frame, stream.stalled = time.monotonic(), False
        started = time.perf_counter()
        bot_speaking = sid in self.bot_speaking
        boundary = stream.detector.feed(msg.pcm, msg.stream_sample, bot_speaking)
        self.frame_time.observe(time.perf_counter() - started)
        self.frames.inc()
        if boundary is not None:
            await self._emit(sid, boundary)

    async def _emit(self, sid: str, boundary: Boundary) -> None:
        self.boundaries.labels(boundary.kind).inc()
        if boundary.kind == "start":
            event: SpeechStart | SpeechEnd = SpeechStart(
                stream_sample=boundary.sample,
                preroll_sample=boundary.preroll_sample,
            )
        else:
            event = SpeechEnd(stream_sample=boundary.sample)
        await self.publish(topics.topic(topics.VAD, sid), event, session=sid)
        self.log.debug(
            "speech boundary", extra=kv(session=sid, event=boundary.kind, sample=boundary.sample)
        )

    async def _sweep(self) -> None:
        """End speech in streams that stopped sending; forget long-silent sessions."""
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for sid, stream in list(self.streams.items()):
                idle = now - stream.last_frame
                if idle > self.forget_s:
                    self.streams.pop(sid, None)
                elif idle > self.stall_s and not stream.stalled:
                    stream.stalled = True
                    boundary = stream.detector.flush()
                    if boundary is not None:
                        self.log.warning(
                            "audio stalled mid-speech, speech ended",
                            extra=kv(session=sid, idle_s=round(idle, 2)),
                        )
                        await self._emit(sid, boundary)
