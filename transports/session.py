"""One client's session at the gateway, whatever carries it (WebSocket today, WebRTC next).

The transport parses what the client sends into :mod:`transports.protocol` commands and hands
them to :meth:`ClientSession.handle`; it gives the session a :class:`ClientLink` to send
events and audio back. The session does the rest: microphone audio re-framed to 16 kHz and
published for VAD and ASR, the bot's audio paced out by its :class:`~transports.playout.Playout`
against credit to the worker (:mod:`transports.utterance_stream`), the barge-in hold on VAD's
``speech_start`` (one bus hop), client controls applied at once, and every bus message for the
session turned into the client's events (docs/architecture.md, "Gateway ⇄ supervisor").
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

from bus import topics
from bus.audio_format import BOT, FRAME_MS, MIC, SAMPLE_BYTES
from bus.limits import PeerRateLimit
from bus.schema import Message
from bus.schema.asr import Transcript
from bus.schema.audio import AudioFrame
from bus.schema.control import BargeInOutcome, Pause, Resume, Stop
from bus.schema.session import (
    PlayoutEvent,
    PlayoutEventKind,
    PlayoutSpeak,
    PlayoutText,
    SessionClosed,
    SessionConfig,
    SessionOpened,
    SessionReply,
    SessionText,
    StateChanged,
)
from bus.schema.system import Error, Registration
from bus.schema.tts import EndReason, TtsFrame
from bus.schema.vad import SpeechEnd, SpeechStart
from transports import protocol as p
from transports.echo import EchoCanceller
from transports.mic import MicInput
from transports.playout import Playout
from transports.utterance_stream import BusPort, Registry, StreamClient, UtteranceStream

LEAD_FRAMES = 10
"""Credit a worker starts an utterance with: 200 ms ahead of playout."""
CREDIT_BATCH = 5
"""Frames played before the worker is granted as many more."""
MESSAGE_RATE = 100.0
"""Client messages per second allowed on average (50/s is 20 ms audio chunks)."""
MESSAGE_BURST = 400.0
MAX_AUDIO_AHEAD_S = 30.0
"""Microphone audio may run this far ahead of real time (a file sent fast); more is refused."""
ADOPT_WAIT_S = 2.0
"""A session whose supervisor left waits this long for another (a restarted one) to take it,
then ends ``supervisor_lost``."""
RESYNC_WAIT_S = 10.0
"""The same when the supervisor went missing from a fresh registry snapshot (a broker restart:
actors register again over a few heartbeats)."""
MAX_PENDING_TEXTS = 64
"""Texts remembered until their utterance begins (the supervisor queues 32 at most)."""
_FROM_SUPERVISOR = (
    PlayoutSpeak,
    PlayoutText,
    BargeInOutcome,
    Stop,
    StateChanged,
    SessionReply,
    SessionClosed,
)
"""What only a session's supervisor sends it: from a former one, it is dropped."""


def live_voices(registry: Registry) -> list[str]:
    """Every voice a live TTS worker offers, sorted."""
    voices = {v for w in registry.alive("tts_worker") for v in w.capabilities.get("voices", ())}
    return sorted(str(v) for v in voices)


class ClientLink(Protocol):
    """A transport's connection to one client."""

    @property
    def closed(self) -> bool: ...

    async def send_event(self, event: dict[str, Any]) -> None:
        """A protocol event (JSON object); dropped silently once the client is gone."""

    async def send_audio(self, pcm: bytes) -> None:
        """One 20 ms frame of bot audio (48 kHz mono s16le)."""

    def backlog_bytes(self) -> int:
        """Bytes sent to the client that it has not taken yet (0 where the transport paces
        audio itself)."""

    def discard_audio(self) -> int | None:
        """Drop the bot audio sent but not yet played (a barge-in, a cut); returns how many
        frames, or None where the client holds that audio (it drops it on ``barge_in`` or
        ``tts_end``) and playout's clock tells."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StallPolicy:
    """What a client that stops taking its audio gets (``actors.gateway`` settings)."""

    max_backlog_s: float = 2.0
    """Seconds of audio sent and not taken before its utterance is paused."""
    stop_after_s: float = 5.0
    """Stalled this long: the utterance is stopped (its worker's stream slot freed)."""
    close_after_s: float = 20.0
    """Stalled this long: the session ends ``client_stalled`` and the connection is cut."""


class SessionBus(BusPort, Protocol):
    """What a session needs of the gateway actor (:class:`bus.runtime.Actor` is one)."""

    async def publish(self, topic: bytes, msg: Message, *, session: str = "") -> None: ...


class SessionMetrics:
    """The gateway's session figures in Prometheus."""

    def __init__(self, registry: Any) -> None:
        self.barge_in = Histogram(
            "duplex_barge_in_seconds",
            "The person's first speech sample received -> bot playout held",
            buckets=(0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 1.0),
            registry=registry,
        )
        self.turn = Histogram(
            "duplex_turn_latency_seconds",
            "End of the person's speech received -> first reply frame sent",
            buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 5.0),
            registry=registry,
        )
        self.underruns = Counter(
            "duplex_playout_underruns_total",
            "Playout deadlines reached with an utterance unfinished and no frame to send",
            registry=registry,
        )
        self.late_frames = Counter(
            "duplex_playout_late_frames_total",
            "Frames sent more than one frame after their deadline",
            registry=registry,
        )
        self.echo_erle = Histogram(
            "duplex_echo_erle_db",
            "Per utterance heard, with echo cancellation on: echo cancelled while the bot was "
            "audible (echo return loss enhancement, dB)",
            buckets=(0, 3, 6, 10, 15, 20, 25, 30, 40, 50),
            registry=registry,
        )


@dataclass(slots=True)
class SessionStats:
    """One session's voice figures, sent to its client as ``metrics``."""

    barge_ins: int = 0
    false_interruptions: int = 0
    barge_in_ms: float | None = None
    turn_latency_ms: float | None = None
    asr_rtf: float | None = None
    echo_erle_db: float | None = None

    def event(self) -> p.MetricsEvent:
        return p.MetricsEvent(
            self.barge_ins,
            self.false_interruptions,
            self.barge_in_ms,
            self.turn_latency_ms,
            self.asr_rtf,
            self.echo_erle_db,
        )


class ClientSession:
    """A connected client; see the module docstring. It is the sink of its utterance streams."""

    def __init__(
        self,
        session_id: str,
        link: ClientLink,
        *,
        transport: str,
        bus: SessionBus,
        streams: StreamClient,
        metrics: SessionMetrics,
        max_text_chars: int,
        stall: StallPolicy | None = None,
    ) -> None:
        self.session_id = session_id
        self.link = link
        self.transport = transport
        self.bus = bus
        self.streams = streams
        self.metrics = metrics
        self.max_text_chars = max_text_chars
        self.stall = stall or StallPolicy()
        self.stalled_since: float | None = None
        """When the client's backlog went over the bound (None: it takes its audio)."""
        self.stall_paused = False
        self.voice = ""
        self.dialogue = ""
        """Empty: the supervisor's default."""
        self.audio_format = p.AudioFormat.BINARY
        self.supervisor = ""
        self._former: set[str] = set()
        """Supervisors this session had: their late messages are not the session's any more."""
        self.adopting: asyncio.Task[None] | None = None
        """Waiting for a supervisor to take the session over."""
        self.pending_texts: deque[SessionText] = deque(maxlen=MAX_PENDING_TEXTS)
        """Texts sent to the supervisor whose utterance has not begun: sent again to one that
        takes the session over."""
        self.held_texts: deque[SessionText] = deque(maxlen=MAX_PENDING_TEXTS)
        """Texts not sent yet: while no supervisor runs the session, or an orphan plays."""
        self._supervisor_started = 0
        """``started_wall_ns`` of the supervisor's registration: tells one that comes back
        (it has the session) from a restart under the same id (it has not)."""
        self.orphan = ""
        """An utterance that began under a supervisor now gone: it plays out, but no one can
        decide a barge-in on it."""
        self.mic = MicInput()
        self.echo = EchoCanceller() if transport != "webrtc" else None
        """The bot's voice out of the microphone: on for clients with no canceller of their
        own; a browser runs its own (session_config ``echo_cancellation`` either way)."""
        self.stats = SessionStats()
        self.rate = PeerRateLimit(MESSAGE_RATE, MESSAGE_BURST)
        self.playout = Playout(self._send_frame, self._started, self._ended)
        self.speaking: UtteranceStream | None = None
        """The utterance this session's playout speaks (routing, streaming or draining)."""
        self.answers_sample = -1
        """For a reply: the person's end of speech it answers (turn latency), -1 if none."""
        self._cutting: dict[str, UtteranceStream] = {}
        """Utterances cut here whose end playout has yet to report (no longer ``speaking``:
        a pause or a hold must not touch them)."""
        self.held = False
        """A barge-in holds playout until the supervisor's outcome."""
        self.client_paused = False
        self._sequence = 0
        """JSON-audio frames sent, for their ``sequence`` field."""
        self._audio_started: float | None = None
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=4096)
        """(stream sample after a chunk, monotonic time it arrived): when did sample N come."""
        self._player: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """``session_start``, playout running, the supervisor told."""
        await self.send(p.SessionStart(self.session_id))
        self._player = self.bus.spawn(self.playout.run())
        supervisors = self.bus.registry.alive("supervisor")
        if not supervisors:
            # Taken by the first supervisor that registers (SessionHub.on_registry).
            await self.error("NO_WORKER", "no session supervisor is running")
            return
        self.adopt(min(supervisors, key=lambda r: r.load))

    def speak_older_protocol(self) -> None:
        """The older full-duplex-voice-chat project's protocol (a WebSocket at ``/``): bot
        audio as JSON ``audio`` messages whose ``sequence`` counts from 1 over the session."""
        self.audio_format = p.AudioFormat.JSON
        self._sequence = 1

    def adopt(self, supervisor: Registration) -> None:
        """``supervisor`` runs this session from now on: it hears of the session, its settings
        and the texts not yet begun (an utterance playing goes on; its texts follow its end)."""
        self.supervisor = supervisor.actor_id
        self._supervisor_started = supervisor.started_wall_ns
        self.tell(SessionOpened(gateway=self.bus.id, transport=self.transport))
        if self.voice or self.dialogue:
            self.tell(SessionConfig(voice=self.voice, dialogue=self.dialogue))
        self.held_texts.extendleft(reversed(self.pending_texts))
        self.pending_texts.clear()
        if not self.orphan:
            self._send_held()

    def _send_held(self) -> None:
        while self.held_texts and self.supervisor:
            text = self.held_texts.popleft()
            if self.tell(text):
                self.pending_texts.append(text)

    async def supervisor_lost(self, *, resync: bool = False) -> None:
        """The session's supervisor left the registry (it died, hung or stopped): another takes
        the session within :data:`ADOPT_WAIT_S` (:data:`RESYNC_WAIT_S` after a broker restart,
        ``resync``), or the client hears ``SUPERVISOR_LOST`` and the session ends
        ``supervisor_lost``. The same process back (a stall, a broker restart) keeps it."""
        lost, started, self.supervisor = self.supervisor, self._supervisor_started, ""
        self.adopting = asyncio.current_task()
        try:
            wait_s = RESYNC_WAIT_S if resync else ADOPT_WAIT_S
            if await self._find_supervisor(lost, started, wait_s):
                return
        finally:
            self.adopting = None
        await self.error("SUPERVISOR_LOST", "the session supervisor stopped and no other runs")
        await self.end("supervisor_lost")

    async def _find_supervisor(self, lost: str, started: int, wait_s: float) -> bool:
        """Wait ``wait_s`` at most for a supervisor to run the session; True if one does."""
        deadline = time.monotonic() + wait_s
        while not self.link.closed:
            back = self.bus.registry.get(lost)
            if back is not None and back.started_wall_ns == started:
                self.supervisor = lost  # it kept the session all along
                self._send_held()
                return True
            others = [r for r in self.bus.registry.alive("supervisor") if r.actor_id != lost]
            if back is not None:
                others.append(back)  # restarted under the same id: a new process
            if others:
                self._former.add(lost)
                if self.speaking is not None:
                    self.orphan = self.speaking.utterance_id
                    if self.held:  # the person spoke over it and no one is left to judge it
                        self._cut(self.speaking, EndReason.BARGED_IN)
                self.adopt(min(others, key=lambda r: r.load))
                self._former.discard(self.supervisor)
                return True
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return False

    async def end(self, reason: str) -> None:
        """``session_end``, then close the connection (the transport then calls :meth:`close`)."""
        await self.send(p.SessionEnd(self.session_id, reason))
        await self.link.close()

    def close(self, reason: str = "client_closed") -> None:
        """The connection is gone: stop speaking, tell the supervisor and the router."""
        if self._player is not None:
            self._player.cancel()
        if self.speaking is not None:
            self.streams.stop(self.speaking)
            self.speaking = None
        self.tell(SessionClosed(reason=reason))
        self.streams.release(self.session_id)

    def check_backlog(self, now: float) -> bool:
        """Judge what the client has not taken (called every quarter second): over
        :attr:`StallPolicy.max_backlog_s` of audio its utterance pauses, stalled longer it is
        stopped, then the session ends. False once the session should be closed."""
        per_second = float(BOT.sample_rate * SAMPLE_BYTES)
        if self.audio_format is p.AudioFormat.JSON:  # base64, and some 80 bytes of fields
            per_second = per_second * 4 / 3 + 80 * 1000 / FRAME_MS
        backlog_s = self.link.backlog_bytes() / per_second
        if backlog_s <= self.stall.max_backlog_s:
            if self.stall_paused and backlog_s <= self.stall.max_backlog_s / 2:
                self.stall_paused = False
                self.stalled_since = None
                if not self.held and not self.client_paused:
                    self.playout.resume()
                    self._to_worker(Resume)
            elif not self.stall_paused:
                self.stalled_since = None
            return True
        if self.stalled_since is None:
            self.stalled_since = now
        if not self.stall_paused and self.speaking is not None:
            self.stall_paused = True
            self.playout.pause()
            self._to_worker(Pause)
        stalled = now - self.stalled_since
        if stalled > self.stall.stop_after_s and self.speaking is not None:
            self._cut(self.speaking, EndReason.STOPPED)
        return stalled <= self.stall.close_after_s

    # ------------------------------------------------------------------ from the client

    async def handle(self, command: p.ClientCommand) -> None:
        """One parsed client command (rate-limited)."""
        if not self.rate.allow(b"client"):
            await self.error("RATE_LIMITED", "too many messages; slow down")
        elif isinstance(command, p.AudioIn):
            await self.microphone(command.pcm)
        elif isinstance(command, p.TextCommand):
            text = SessionText(text=command.text, voice=self.voice)
            if self.supervisor and not self.orphan:
                if self.tell(text):
                    self.pending_texts.append(text)
                else:
                    await self.error("NO_WORKER", "the session supervisor cannot be reached")
            elif self.supervisor or self.adopting is not None:
                # Sent once the orphan has played out, or to the supervisor that takes over.
                self.held_texts.append(text)
            else:
                await self.error("NO_WORKER", "no session supervisor runs: the text is not spoken")
        elif isinstance(command, p.ControlCommand):
            self._control(command.command)
        elif isinstance(command, p.SessionConfigCommand):
            await self._configure(command)
        elif isinstance(command, p.EndCommand):
            await self.end("client_end")

    async def _configure(self, config: p.SessionConfigCommand) -> None:
        """Applied whole or not at all: a voice no live worker offers refuses the message."""
        if config.voice:
            voices = live_voices(self.bus.registry)
            # With no worker registered nothing can be checked; the text will say NO_WORKER.
            if voices and config.voice not in voices:
                offered = ", ".join(voices[:50])
                await self.error("UNKNOWN_VOICE", f"no voice {config.voice!r}; voices: {offered}")
                return
        if config.voice is not None:
            self.voice = config.voice
        if config.audio_format is not None:
            self.audio_format = config.audio_format
        if config.input_sample_rate is not None:
            self.mic.set_rate(config.input_sample_rate)
        if config.dialogue is not None:
            self.dialogue = config.dialogue
        if config.echo_cancellation is not None and config.echo_cancellation != bool(self.echo):
            self.echo = EchoCanceller() if config.echo_cancellation else None
        self.tell(SessionConfig(voice=self.voice, dialogue=self.dialogue))

    async def microphone(self, pcm: bytes) -> None:
        """Re-frame the client's audio to 16 kHz 20 ms and publish it for VAD and ASR (a media
        transport calls this directly: its audio is paced by the network, not rate-limited)."""
        now = time.monotonic()
        if self._audio_started is None:
            self._audio_started = now
        incoming_s = len(pcm) / SAMPLE_BYTES / self.mic.input_rate
        ahead_s = self.mic.stream_ms / 1000 + incoming_s - (now - self._audio_started)
        if ahead_s > MAX_AUDIO_AHEAD_S:
            await self.error("RATE_LIMITED", "microphone audio is far ahead of real time")
            return
        frames = self.mic.push(pcm)
        if frames:
            self._arrivals.append((self.mic.stream_sample, now))
        topic = topics.topic(topics.AUDIO_IN, self.session_id)
        pcms = [frame.pcm for frame in frames]
        if self.echo is not None and frames:
            # The chunk's last sample was captured just now: each frame's end, on that clock.
            # AEC3 releases the GIL; in a thread, a burst of audio does not hold up the loop
            # that paces every session's playout.
            zero = now - (self.mic.stream_sample + self.mic.pending_samples) / MIC.sample_rate
            ends = [zero + (f.stream_sample + MIC.frame_samples) / MIC.sample_rate for f in frames]
            pcms = await asyncio.to_thread(self.echo.cancel_frames, pcms, ends)
        for frame, pcm in zip(frames, pcms, strict=True):
            audio = AudioFrame(
                sample_rate=MIC.sample_rate,
                sequence=frame.sequence,
                stream_sample=frame.stream_sample,
                pcm=pcm,
            )
            await self.bus.publish(topic, audio, session=self.session_id)

    def _control(self, command: p.Control) -> None:
        """Applied here at once (playout and worker); the supervisor follows the state."""
        speaking = self.speaking
        if command is p.Control.STOP:
            if speaking is not None:
                self._cut(speaking, EndReason.STOPPED)
            self.tell(Stop())  # queued texts and a reply in the making are dropped too
            self.pending_texts.clear()
            self.held_texts.clear()
        elif speaking is None or self.held:
            # Nothing to pause (a PAUSE must not silence the next utterance), or a barge-in
            # holds it: its outcome, not the client, resumes it.
            return
        elif command is p.Control.PAUSE and not self.client_paused:
            self.client_paused = True
            self.playout.pause()
            self._to_worker(Pause)
            self.tell(Pause())
        elif command is p.Control.RESUME and self.client_paused:
            self.client_paused = False
            self.playout.resume()
            self._to_worker(Resume)
            self.tell(Resume())

    # ------------------------------------------------------------------ from the bus

    async def on_bus(self, msg: Message, src: str = "") -> None:
        """A bus message for this session from actor ``src`` (its utterance streams' are
        handled before)."""
        if isinstance(msg, _FROM_SUPERVISOR) and src != self.supervisor:
            return  # a former supervisor's (one that hung, was given up and came back)
        if isinstance(msg, SpeechStart):
            await self.send(p.VadEvent("speech_start", round(MIC.ms(msg.stream_sample))))
            speaking = self.speaking
            if speaking is not None and speaking.utterance_id == self.orphan:
                self._cut(speaking, EndReason.BARGED_IN)  # no supervisor can hold it for words
            elif speaking is not None and not self.held and not self.client_paused:
                await self._hold(speaking, msg.stream_sample)
        elif isinstance(msg, SpeechEnd):
            await self.send(p.VadEvent("speech_end", round(MIC.ms(msg.stream_sample))))
        elif isinstance(msg, Transcript):
            if msg.final and msg.rtf:
                self.stats.asr_rtf = msg.rtf
            if msg.text:
                await self.send(p.TranscriptEvent(msg.text, msg.final))
        elif isinstance(msg, PlayoutSpeak):
            self._speak(msg)
        elif isinstance(msg, PlayoutText):
            if self.speaking is not None and self.speaking.utterance_id == msg.utterance_id:
                self.streams.send(self.speaking, self.speaking.add_text(msg.text, msg.final))
        elif isinstance(msg, BargeInOutcome):
            await self._barge_in_outcome(msg)
        elif isinstance(msg, Stop):
            speaking = self.speaking
            if speaking is not None and msg.utterance_id in ("", speaking.utterance_id):
                self._cut(speaking, msg.reason)
        elif isinstance(msg, StateChanged):
            await self.send(p.StateEvent(msg.state.value))
        elif isinstance(msg, SessionReply):
            await self.send(p.ReplyEvent(msg.text))
        elif isinstance(msg, SessionClosed):
            await self.end(msg.reason)
        elif isinstance(msg, Error) and src not in self._former:
            # The supervisor's codes are the client's; anyone else's error (a worker's, for an
            # utterance already forgotten) is a synthesis failure.
            mine = src == self.supervisor and msg.code != "UNSUPPORTED_TYPE"
            await self.error(msg.code if mine else "SYNTHESIS_FAILED", msg.message)

    def _speak(self, msg: PlayoutSpeak) -> None:
        self.stall_paused = False  # a new utterance: a stalled client's check pauses it anew
        for text in self.pending_texts:
            if msg.final and msg.answers_sample < 0 and text.text == msg.text:
                self.pending_texts.remove(text)  # the client's text begins
                break
        if self.speaking is not None:
            self._cut(self.speaking, EndReason.STOPPED)
        self.speaking = UtteranceStream(
            msg.utterance_id,
            self.session_id,
            msg.text,
            voice=msg.voice,
            final=msg.final,
            lead=LEAD_FRAMES,
            credit_batch=CREDIT_BATCH,
        )
        self.answers_sample = msg.answers_sample
        self.streams.open(self.speaking, self)

    async def _hold(self, speaking: UtteranceStream, stream_sample: int) -> None:
        """The person spoke over the bot: silent from the next frame, the worker paused, the
        supervisor asked what the speech was."""
        self.held = True
        # The unplayed lead is taken back: dropped by the link, or by the client on barge_in.
        back = self.playout.hold(self.link.discard_audio())
        if self.echo is not None:
            self.echo.taken_back(back)
        self._to_worker(Pause)
        await self.send(p.BargeInEvent(speaking.utterance_id))
        self.stats.barge_ins += 1
        held = PlayoutEvent(utterance_id=speaking.utterance_id, event=PlayoutEventKind.HELD)
        if not self.tell(held):
            self._release_hold()  # no supervisor to decide: never stay silent for good
        await self._timed("barge_in", stream_sample)

    async def _barge_in_outcome(self, msg: BargeInOutcome) -> None:
        speaking = self.speaking
        if speaking is None or speaking.utterance_id != msg.utterance_id or not self.held:
            return
        if msg.words:
            self._cut(speaking, EndReason.BARGED_IN)
            self.pending_texts.clear()  # the supervisor dropped its queue
            self.held_texts.clear()
            return
        self._release_hold()
        self.stats.false_interruptions += 1
        await self.send(self._metrics())

    def _release_hold(self) -> None:
        if self.held:
            self.held = False
            if not self.client_paused:
                self.playout.resume()
                self._to_worker(Resume)

    def _cut(self, speaking: UtteranceStream, reason: EndReason) -> None:
        """End ``speaking`` now: the worker stops, queued frames are dropped."""
        was_held = self.held
        self.streams.stop(speaking, reason)
        self._release_hold()
        self._end_client_pause()
        if speaking is self.speaking:
            self.speaking = None
            self._cutting[speaking.utterance_id] = speaking
        self.playout.end(speaking.utterance_id, reason)  # even before its first frame came
        self.playout.flush(speaking.utterance_id, reason)
        if not was_held:  # (a hold took the link's audio back already)
            self.link.discard_audio()

    def _end_client_pause(self) -> None:
        """A client pause is of the utterance playing, not the next."""
        if self.client_paused:
            self.client_paused = False
            self.playout.resume()

    def _to_worker(self, control: type[Pause] | type[Resume]) -> None:
        if self.speaking is not None:
            msg = control(utterance_id=self.speaking.utterance_id)
            self.streams.send(self.speaking, self.speaking.control(msg))

    # ------------------------------------------------------------------ stream sink

    async def on_frame(self, stream: UtteranceStream, msg: TtsFrame) -> None:
        if stream is self.speaking:
            self.playout.add_frame(msg.utterance_id, msg.pcm, msg.words)

    async def on_end(self, stream: UtteranceStream, reason: EndReason, error: str) -> None:
        if stream is self.speaking:
            self.playout.end(stream.utterance_id, reason)

    async def on_error(self, stream: UtteranceStream, code: str, message: str) -> None:
        await self.error("SYNTHESIS_FAILED", message)

    async def on_refused(self, stream: UtteranceStream, code: str, message: str) -> None:
        """No worker: the client hears of it as an error (no ``tts_start``/``tts_end``)."""
        await self.error(code, message)
        if stream is self.speaking:
            self.speaking = None
            self._release_hold()
            self._end_client_pause()
            ended = PlayoutEvent(
                utterance_id=stream.utterance_id,
                event=PlayoutEventKind.ENDED,
                reason=EndReason.ERROR,
            )
            self.tell(ended)
            self._orphan_over(stream.utterance_id)

    # ------------------------------------------------------------------ playout

    async def _send_frame(self, utterance_id: str, pcm: bytes, play_at: float) -> None:
        """One frame to the client, in its audio format; credits the worker."""
        if self.link.closed:
            return
        if self.echo is not None:  # heard no sooner than sent: a client may play it at once
            self.echo.played(pcm, play_at - self.playout.lead_s)
        if self.audio_format is p.AudioFormat.JSON:
            await self.link.send_event(p.AudioJson.frame(pcm, self._sequence).to_json())
            self._sequence += 1
        else:
            await self.link.send_audio(pcm)
        speaking = self.speaking
        if speaking is not None and speaking.utterance_id == utterance_id:
            self.streams.send(speaking, speaking.used(1))

    async def _started(self, utterance_id: str) -> None:
        speaking = self.speaking
        text = ""
        if speaking is not None and speaking.utterance_id == utterance_id:
            text = speaking.spoken_text
            if self.answers_sample >= 0:
                await self._timed("turn", self.answers_sample)
        await self.send(p.TtsStarted(utterance_id, text))
        self.tell(PlayoutEvent(utterance_id=utterance_id, event=PlayoutEventKind.STARTED))

    def _orphan_over(self, utterance_id: str) -> None:
        """The orphan played out: the texts held back go to the new supervisor."""
        if utterance_id and utterance_id == self.orphan:
            self.orphan = ""
            self._send_held()

    async def _ended(self, utterance_id: str, reason: EndReason, played: int, words: int) -> None:
        # Everything about the session first: the sends below may wait on a slow client, and
        # a stop or a new utterance coming meanwhile must find this one over.
        heard = ""
        stream = self._cutting.pop(utterance_id, None)
        if self.speaking is not None and self.speaking.utterance_id == utterance_id:
            stream, self.speaking = self.speaking, None
            self._release_hold()
            self._end_client_pause()
        if stream is not None:
            if not stream.ended:  # stopped here before the worker finished
                self.streams.stop(stream, reason)
            text = stream.spoken_text
            heard = text if reason is EndReason.COMPLETED else " ".join(text.split()[:words])
        await self.send(p.TtsEnded(utterance_id, reason.value, played))
        erle = self.echo.take_erle_db() if self.echo is not None else None
        if erle is not None:  # echo was heard and cancelled: how much, after each utterance
            self.metrics.echo_erle.observe(erle)
            await self.send(self._metrics())
        stats = self.playout.stats
        self.metrics.underruns.inc(stats.underruns)
        self.metrics.late_frames.inc(stats.late)
        stats.underruns = stats.late = 0
        ended = PlayoutEvent(
            utterance_id=utterance_id,
            event=PlayoutEventKind.ENDED,
            reason=reason,
            frames=played,
            heard=heard[:8192],
        )
        self.tell(ended)
        self._orphan_over(utterance_id)

    async def _timed(self, what: str, stream_sample: int) -> None:
        """Latency from the client's audio at ``stream_sample`` to now, per session and in
        Prometheus: ``barge_in`` (playout held) or ``turn`` (first reply frame)."""
        ends = [end for end, _ in self._arrivals]
        i = bisect.bisect_right(ends, stream_sample)
        if i >= len(self._arrivals):
            return
        seconds = time.monotonic() - self._arrivals[i][1]
        if what == "barge_in":
            self.metrics.barge_in.observe(seconds)
            self.stats.barge_in_ms = round(1000 * seconds, 1)
        else:
            self.metrics.turn.observe(seconds)
            self.stats.turn_latency_ms = round(1000 * seconds, 1)
        await self.send(self._metrics())

    def _metrics(self) -> p.MetricsEvent:
        self.stats.echo_erle_db = self.echo.erle_db() if self.echo is not None else None
        return self.stats.event()

    # ------------------------------------------------------------------ sending

    async def send(self, event: p.ServerEvent) -> None:
        if not self.link.closed:
            with contextlib.suppress(ConnectionError):
                await self.link.send_event(event.to_json())

    async def error(self, code: str, message: str) -> None:
        await self.send(p.ErrorEvent(code, message[:1000]))

    def tell(self, msg: Message) -> bool:
        """To the session's supervisor, if it has one; False if it could not be sent."""
        return bool(self.supervisor) and self.bus.send_or_warn(
            self.supervisor, msg, self.session_id
        )
