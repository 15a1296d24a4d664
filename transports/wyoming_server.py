"""The Wyoming protocol (Home Assistant's voice pipeline) over Duplex's TTS workers and ASR, on
the ``wyoming`` package's events and server classes.

One :class:`WyomingHandler` per TCP connection, all sharing one :class:`WyomingService` (the
actor's bus side). Per connection:

- ``describe`` → ``info``: a TTS program listing every voice a live worker offers (installed:
  resident on one) and an ASR program with the live ASR's model, both from the registry.
- ``synthesize`` → ``audio-start``, ``audio-chunk`` events as the worker makes the audio
  (48 kHz, 16-bit, mono; the first frame alone, at once, then the frames that have come, up to
  :data:`CHUNK_FRAMES` per chunk), ``audio-stop``. Streaming: ``synthesize-start``,
  ``synthesize-chunk`` (any piece of text: the worker speaks each sentence as soon as it is
  complete), the ``synthesize`` copy of the whole text a streaming client also sends
  (ignored), and ``synthesize-stop`` → one ``audio-start`` … ``audio-stop`` block, then
  ``synthesize-stopped``.
- ``transcribe`` (optional: its ``language``), ``audio-start`` (any rate, width and channel
  count), ``audio-chunk`` …, ``audio-stop`` → ``transcript``. The audio goes to the ASR as it
  comes (:mod:`transports.transcriber`), so only the recognition is left at the end. With
  transcript streaming on, words that two successive partial transcripts agree on go out as
  ``transcript-chunk`` (after one ``transcript-start``) while the person still speaks; at the
  end the rest of the final follows, then ``transcript-stop`` and ``transcript``, which alone is
  authoritative (a chunk sent cannot be taken back when the final reads otherwise).

Bad input never stops the server: an event of an unknown type is answered ``error`` and the
connection goes on; a request that cannot be served (a voice no worker has, audio before
``audio-start``, an event over :data:`MAX_PAYLOAD_BYTES`, text over the bound, no worker or
ASR) is answered ``error`` and the connection is closed, since Home Assistant reads no
``error`` and would otherwise wait for audio or a transcript that never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import soxr
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from bus.audio_format import BOT, MIC, SAMPLE_BYTES
from transports import protocol
from transports.session import live_voices
from transports.synthesis import Synthesis, SynthesisFailed
from transports.transcriber import AsrPort, Transcription, TranscriptionError
from transports.utterance_stream import StreamClient

log = logging.getLogger("duplex.wyoming")

MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest payload (or data block) one event may carry; a larger one is refused before it is
read (the ``wyoming`` reader would otherwise buffer whatever length a header claims)."""
MAX_QUEUED = 8
"""Syntheses one connection may have waiting behind the one playing."""
WRITE_TIMEOUT_S = 30.0
"""A client that takes nothing of what it is sent for this long is cut off."""
DRAIN_S = 120.0
"""A client that closes its side while audio plays: how long that audio may still go out."""
CHUNK_FRAMES = 5
"""Frames (100 ms) one ``audio-chunk`` may join when the worker runs ahead; the first frame
goes alone, at once."""
DISCARD_S, DISCARD_BYTES = 2.0, 16 * 1024 * 1024
"""After refusing an oversized event: what of the client's rest is read and dropped."""
PARTIAL_EVERY_S = 1.0
"""Seconds of new audio between partial transcripts (transcript streaming)."""
ATTRIBUTION = Attribution(name="Duplex", url="")
VERSION = "1"


@dataclass(frozen=True, slots=True)
class WyomingLimits:
    max_text_chars: int = 10_000
    """Text of one synthesis (streamed or not)."""
    max_audio_s: float = 300.0
    """Audio of one transcription."""
    stream_transcripts: bool = True
    """Announce and send ``transcript-start`` / ``-chunk`` / ``-stop``."""


class _Oversized(ValueError):
    """An event whose data or payload is over the bound (the reader returns None on it)."""


class _BoundedReader:
    """The connection's reader as ``wyoming.event.async_read_event`` uses it, refusing to read
    a data block or payload over :data:`MAX_PAYLOAD_BYTES`."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.oversized = 0

    async def readline(self) -> bytes:
        return await self._reader.readline()

    async def readexactly(self, n: int) -> bytes:
        if n > MAX_PAYLOAD_BYTES:
            self.oversized = n
            raise _Oversized(f"{n} bytes")
        return await self._reader.readexactly(n)

    async def read(self, n: int) -> bytes:
        return await self._reader.read(n)

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class WyomingService:
    """What every connection shares: the bus (streams for TTS, the ASR port), the limits,
    the figures."""

    def __init__(self, bus: AsrPort, streams: StreamClient, limits: WyomingLimits) -> None:
        self.bus = bus
        self.streams = streams
        self.limits = limits
        self.connections = 0
        self.errors: dict[str, int] = {}

    def info(self) -> Info:
        """``info`` from the registry now: every voice of a live worker, the live ASR."""
        voices: dict[str, TtsVoice] = {}
        for worker in self.bus.registry.alive("tts_worker"):
            languages = worker.capabilities.get("voice_languages") or {}
            for name in worker.capabilities.get("voices", ()):
                if not isinstance(name, str):
                    continue
                installed = name in worker.resident_models or (
                    voices[name].installed if name in voices else False
                )
                language = languages.get(name) if isinstance(languages, dict) else None
                voices[name] = TtsVoice(
                    name=name,
                    attribution=ATTRIBUTION,
                    installed=installed,
                    description=name,
                    version=None,
                    languages=[str(language)] if language else [],
                )
        tts = TtsProgram(
            name="duplex",
            attribution=ATTRIBUTION,
            installed=bool(voices),
            description="Duplex streaming TTS",
            version=VERSION,
            voices=[voices[n] for n in sorted(voices)],
            supports_synthesize_streaming=True,
        )
        models = []
        for asr in self.bus.registry.alive("asr")[:1]:
            models.append(
                AsrModel(
                    name=str(asr.capabilities.get("model_name", "whisper")),
                    attribution=ATTRIBUTION,
                    installed=True,
                    description="Whisper (faster-whisper)",
                    version=None,
                    languages=[str(asr.capabilities.get("language", "en"))],
                )
            )
        asr_program = AsrProgram(
            name="duplex",
            attribution=ATTRIBUTION,
            installed=bool(models),
            description="Duplex speech recognition (faster-whisper)",
            version=VERSION,
            models=models,
            supports_transcript_streaming=self.limits.stream_transcripts,
        )
        return Info(tts=[tts], asr=[asr_program])

    def count_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


class _Refusal(Exception):
    """Answer ``error`` and close the connection."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


class WyomingHandler(AsyncEventHandler):
    """One client connection; see the module docstring."""

    def __init__(
        self, service: WyomingService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self._bounded = _BoundedReader(reader)
        self.reader = self._bounded  # type: ignore[assignment]  # what async_read_event reads
        self._write_lock = asyncio.Lock()
        self._refused = False
        # TTS
        self._playlist: deque[tuple[Synthesis, bool]] = deque()
        """Syntheses asked for and not yet played (and whether each is a stream)."""
        self._player: asyncio.Task[None] | None = None
        self._streaming = False
        self._stream_voice = ""
        self._stream_text = 0
        self._synthesis: Synthesis | None = None
        # ASR
        self._language = ""
        self._transcription: Transcription | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._format: tuple[int, int, int] = (MIC.sample_rate, SAMPLE_BYTES, 1)
        self._partial: asyncio.Task[None] | None = None
        self._partial_at = 0
        self._hypotheses: list[list[str]] = []
        self._committed: list[str] = []
        self._chunks_started = False

    # ------------------------------------------------------------------ connection

    async def run(self) -> None:
        self.service.connections += 1
        try:
            await super().run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went mid-event
        finally:
            self.service.connections -= 1

    async def disconnect(self) -> None:
        """The client closed (what it asked for still plays, for a while), or a refusal or an
        oversized event ends the connection (nothing more is sent but the ``error``)."""
        if self._player is not None and not self._refused and not self._bounded.oversized:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._player), DRAIN_S)
        if self._bounded.oversized:
            text = f"an event of {self._bounded.oversized} bytes (at most {MAX_PAYLOAD_BYTES})"
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._send(Error(text=text, code="TOO_LARGE").event())
                await self._discard()
            self.service.count_error("TOO_LARGE")
        if self._player is not None:
            self._player.cancel()
        while self._playlist:
            self._playlist.popleft()[0].close()
        if self._partial is not None:
            self._partial.cancel()
        if self._synthesis is not None:
            self._synthesis.close()

    async def _discard(self) -> None:
        """Read and drop what the client still sends (the rest of an oversized event), for a
        little while: closing with it unread would reset the connection before the client has
        read the ``error``."""
        if self.writer.can_write_eof():
            self.writer.write_eof()
        deadline = time.monotonic() + DISCARD_S
        left = DISCARD_BYTES
        with contextlib.suppress(TimeoutError, ConnectionError):
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                data = await asyncio.wait_for(self._bounded.read(65536), wait)
                if not data:
                    break
                left -= len(data)

    async def _send(self, event: Event) -> None:
        """Write ``event``; a client that has not taken what was sent within
        :data:`WRITE_TIMEOUT_S` is cut off (ConnectionError)."""
        async with self._write_lock:
            try:
                await asyncio.wait_for(async_write_event(event, self.writer), WRITE_TIMEOUT_S)
            except TimeoutError:
                self.writer.transport.abort()
                raise ConnectionError("the client stopped reading") from None

    async def handle_event(self, event: Event) -> bool:
        try:
            try:
                return await self._handle(event)
            except (KeyError, TypeError, ValueError) as exc:  # the package's parsers' errors
                if isinstance(exc, _Refusal):
                    raise
                what = f"{event.type[:64]}: {type(exc).__name__}: {str(exc)[:200]}"
                raise _Refusal("INVALID_MESSAGE", f"a malformed event ({what})") from exc
        except _Refusal as exc:
            self._refused = True
            self.service.count_error(exc.code)
            log.info("wyoming request refused", extra={"code": exc.code, "error": str(exc)})
            await self._send(Error(text=str(exc), code=exc.code).event())
            return False

    async def _handle(self, event: Event) -> bool:
        kind = event.type
        if Describe.is_type(kind):
            await self._send(self.service.info().event())
        elif Synthesize.is_type(kind):
            if not self._streaming:  # (in a stream: the copy of the whole text; ignored)
                synthesize = Synthesize.from_event(event)
                voice = synthesize.voice.name if synthesize.voice else None
                text = self._text(synthesize.text, 0)
                await self._speak(Synthesis(self.service.streams, text, voice=self._voice(voice)))
        elif SynthesizeStart.is_type(kind):
            if self._streaming:
                raise _Refusal("INVALID_MESSAGE", "synthesize-start inside a stream")
            start = SynthesizeStart.from_event(event)
            self._streaming, self._stream_text = True, 0
            self._stream_voice = self._voice(start.voice.name if start.voice else None)
        elif SynthesizeChunk.is_type(kind):
            await self._stream_chunk(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(kind):
            await self._stream_stop()
        elif Transcribe.is_type(kind):
            self._language = (Transcribe.from_event(event).language or "")[:16]
        elif AudioStart.is_type(kind):
            self._audio_start(AudioStart.from_event(event))
        elif AudioChunk.is_type(kind):
            self._audio_chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(kind):
            await self._audio_stop()
        else:
            self.service.count_error("UNSUPPORTED_TYPE")
            text = f"unknown event type {kind[:64]!r}"
            await self._send(Error(text=text, code="UNSUPPORTED_TYPE").event())
        return True

    # ------------------------------------------------------------------ TTS

    def _voice(self, name: str | None) -> str:
        """A voice a live worker offers (empty: the worker's default), or a refusal."""
        if not name:
            return ""
        if len(name) > protocol.MAX_VOICE_CHARS:
            raise _Refusal("UNKNOWN_VOICE", "a voice name holds at most 128 characters")
        if name not in live_voices(self.service.bus.registry):
            raise _Refusal("UNKNOWN_VOICE", f"no worker has the voice {name[:64]!r}")
        return name

    def _text(self, text: str, so_far: int) -> str:
        limit = self.service.limits.max_text_chars
        if so_far + len(text) > limit:
            raise _Refusal("TEXT_TOO_LONG", f"a synthesis holds at most {limit} characters")
        try:
            return protocol.speakable(protocol.encodable(text, "text"))
        except protocol.ClientError as exc:
            raise _Refusal(exc.code, str(exc)) from None

    async def _speak(self, synthesis: Synthesis, *, stream: bool = False) -> None:
        """Play ``synthesis`` to the client after what this connection is already playing, in
        its player task (events keep being read meanwhile); at most :data:`MAX_QUEUED` wait."""
        if not synthesis.stream.text.strip() and synthesis.stream.final:
            raise _Refusal("EMPTY_TEXT", "there is no text to speak")
        if len(self._playlist) >= MAX_QUEUED:
            raise _Refusal("BUSY", f"{MAX_QUEUED} syntheses already wait on this connection")
        self._playlist.append((synthesis, stream))
        if self._player is None or self._player.done():
            self._player = asyncio.get_running_loop().create_task(self._play_all())

    async def _play_all(self) -> None:
        while self._playlist:
            synthesis, stream = self._playlist.popleft()
            await self._play(synthesis, stream)

    async def _play(self, synthesis: Synthesis, stream: bool) -> None:
        fmt = {"rate": BOT.sample_rate, "width": SAMPLE_BYTES, "channels": 1}
        started = False
        try:
            async for pcm in synthesis.chunks(CHUNK_FRAMES):
                if not started:
                    started = True
                    await self._send(AudioStart(**fmt).event())
                await self._send(AudioChunk(audio=pcm, **fmt).event())
            if not started:
                raise SynthesisFailed("SYNTHESIS_FAILED", "no audio came", started=False)
            await self._send(AudioStop().event())
            if stream:
                await self._send(SynthesizeStopped().event())
        except SynthesisFailed as exc:
            self.service.count_error(exc.code)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._send(Error(text=str(exc), code=exc.code).event())
            await self.stop()
        except (ConnectionError, RuntimeError):
            pass  # the client went
        finally:
            synthesis.close()

    async def _stream_chunk(self, text: str) -> None:
        if not self._streaming:
            raise _Refusal("INVALID_MESSAGE", "synthesize-chunk outside synthesize-start / -stop")
        if not text:
            return
        text = self._text(text, self._stream_text)
        self._stream_text += len(text)
        if self._synthesis is None:
            self._synthesis = Synthesis(
                self.service.streams, text, voice=self._stream_voice, final=False
            )
            await self._speak(self._synthesis, stream=True)
        else:
            self._synthesis.add_text(text, final=False)

    async def _stream_stop(self) -> None:
        if not self._streaming:
            raise _Refusal("INVALID_MESSAGE", "synthesize-stop without synthesize-start")
        self._streaming = False
        synthesis, self._synthesis = self._synthesis, None
        if synthesis is None:  # nothing was said: nothing to play
            await self._send(SynthesizeStopped().event())
        else:
            synthesis.add_text("", final=True)

    # ------------------------------------------------------------------ ASR

    def _audio_start(self, start: AudioStart) -> None:
        rate, width, channels = start.rate, start.width, start.channels
        if not 8000 <= rate <= 192_000 or width not in (1, 2, 4) or not 1 <= channels <= 8:
            raise _Refusal(
                "INVALID_AUDIO", f"audio of {rate} Hz, {width} bytes, {channels} channels"
            )
        self._format = (rate, width, channels)
        self._transcription = Transcription(self.service.bus, language=self._language)
        self._resampler = (
            soxr.ResampleStream(rate, MIC.sample_rate, 1, dtype="float32")
            if rate != MIC.sample_rate
            else None
        )
        self._partial_at, self._hypotheses, self._committed = 0, [], []
        self._chunks_started = False

    def _audio_chunk(self, chunk: AudioChunk) -> None:
        transcription = self._transcription
        if transcription is None:
            raise _Refusal("INVALID_MESSAGE", "audio-chunk before audio-start")
        if (chunk.rate, chunk.width, chunk.channels) != self._format:
            raise _Refusal("INVALID_AUDIO", "audio-chunk in another format than audio-start's")
        pcm = self._to_mic(chunk.audio, last=False)
        limit = self.service.limits.max_audio_s
        if (transcription.samples + len(pcm) // SAMPLE_BYTES) / MIC.sample_rate > limit:
            raise _Refusal("AUDIO_TOO_LONG", f"a transcription holds at most {limit:g} s")
        try:
            transcription.feed(pcm)
        except TranscriptionError as exc:
            raise _Refusal(exc.code, str(exc)) from None
        if (
            self.service.limits.stream_transcripts
            and (self._partial is None or self._partial.done())
            and transcription.samples - self._partial_at >= PARTIAL_EVERY_S * MIC.sample_rate
        ):
            self._partial_at = transcription.samples
            self._partial = asyncio.get_running_loop().create_task(self._stream_partial())

    def _to_mic(self, pcm: bytes, *, last: bool) -> bytes:
        _, width, channels = self._format
        usable = len(pcm) - len(pcm) % (width * channels)
        if width == 1:
            samples = (np.frombuffer(pcm[:usable], np.uint8).astype(np.float32) - 128) / 128
        elif width == 2:
            samples = np.frombuffer(pcm[:usable], "<i2").astype(np.float32) / 32768
        else:
            samples = np.frombuffer(pcm[:usable], "<i4").astype(np.float32) / 2**31
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()

    async def _stream_partial(self) -> None:
        """A partial transcript; words the last two agree on (past those sent) go out."""
        transcription = self._transcription
        if transcription is None:
            return
        try:
            result = await transcription.partial()
        except TranscriptionError:
            return  # the final will tell
        if transcription is not self._transcription:
            return  # that audio ended meanwhile
        words = result.text.split()
        self._hypotheses = [*self._hypotheses[-1:], words]
        if len(self._hypotheses) < 2:
            return
        agreed = _common_prefix(*self._hypotheses)
        if len(agreed) > len(self._committed):
            await self._chunk(agreed[len(self._committed) :])

    async def _chunk(self, words: list[str]) -> None:
        if not self._chunks_started:
            self._chunks_started = True
            await self._send(TranscriptStart(language=self._language or None).event())
        text = (" " if self._committed else "") + " ".join(words)
        self._committed += words
        await self._send(TranscriptChunk(text=text).event())

    async def _audio_stop(self) -> None:
        transcription = self._transcription
        if transcription is None:
            raise _Refusal("INVALID_MESSAGE", "audio-stop before audio-start")
        try:
            transcription.feed(self._to_mic(b"", last=True))
        except TranscriptionError as exc:
            raise _Refusal(exc.code, str(exc)) from None
        started = time.monotonic()
        try:
            result = await transcription.finish()
        except TranscriptionError as exc:
            raise _Refusal(exc.code, str(exc)) from None
        finally:
            self._transcription = None
            if self._partial is not None:
                self._partial.cancel()
        log.debug("wyoming transcript", extra={"seconds": round(time.monotonic() - started, 3)})
        language = result.language or self._language or None
        if self._chunks_started:
            words = result.text.split()
            if (
                _bare(words[: len(self._committed)]) == _bare(self._committed)
                and words[len(self._committed) :]
            ):
                await self._chunk(words[len(self._committed) :])
            await self._send(TranscriptStop().event())
        await self._send(Transcript(text=result.text, language=language).event())


def _bare(words: list[str]) -> list[str]:
    return [re.sub(r"[^\w']", "", w).lower() for w in words]


def _common_prefix(a: list[str], b: list[str]) -> list[str]:
    """The words ``a`` and ``b`` begin with alike (case and punctuation aside), as ``b`` has
    them (the "local agreement" of two successive hypotheses)."""
    n = 0
    for x, y in zip(_bare(a), _bare(b), strict=False):
        if x != y or not x:
            break
        n += 1
    return b[:n]
