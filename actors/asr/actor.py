"""The ASR actor: what each session's person said.

Serves the sessions its gateways give it (``session.serve`` / ``session.drop`` to its inbox;
:mod:`bus.served`), and hears only theirs. Consumes, on the event bus, ``audio.frame`` on
``audio.in.<session>`` and ``vad.speech_start`` / ``vad.speech_end`` on ``vad.<session>``. Emits
``asr.transcript`` on ``asr.<session>``: partial transcripts every ``partial_interval_ms`` while
the person speaks (only when they change), and one final transcript per ``speech_end``, from the
speech with its pre-roll, whose text is empty when it was noise (the supervisor reads an empty
final as "no words"). The final is computed early: as soon as the audio has been quiet for 100
ms, while VAD still waits out its minimum silence; if speech ends there with nothing loud since,
that result is published the moment ``speech_end`` arrives (otherwise the audio to
``speech_end`` is transcribed then). VAD's events are applied in order, a ``speech_end`` only
once the audio up to it has come: VAD hears the same frames at its own pace and can run ahead
(at most ``AUDIO_WAIT_S``).

Transcription requests (:mod:`.requests`: ``asr.audio`` chunks to the inbox, from the Wyoming
server and the gateway's ``/v1/audio/transcriptions``) are answered ``asr.result``.

The model runs in one worker thread; a final never waits behind queued partials. Settings:
:class:`~actors.asr.settings.AsrSettings` (``actors.asr`` in topology.yaml).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import Counter, Histogram

from actors.asr.jobs import Job, JobQueue
from actors.asr.requests import RequestRefused, Requests
from actors.asr.settings import AsrSettings
from actors.asr.stream import Early, Stream
from adapters.asr.whisper import WHISPER_RATE, Recognition, WhisperAsr
from bus import topics
from bus.audio_format import MIC
from bus.inbound import Inbound
from bus.logs import kv
from bus.runtime import Actor
from bus.schema.asr import Answer, RequestAudio, RequestResult, Segment, Transcript
from bus.schema.audio import AudioFrame
from bus.schema.session import SessionState, StateChanged
from bus.schema.system import Error
from bus.schema.vad import SpeechEnd, SpeechStart
from bus.served import ServedSessions
from bus.settings import load_settings
from bus.topology import ActorConfig

PARTIAL_SPAN_S = 30
"""A request's partial transcript hears its last this many seconds (Whisper's window)."""
AUDIO_WAIT_S = 1.0
"""Longest a ``speech_end`` waits for the audio up to it (VAD and this actor hear the same
frames, but each at its own pace): past this it is taken with what has come."""


class Asr(Actor):
    """Transcribes speech per session; see the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        if MIC.sample_rate != WHISPER_RATE:  # stream audio goes to Whisper as it is, unresampled
            raise RuntimeError(
                f"the bus carries {MIC.sample_rate} Hz, Whisper needs {WHISPER_RATE}"
            )
        self.settings = load_settings(AsrSettings, config.settings, kind=config.kind)
        self.partial_interval_s = self.settings.partial_interval_ms / 1000
        self.tail_samples = int(self.settings.tail_ms * MIC.sample_rate / 1000)
        self.max_sessions = self.settings.max_sessions
        self.streams: dict[str, Stream] = {}
        self.engine: WhisperAsr | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="asr")
        self._jobs = JobQueue(maxsize=4 * self.max_sessions + 2 * self.settings.max_requests)
        self.requests = Requests(self.settings.max_requests, self.settings.max_request_s)
        self.served = ServedSessions(
            self,
            (topics.AUDIO_IN, topics.VAD, topics.STATE),
            self.max_sessions,
            on_drop=self._forget,
        )
        registry = self.metrics.registry
        self.rtf = Histogram(
            "duplex_asr_rtf",
            "ASR real-time factor (compute seconds per audio second)",
            ["kind"],
            buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
            registry=registry,
        )
        self.latency = Histogram(
            "duplex_asr_final_seconds",
            "speech_end received -> final transcript published",
            buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0),
            registry=registry,
        )
        self.transcripts = Counter(
            "duplex_asr_transcripts_total", "Transcripts published", ["kind"], registry=registry
        )
        self.noise = Counter(
            "duplex_asr_no_words_total", "Finals that held no words (noise)", registry=registry
        )

    async def on_start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()

        def load() -> tuple[WhisperAsr, float]:
            engine = WhisperAsr(
                s.model_path,
                device=s.device,
                compute_type=s.compute_type,
                cpu_threads=s.cpu_threads,
                context=s.context,
                language=s.language,
                beam_size=s.beam_size,
            )
            return engine, engine.warm()

        engine, warm_s = await loop.run_in_executor(self._pool, load)
        self.engine = engine
        self.capabilities = {
            **self.capabilities,  # (max_sessions, from ServedSessions)
            "model": engine.model_path,
            "model_name": engine.name,
            "context": engine.context,
            "language": engine.language,
            "multilingual": engine.multilingual,
            "compute_type": engine.compute_type,
            **engine.device.capabilities(),
        }
        self.spawn(self._work())
        self.spawn(self._partials())
        self.log.info(
            "asr ready",
            extra=kv(model=engine.model_path, device=str(engine.device), warm_s=round(warm_s, 3)),
        )

    async def on_stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def on_message(self, inbound: Inbound) -> None:
        msg, sid = inbound.message, inbound.env.session
        stream = self.streams.get(sid)
        if isinstance(msg, AudioFrame):
            if msg.sample_rate != MIC.sample_rate or msg.channels != 1 or not sid:
                return
            if stream is None:
                if sid not in self.served:  # (a frame that crossed its session.drop)
                    return
                stream = self.streams[sid] = Stream()
            stream.append(msg.stream_sample, msg.pcm)
            stream.last_frame = time.monotonic()
            self._early(sid, stream)
            if stream.boundaries:
                await self._boundaries(sid, stream)
        elif isinstance(msg, SpeechStart | SpeechEnd) and stream is not None:
            stream.boundaries.append((msg, time.monotonic()))
            await self._boundaries(sid, stream)
        elif isinstance(msg, StateChanged) and msg.state is SessionState.ENDED:
            self.streams.pop(sid, None)
        elif isinstance(msg, RequestAudio):
            await self._request_audio(inbound, msg)
        elif await self.served.handle(inbound):
            pass
        elif not isinstance(msg, SpeechStart | SpeechEnd | StateChanged):
            await super().on_message(inbound)

    async def on_purged(self) -> None:
        await self.served.drop_all()

    def _forget(self, sid: str) -> None:
        self.streams.pop(sid, None)

    async def _request_audio(self, inbound: Inbound, msg: RequestAudio) -> None:
        key = (inbound.env.src, inbound.env.session)
        try:
            request = self.requests.add(key, msg)
        except RequestRefused as exc:
            if msg.answer is not Answer.NONE:
                await self.reply(inbound, Error(code=exc.code, message=str(exc)))
            else:
                self.log.warning("request chunk refused", extra=kv(error=str(exc)))
            return
        if msg.answer is Answer.NONE:
            return
        final = msg.answer is Answer.FINAL
        if not final and not self._jobs.room_for_partials():
            await self.reply(inbound, Error(code="BUSY", message="finals first: no partial now"))
            return
        pcm = request.pcm if final else request.pcm[-PARTIAL_SPAN_S * MIC.sample_rate * 2 :]
        samples = np.frombuffer(bytes(pcm), dtype="<i2").astype(np.float32) / 32768.0
        kind = "request" if final else "request_partial"
        if final:
            self.requests.finish(key)
        if not self._jobs.put(Job(kind, key[1], 0, samples, inbound=inbound)):
            await self.reply(inbound, Error(code="BUSY", message="the ASR queue is full"))

    async def _boundaries(self, sid: str, stream: Stream) -> None:
        """Apply VAD's events in order; a speech_end only once the audio up to it (and the tail)
        is here. On a loaded machine VAD can run ahead of this actor: a final taken then would
        miss the person's last words (an early final of "Hold on a second," stood for the whole
        "Hold on a second, what time is it now?")."""
        while stream.boundaries:
            msg, came = stream.boundaries[0]
            if (
                isinstance(msg, SpeechEnd)
                and stream.end < msg.stream_sample + self.tail_samples
                and time.monotonic() - came < AUDIO_WAIT_S
            ):
                return
            stream.boundaries.popleft()
            if isinstance(msg, SpeechStart):
                stream.speech_from = max(stream.base, msg.preroll_sample)
                stream.last_partial, stream.partial_text = time.monotonic(), ""
            elif (start := stream.speech_from) is not None:
                stream.speech_from = None
                await self._speech_end(sid, stream, start, msg, came)

    async def _speech_end(
        self, sid: str, stream: Stream, start: int, msg: SpeechEnd, came: float
    ) -> None:
        early, stream.early = stream.early, None
        if early is not None and early.start == start and stream.loud_end <= early.end:
            # Computed in this very pause, with nothing loud since: it is the final.
            if early.result is not None:
                await self._publish(sid, start, early.result, "final", came)
            else:
                early.wanted, stream.early = came, early
            return
        # The audio is taken now: once speech has ended the buffer shrinks to the last seconds.
        audio = stream.audio(start, msg.stream_sample + self.tail_samples)
        self._queue(Job("final", sid, start, audio, queued=came))

    def _queue(self, job: Job) -> None:
        """Finals (early or not) before partials, each kind in order."""
        if not self._jobs.put(job):
            self.log.warning("asr queue full; transcript dropped", extra=kv(session=job.sid))

    def _early(self, sid: str, stream: Stream) -> None:
        """An early final as soon as the person pauses (VAD still waits out its minimum
        silence; if speech ends there, the final is already done). Checked on every frame."""
        start = stream.speech_from
        if start is None or not stream.pausing():
            return
        early = stream.early
        if early is None or early.start != start or early.end < stream.loud_end:
            stream.early = early = Early(start, stream.end)
            self._queue(Job("early", sid, start, stream.audio(start), early))

    async def _partials(self) -> None:
        """Partials every ``partial_interval_s`` while the person speaks (not in pauses)."""
        while True:
            await asyncio.sleep(0.04)
            now = time.monotonic()
            for sid, stream in list(self.streams.items()):
                if now - stream.last_frame > 60:
                    self.streams.pop(sid, None)  # a session that went away without ENDED
                    continue
                if stream.boundaries:  # a speech_end whose audio stopped coming
                    await self._boundaries(sid, stream)
                start = stream.speech_from
                if start is None or stream.pausing():
                    continue
                if (
                    self.partial_interval_s > 0
                    and not stream.partial_busy
                    and now - stream.last_partial >= self.partial_interval_s
                    and self._jobs.room_for_partials()
                ):
                    stream.partial_busy, stream.last_partial = True, now
                    self._queue(Job("partial", sid, start, None))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.engine is not None
        engine = self.engine
        while True:
            job = await self._jobs.get()
            if job.inbound is not None:
                await self._serve_request(job)
                continue
            stream = self.streams.get(job.sid)
            if stream is None:
                continue
            audio = job.audio
            if audio is None:  # a partial
                if stream.speech_from != job.start:
                    stream.partial_busy = False
                    continue  # that speech already ended: its final is queued
                audio = stream.audio(job.start)
            beam = 1 if job.kind == "partial" else None  # partials are greedy: quick
            try:
                result: Recognition = await loop.run_in_executor(
                    self._pool, engine.transcribe, audio, beam
                )
            except Exception:  # one bad recognition must not end every session's
                self.log.exception("recognition failed", extra=kv(session=job.sid))
                result = Recognition("", "", 1.0, -10.0, 0.0, len(audio) / MIC.sample_rate)
            self.rtf.labels(job.kind).observe(result.rtf)
            if job.kind == "partial":
                stream.partial_busy = False
                if result.text and result.text != stream.partial_text:
                    stream.partial_text = result.text
                    await self._publish(job.sid, job.start, result, "partial", job.queued)
            elif job.kind == "final":
                await self._publish(job.sid, job.start, result, "final", job.queued)
            elif (early := job.early) is not None and early is stream.early:
                early.result = result
                if early.wanted is not None:  # speech_end came while it ran
                    stream.early = None
                    await self._publish(job.sid, job.start, result, "final", early.wanted)

    async def _serve_request(self, job: Job) -> None:
        """Run a request's recognition and answer it (``asr.result`` or ``error``)."""
        assert self.engine is not None and job.inbound is not None and job.audio is not None
        engine, audio = self.engine, job.audio
        final = job.kind == "request"
        try:
            if final:
                result, spans = await asyncio.get_running_loop().run_in_executor(
                    self._pool, engine.transcribe_all, audio
                )
            else:  # a partial (of the last PARTIAL_SPAN_S), greedy
                result = await asyncio.get_running_loop().run_in_executor(
                    self._pool, engine.transcribe, audio, 1
                )
                spans = []
        except Exception:
            self.log.exception("recognition failed", extra=kv(request=job.sid))
            await self.reply(job.inbound, Error(code="INTERNAL", message="recognition failed"))
            return
        self.rtf.labels(job.kind).observe(result.rtf)
        self.transcripts.labels(job.kind).inc()
        segments = tuple(
            Segment(start_s=round(a, 3), end_s=round(b, 3), text=t[:4096]) for a, b, t in spans
        )
        await self.reply(
            job.inbound,
            RequestResult(
                text=result.text[:65536],
                final=final,
                language=engine.language,
                duration_s=round(len(audio) / MIC.sample_rate, 3),
                rtf=round(result.rtf, 4),
                segments=segments[:1024],
            ),
        )
        took = round(result.seconds, 3)
        self.log.info(
            "request transcript",
            extra=kv(request=job.sid, final=final, text=result.text[:80], seconds=took),
        )

    async def _publish(
        self, sid: str, start: int, result: Recognition, kind: str, since: float
    ) -> None:
        final = kind == "final"
        if final:
            self.latency.observe(time.monotonic() - since)
            if not result.text:
                self.noise.inc()
        self.transcripts.labels(kind).inc()
        assert self.engine is not None
        await self.publish(
            topics.topic(topics.ASR, sid),
            Transcript(
                text=result.text[:4096],
                final=final,
                start_sample=start,
                end_sample=start + round(result.audio_s * MIC.sample_rate),
                language=self.engine.language,
                rtf=round(result.rtf, 4),
            ),
            session=sid,
        )
        self.log.info(
            "transcript",
            extra=kv(
                session=sid,
                final=final,
                text=result.text[:80],
                raw=result.raw_text[:40],
                seconds=round(result.seconds, 3),
                **({"after_end_s": round(time.monotonic() - since, 3)} if final else {}),
            ),
        )
