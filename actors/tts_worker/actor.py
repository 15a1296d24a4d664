"""The TTS worker actor: speaks utterances in 20 ms 48 kHz frames with its voice models.

Consumes on its inbox: ``tts.start``, ``tts.text``, ``tts.credit``, ``control.pause`` /
``control.resume`` / ``control.stop`` (per session, optionally per utterance),
``tts.model_load`` / ``tts.model_unload`` / ``tts.model_list``.
Emits to whoever started an utterance, on that connection: ``tts.frame`` (exactly 1920 bytes,
contiguous sequence numbers) and one ``tts.end`` (completed / stopped / barged_in / error);
``error`` replies for bad requests (``UNKNOWN_VOICE``, ``EMPTY_TEXT``, ``INVALID_TEXT``,
``TEXT_TOO_LONG``, ``INVALID_OPTIONS``, ``BUSY``, ``UNKNOWN_UTTERANCE``...); a model that
cannot be loaded ends the utterance with ``tts.end`` reason ``error`` saying why.
Registers its voices, languages and resident models, and its load (active streams / max).
Settings: :class:`~actors.tts_worker.settings.WorkerSettings` (``actors.tts_worker``).
"""

from __future__ import annotations

import asyncio
import os
from functools import partial

from actors.tts_worker.metrics import TtsMetrics
from actors.tts_worker.settings import WorkerSettings
from actors.tts_worker.utterance import RenderScheduler, Utterance
from adapters import devices
from adapters.tts.base import SynthesisOptions, TtsEngine, tune_malloc
from adapters.tts.manager import ModelCapacityError, ModelInUse, ModelManager, load_and_warm
from adapters.tts.text import TextError
from adapters.tts.voicepacks import UnknownVoice, discover_voicepacks
from bus.inbound import Inbound
from bus.runtime import Actor
from bus.schema import Message
from bus.schema.control import Pause, Resume, Stop
from bus.schema.system import Error, Pong
from bus.schema.tts import (
    EndReason,
    ModelList,
    ModelLoad,
    ModelStatus,
    ModelUnload,
    TtsCredit,
    TtsEnd,
    TtsQuery,
    TtsStart,
    TtsText,
)
from bus.settings import load_settings
from bus.topology import ActorConfig


class TtsWorker(Actor):
    """Speaks text with its voice models; see the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.settings = load_settings(WorkerSettings, config.settings, kind=config.kind)
        voices = discover_voicepacks(self.settings.voicepacks)
        self.device = devices.resolve(
            self.settings.device, devices.onnxruntime_gpus(), "ONNX Runtime"
        )
        self.models = ModelManager(
            voices,
            default=self.settings.default_voice,
            preload=self.settings.preload,
            max_resident=self.settings.max_resident,
            ttl_s=self.settings.ttl_s,
            min_residency_s=self.settings.min_residency_s,
            max_parallel_loads=self.settings.max_parallel_loads,
            on_change=self._models_changed,
            loader=partial(load_and_warm, device=self.device),
        )
        self.utterances: dict[tuple[str, str], Utterance] = {}
        self.scheduler = RenderScheduler(max(1, self.settings.render_slots))
        self.tts_metrics = TtsMetrics(self.metrics.registry, self._phrase_cache)
        self.capabilities = {
            "voices": sorted(voices),
            "languages": sorted({v.language for v in voices.values()}),
            "voice_languages": {name: v.language for name, v in sorted(voices.items())},
            "default_voice": self.settings.default_voice,
            "max_streams": self.settings.max_streams,
            **self.device.capabilities(),
        }

    def _phrase_cache(self) -> tuple[int, int]:
        """Bytes held and the most allowed, over the resident voices' phrase caches."""
        figures = [r.engine.cached_bytes() for r in list(self.models.resident.values())]
        return sum(held for held, _ in figures), sum(bound for _, bound in figures)

    async def on_start(self) -> None:
        tune_malloc()  # before the first render thread starts
        if self.settings.nice:
            os.nice(self.settings.nice)  # 0..19, checked by WorkerSettings
        await self.models.start()  # a broken default voice stops the worker unregistered
        self.resident_models = tuple(self.models.resident)
        self.spawn(self._evict_loop())

    async def on_stop(self) -> None:
        """Stop every utterance and give each a moment to send its ``tts.end``."""
        for utterance in self.utterances.values():
            utterance.stop(EndReason.STOPPED)
        tasks = [u.task for u in self.utterances.values() if u.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    async def on_message(self, inbound: Inbound) -> None:
        msg = inbound.message
        if isinstance(msg, TtsStart):
            await self._start(inbound, msg)
        elif isinstance(msg, TtsText):
            await self._text(inbound, msg)
        elif isinstance(msg, TtsCredit):
            if (u := self.utterances.get((inbound.env.session, msg.utterance_id))) is not None:
                u.grant(msg.frames)
        elif isinstance(msg, TtsQuery):
            if (inbound.env.session, msg.utterance_id) in self.utterances:
                await self.reply(inbound, Pong())
            else:
                await self.reply(inbound, Error(code="UNKNOWN_UTTERANCE", message=msg.utterance_id))
        elif isinstance(msg, Pause | Resume | Stop):
            await self._control(inbound, msg)
        elif isinstance(msg, ModelLoad | ModelUnload | ModelList):
            await self._models_request(inbound, msg)
        else:
            await super().on_message(inbound)

    # ------------------------------------------------------------------ utterances

    async def _start(self, inbound: Inbound, msg: TtsStart) -> None:
        key = (inbound.env.session, msg.utterance_id)
        if not msg.utterance_id:
            await self.reply(inbound, Error(code="INVALID_MESSAGE", message="empty utterance_id"))
            return
        if key in self.utterances:
            await self.reply(inbound, Error(code="DUPLICATE_UTTERANCE", message=msg.utterance_id))
            return
        if len(self.utterances) >= self.settings.max_streams:
            await self._refuse_utterance(
                inbound,
                msg.utterance_id,
                "BUSY",
                f"{self.settings.max_streams} utterances already speaking",
            )
            return
        voice = msg.voice or self.settings.default_voice
        if voice not in self.models.voices:
            error = str(UnknownVoice(voice, self.models.voices))
            await self._refuse_utterance(inbound, msg.utterance_id, "UNKNOWN_VOICE", error)
            return
        try:
            options = SynthesisOptions.from_dict(msg.options)
        except ValueError as exc:
            await self._refuse_utterance(inbound, msg.utterance_id, "INVALID_OPTIONS", str(exc))
            return

        async def send(message: Message) -> bool:
            if isinstance(message, TtsEnd):  # forgotten, its slot free, before the end is heard
                self._forget(key, utterance)
            return await self.push(inbound, message)

        utterance = Utterance(
            msg.utterance_id,
            options,
            send,
            credit=msg.credit or self.settings.default_credit,
            max_credit=self.settings.max_credit,
            scheduler=self.scheduler,
            max_wait_s=self.settings.max_stream_wait_s,
        )
        try:
            utterance.feed(msg.text, msg.final)
        except TextError as exc:
            await self._refuse_utterance(inbound, msg.utterance_id, exc.code, str(exc))
            return
        self.utterances[key] = utterance
        # Loading a model takes seconds: it happens in the utterance's own task, so this actor
        # keeps serving every other session (and this one's text and control) meanwhile.
        engine = asyncio.ensure_future(self.models.acquire(voice))
        task = utterance.start(engine)
        task.add_done_callback(lambda t: self._finished(key, utterance, voice, engine, t))
        await self.update_registration(load=len(self.utterances) / self.settings.max_streams)

    def _forget(self, key: tuple[str, str], utterance: Utterance) -> None:
        if self.utterances.get(key) is utterance:  # not a later one that took its id
            del self.utterances[key]

    def _finished(
        self,
        key: tuple[str, str],
        utterance: Utterance,
        voice: str,
        engine: asyncio.Future[TtsEngine],
        task: asyncio.Task[EndReason],
    ) -> None:
        self._forget(key, utterance)
        if not task.cancelled() and task.exception() is None:
            self.tts_metrics.ended(utterance, task.result())

        def release(acquired: asyncio.Future[TtsEngine]) -> None:
            if not acquired.cancelled() and acquired.exception() is None:
                self.models.release(voice)

        engine.add_done_callback(release)  # now, or when a load still running completes
        self.spawn(self.update_registration(load=len(self.utterances) / self.settings.max_streams))

    async def _text(self, inbound: Inbound, msg: TtsText) -> None:
        utterance = self.utterances.get((inbound.env.session, msg.utterance_id))
        if utterance is None:
            await self.reply(inbound, Error(code="UNKNOWN_UTTERANCE", message=msg.utterance_id))
            return
        try:
            utterance.feed(msg.text, msg.final)
        except TextError as exc:
            await self.reply(inbound, Error(code=exc.code, message=str(exc)))
            utterance.stop(EndReason.ERROR)

    async def _control(self, inbound: Inbound, msg: Pause | Resume | Stop) -> None:
        session = inbound.env.session
        targets = [
            u
            for (s, uid), u in self.utterances.items()
            if s == session and (not msg.utterance_id or uid == msg.utterance_id)
        ]
        if not targets:
            detail = f"session {session!r} utterance {msg.utterance_id or '*'!r}"
            await self.reply(inbound, Error(code="UNKNOWN_UTTERANCE", message=detail))
            return
        for utterance in targets:
            if isinstance(msg, Pause):
                utterance.pause()
            elif isinstance(msg, Resume):
                utterance.resume()
            else:
                barged = msg.reason is EndReason.BARGED_IN
                utterance.stop(EndReason.BARGED_IN if barged else EndReason.STOPPED)

    async def _refuse_utterance(
        self, inbound: Inbound, utterance_id: str, code: str, message: str
    ) -> None:
        """An error reply, then the ``tts.end`` a consumer's state machine waits for."""
        await self.reply(inbound, Error(code=code, message=message[:1000]))
        end = TtsEnd(utterance_id=utterance_id, reason=EndReason.ERROR, frames=0, error=code)
        await self.push(inbound, end)

    # ------------------------------------------------------------------ models

    async def _models_request(
        self, inbound: Inbound, msg: ModelLoad | ModelUnload | ModelList
    ) -> None:
        try:
            if isinstance(msg, ModelLoad):
                await self.models.load(msg.model_id)
            elif isinstance(msg, ModelUnload):
                self.models.unload(msg.model_id)
        except UnknownVoice as exc:
            await self.reply(inbound, Error(code="UNKNOWN_VOICE", message=str(exc)))
            return
        except (ModelInUse, ModelCapacityError) as exc:
            await self.reply(inbound, Error(code="MODEL_IN_USE", message=str(exc)))
            return
        except (OSError, ValueError) as exc:
            await self.reply(inbound, Error(code="MODEL_LOAD_FAILED", message=str(exc)[:1000]))
            return
        details = {s["model_id"]: s for s in self.models.status()}
        await self.reply(
            inbound,
            ModelStatus(
                resident=tuple(self.models.resident),
                available=tuple(sorted(self.models.voices)),
                default=self.models.default,
                details=details,
            ),
        )

    def _models_changed(self) -> None:
        if self.registered.is_set():
            self.spawn(self.update_registration(resident_models=tuple(self.models.resident)))
        else:
            self.resident_models = tuple(self.models.resident)

    async def _evict_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(5.0, self.settings.ttl_s / 10)))
            self.models.evict_expired()
