"""The gateway actor: the outside world's door. WebSocket clients (the protocol in DESIGN.md)
and HTTP on one port (aiohttp), bot audio paced out in real time.

Consumes from clients: the WebSocket protocol (``session_config``, ``text``, ``control``,
``end``, binary microphone audio) and HTTP requests. On the bus it consumes ``session.state``,
``playout.speak`` / ``playout.text``, ``control.*`` (``control.barge_in`` holds playout),
``session.event``, ``session.closed`` and ``error`` from the supervisor; ``tts.frame`` /
``tts.end`` / ``error`` from TTS workers; and, on the event bus, ``vad.*`` and
``asr.transcript`` for its clients.
Emits ``session.opened`` / ``session.config`` / ``session.text`` / ``control.*`` /
``playout.event`` / ``session.closed`` to the supervisor; ``tts.start`` / ``tts.text`` /
``tts.credit`` to workers (audio flows worker → gateway directly, against the credit the
gateway's playout grants as it plays); the microphone as 16 kHz 20 ms ``audio.frame`` on
``audio.in.<session>`` (:mod:`transports.mic` resamples and re-frames it).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Histogram

from bus import topics
from bus.errors import BusError
from bus.inbound import Inbound, Via
from bus.logs import kv
from bus.runtime import Actor
from bus.schema import Message
from bus.schema.asr import Transcript
from bus.schema.audio import AudioFrame
from bus.schema.control import BargeIn, Pause, Resume, Stop
from bus.schema.session import (
    PlayoutEvent,
    PlayoutSpeak,
    PlayoutText,
    SessionClosed,
    SessionConfig,
    SessionEvent,
    SessionOpened,
    SessionText,
    StateChanged,
)
from bus.schema.system import Error
from bus.schema.tts import TtsCredit, TtsEnd, TtsFrame, TtsQuery, TtsStart, TtsText
from bus.schema.vad import SpeechEnd, SpeechStart
from bus.topology import ActorConfig
from transports.http_api import HttpApi
from transports.playout import Playout
from transports.ws_protocol import ClientError, parse_client_message
from transports.ws_session import ClientSession

LEAD_FRAMES = 10
"""Credit a worker starts an utterance with: 200 ms ahead of playout."""
STALL_S = 1.0
"""No frame for this long while an utterance plays: ask the worker if it is alive."""
MAX_AUDIO_AHEAD_S = 30.0
"""Microphone audio may run this far ahead of real time (a file sent fast); more is refused."""


@dataclass(slots=True)
class Speaking:
    """The utterance a session's worker is streaming."""

    utterance_id: str
    worker_id: str
    text: str
    answers_sample: int = -1
    """The person's end of speech this reply answers (turn latency), -1 if none."""
    last_frame: float = field(default_factory=time.monotonic)
    ended: bool = False


class Gateway(Actor):
    """Terminates client connections; see the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.http_host = str(config.settings.get("http_host", "127.0.0.1"))
        self.http_port = int(config.settings.get("http_port", 8080))
        self.max_text_chars = int(config.settings.get("max_text_chars", 2000))
        self.clients: dict[str, ClientSession] = {}
        self.speaking: dict[str, Speaking] = {}
        self.http = HttpApi(self)
        self._runner: web.AppRunner | None = None
        self.subscribe(topics.VAD)
        self.subscribe(topics.ASR)
        registry = self.metrics.registry
        self.barge_in_latency = Histogram(
            "duplex_barge_in_seconds",
            "The person's first speech sample received -> bot playout held",
            buckets=(0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 1.0),
            registry=registry,
        )
        self.turn_latency = Histogram(
            "duplex_turn_latency_seconds",
            "End of the person's speech received -> first reply frame sent",
            buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 5.0),
            registry=registry,
        )

    async def on_start(self) -> None:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_get("/ws", self._websocket)
        self.http.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.http_host, self.http_port)
        await site.start()
        port = self._runner.addresses[0][1] if self._runner.addresses else self.http_port
        self.http_port = int(port)
        self.endpoints["ws"] = f"ws://{self.http_host}:{self.http_port}/ws"
        self.spawn(self._watchdog())
        self.log.info("gateway listening", extra=kv(url=self.endpoints["ws"]))

    async def on_stop(self) -> None:
        for client in list(self.clients.values()):
            await client.end("shutdown")
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ clients

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1024 * 1024, heartbeat=30)
        await ws.prepare(request)
        supervisors = self.registry.alive("supervisor")
        client = ClientSession(os.urandom(8).hex(), ws, self)
        client.playout = Playout(client.send_frame, self._utterance_event(client))
        self.clients[client.session_id] = client
        await client.send_json(client.session_start())
        player = asyncio.get_running_loop().create_task(client.playout.run())
        if not supervisors:
            await client.error("NO_WORKER", "no session supervisor is running")
        else:
            client.supervisor = supervisors[0].actor_id
            await self._to_supervisor(client, SessionOpened(transport="websocket", gateway=self.id))
        try:
            async for frame in ws:
                await self._client_message(client, frame)
        finally:
            player.cancel()
            self.clients.pop(client.session_id, None)
            await self._stop_speaking(client.session_id)
            await self._to_supervisor(client, SessionClosed(reason="client_closed"))
        return ws

    async def _client_message(self, client: ClientSession, frame: Any) -> None:
        if not client.rate.allow(b"ws"):
            await client.error("RATE_LIMITED", "too many messages; slow down")
            return
        try:
            command = parse_client_message(frame, self.max_text_chars)
        except ClientError as exc:
            await client.error(exc.code, str(exc))
            return
        kind = command["type"]
        if kind == "session_config":
            client.configure(command)
            config = SessionConfig(voice=client.voice, dialogue=client.dialogue)
            await self._to_supervisor(client, config)
        elif kind == "text":
            await self._to_supervisor(client, SessionText(text=command["text"], voice=client.voice))
        elif kind == "control":
            await self._client_control(client, command["command"])
        elif kind == "end":
            await client.end("client_end")
        elif kind == "audio_in":
            await self._microphone(client, command["pcm"])

    async def _microphone(self, client: ClientSession, pcm: bytes) -> None:
        """Re-frame the client's audio to 16 kHz 20 ms and publish it for VAD and ASR."""
        now = time.monotonic()
        if client.audio_started is None:
            client.audio_started = now
        ahead = client.mic.stream_ms / 1000 - (now - client.audio_started)
        if ahead > MAX_AUDIO_AHEAD_S:
            await client.error("RATE_LIMITED", "microphone audio is far ahead of real time")
            return
        topic = topics.topic(topics.AUDIO_IN, client.session_id)
        frames = client.mic.push(pcm)
        if frames:
            client.arrivals.append((client.mic.stream_sample, now))
        for frame in frames:
            audio = AudioFrame(
                sample_rate=16_000,
                sequence=frame.sequence,
                stream_sample=frame.stream_sample,
                pcm=frame.pcm,
            )
            await self.publish(topic, audio, session=client.session_id)

    async def _client_control(self, client: ClientSession, command: str) -> None:
        # Playout acts at once (the next frame); the supervisor then updates the session.
        speaking = self.speaking.get(client.session_id)
        if command == "PAUSE":
            client.playout.pause()
            await self._to_supervisor(client, Pause())
        elif command == "RESUME":
            client.playout.resume()
            await self._to_supervisor(client, Resume())
        else:
            if speaking is not None:
                client.playout.flush(speaking.utterance_id, reason="stopped")
            await self._to_supervisor(client, Stop())

    def _utterance_event(self, client: ClientSession) -> Any:
        async def on_utterance(event: str, utterance_id: str, played: int, words: int) -> None:
            speaking = self.speaking.get(client.session_id)
            if event == "start":
                text = speaking.text if speaking and speaking.utterance_id == utterance_id else ""
                if speaking is not None and speaking.answers_sample >= 0:
                    await self._timed(client, "turn", speaking.answers_sample)
                await client.send_json(
                    {"type": "tts_start", "utterance_id": utterance_id, "text": text}
                )
                await self._to_supervisor(
                    client, PlayoutEvent(utterance_id=utterance_id, event="started")
                )
                return
            reason = event.removeprefix("end:")
            await client.send_json(
                {
                    "type": "tts_end",
                    "utterance_id": utterance_id,
                    "reason": reason,
                    "frames": played,
                }
            )
            heard = ""
            if speaking is not None and speaking.utterance_id == utterance_id:
                self.speaking.pop(client.session_id, None)
                if not speaking.ended:  # stopped here before the worker finished
                    self.send_or_warn(
                        speaking.worker_id, Stop(utterance_id=utterance_id), client.session_id
                    )
                complete = reason == "completed"
                heard = speaking.text if complete else " ".join(speaking.text.split()[:words])
            ended = PlayoutEvent(
                utterance_id=utterance_id,
                event="ended",
                reason=reason,
                frames=played,
                heard=heard[:8192],
            )
            await self._to_supervisor(client, ended)

        return on_utterance

    # ------------------------------------------------------------------ bus

    async def on_message(self, inbound: Inbound) -> None:
        msg, sid = inbound.message, inbound.env.session
        if await self.http.on_message(inbound):
            return
        client = self.clients.get(sid)
        if client is None:
            return  # the session is gone; late messages are dropped
        if isinstance(msg, TtsFrame):
            speaking = self.speaking.get(sid)
            if speaking is not None and speaking.utterance_id == msg.utterance_id:
                speaking.last_frame = time.monotonic()
                client.playout.add_frame(msg.utterance_id, msg.pcm, msg.words)
        elif isinstance(msg, TtsEnd):
            speaking = self.speaking.get(sid)
            if speaking is not None and speaking.utterance_id == msg.utterance_id:
                speaking.ended = True
                client.playout.end(msg.utterance_id, msg.reason.value)
        elif isinstance(msg, SpeechStart | SpeechEnd):
            event = "speech_start" if isinstance(msg, SpeechStart) else "speech_end"
            stream_ms = round(1000 * msg.stream_sample / msg.sample_rate)
            await client.send_json({"type": "vad", "event": event, "stream_ms": stream_ms})
        elif isinstance(msg, Transcript):
            if msg.final and msg.rtf:
                client.stats.asr_rtf = msg.rtf
            if msg.text:
                await client.send_json({"type": "transcript", "text": msg.text, "final": msg.final})
        elif isinstance(msg, PlayoutSpeak):
            await self._speak(client, msg)
        elif isinstance(msg, PlayoutText):
            self._more_text(client, msg)
        elif isinstance(msg, StateChanged):
            await client.send_json({"type": "state", "state": msg.state})
        elif isinstance(msg, BargeIn):
            client.playout.hold()  # silent from the next frame; unplayed lead taken back
            await client.send_json({"type": "barge_in", "utterance_id": msg.utterance_id})
            client.stats.barge_ins += 1
            client.stats.held = True
            await self._timed(client, "barge_in", msg.stream_sample)
        elif isinstance(msg, Pause):
            client.playout.pause()
        elif isinstance(msg, Resume):
            client.playout.resume()
            if client.stats.held:
                client.stats.held = False
                client.stats.false_interruptions += 1
                await client.send_json(client.stats.message())
        elif isinstance(msg, Stop):
            client.stats.held = False
            speaking = self.speaking.get(sid)
            if speaking is not None and msg.utterance_id in ("", speaking.utterance_id):
                client.playout.end(speaking.utterance_id, msg.reason)  # even before its frames
                client.playout.flush(speaking.utterance_id, reason=msg.reason)
        elif isinstance(msg, SessionEvent):
            await client.send_json({**msg.fields, "type": msg.kind})
        elif isinstance(msg, SessionClosed):
            await client.end(msg.reason)
        elif isinstance(msg, Error):
            code = msg.code if inbound.via is not Via.PEER else "SYNTHESIS_FAILED"
            await client.error(
                code if code != "UNSUPPORTED_TYPE" else "SYNTHESIS_FAILED", msg.message
            )

    async def _speak(self, client: ClientSession, msg: PlayoutSpeak) -> None:
        await self._stop_speaking(client.session_id)
        self.speaking[client.session_id] = Speaking(
            msg.utterance_id, msg.worker_id, msg.text.strip(), answers_sample=msg.answers_sample
        )
        start = TtsStart(
            utterance_id=msg.utterance_id,
            voice=msg.voice,
            text=msg.text,
            final=msg.final,
            credit=LEAD_FRAMES,
        )
        if not self.send_or_warn(msg.worker_id, start, client.session_id):
            self._fail(client, msg.utterance_id)

    async def _timed(self, client: ClientSession, what: str, stream_sample: int) -> None:
        """Latency from the client's audio at ``stream_sample`` to now, per session and in
        Prometheus: ``barge_in`` (playout held) or ``turn`` (first reply frame)."""
        arrived = client.arrived(stream_sample)
        if arrived is None:
            return
        seconds = time.monotonic() - arrived
        if what == "barge_in":
            self.barge_in_latency.observe(seconds)
            client.stats.barge_in_ms = round(1000 * seconds, 1)
        else:
            self.turn_latency.observe(seconds)
            client.stats.turn_latency_ms = round(1000 * seconds, 1)
        await client.send_json(client.stats.message())

    def _more_text(self, client: ClientSession, msg: PlayoutText) -> None:
        """A streamed reply's next sentence(s), for the utterance being spoken."""
        speaking = self.speaking.get(client.session_id)
        if speaking is None or speaking.utterance_id != msg.utterance_id or speaking.ended:
            return
        speaking.text = f"{speaking.text} {msg.text}".strip()
        more = TtsText(utterance_id=msg.utterance_id, text=msg.text, final=msg.final)
        self.send_or_warn(speaking.worker_id, more, client.session_id)

    def credit(self, client: ClientSession, utterance_id: str, frames: int) -> None:
        """Playout sent ``frames`` frames: the worker may send as many more."""
        speaking = self.speaking.get(client.session_id)
        if speaking is not None and speaking.utterance_id == utterance_id and not speaking.ended:
            self.send_or_warn(
                speaking.worker_id,
                TtsCredit(utterance_id=utterance_id, frames=frames),
                client.session_id,
            )

    async def _stop_speaking(self, sid: str) -> None:
        speaking = self.speaking.pop(sid, None)
        if speaking is not None and not speaking.ended:
            self.send_or_warn(speaking.worker_id, Stop(utterance_id=speaking.utterance_id), sid)

    def _fail(self, client: ClientSession, utterance_id: str) -> None:
        speaking = self.speaking.get(client.session_id)
        if speaking is not None and speaking.utterance_id == utterance_id:
            speaking.ended = True
        client.playout.end(utterance_id, "error")

    async def _watchdog(self) -> None:
        """A worker that died mid-utterance, or dropped it: the utterance ends with ``error``
        within seconds, so the client is never left waiting for its ``tts_end``."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for sid, speaking in list(self.speaking.items()):
                client = self.clients.get(sid)
                if client is None or speaking.ended or now - speaking.last_frame < STALL_S:
                    continue
                if client.playout.paused:
                    speaking.last_frame = now
                    continue
                # Not just "is the worker alive": a live worker may have dropped this utterance
                # (say its frames found no way back), and pinging it would wait forever.
                query = TtsQuery(utterance_id=speaking.utterance_id)
                try:
                    await self.request(speaking.worker_id, query, session=sid, timeout=0.5)
                    speaking.last_frame = time.monotonic()
                    continue
                except BusError as exc:
                    why = str(exc)
                self.log.warning(
                    "utterance lost mid-way",
                    extra=kv(session=sid, worker=speaking.worker_id, error=why),
                )
                self._fail(client, speaking.utterance_id)

    async def _to_supervisor(self, client: ClientSession, msg: Message) -> None:
        if client.supervisor:
            self.send_or_warn(client.supervisor, msg, client.session_id)
