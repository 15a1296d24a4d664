"""The gateway's client-session core against the contract in docs/architecture.md, in one
process: a real broker, gateway, router and mock-voice TTS worker on real sockets, a real
WebSocket client, and a scripted stand-in for the supervisor (it says exactly what the contract
lets a supervisor say, and records what the gateway tells it). VAD is a stand-in publishing
``vad.speech_start`` on the session's topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
import websockets

from actors.gateway import Gateway
from actors.router import Router
from actors.tts_worker import TtsWorker
from bus import topics
from bus.broker import Broker
from bus.envelope import new_id
from bus.runtime import Actor, Inbound
from bus.schema import Message
from bus.schema.control import BargeInOutcome, Pause, Resume, Stop
from bus.schema.session import (
    PlayoutEvent,
    PlayoutEventKind,
    PlayoutSpeak,
    SessionOpened,
    SessionText,
)
from bus.schema.tts import EndReason
from bus.schema.vad import SpeechStart
from tests.support import free_port
from tests.test_runtime import all_up, configs, running, until

pytestmark = pytest.mark.timeout(60)

LONG = "This mock utterance goes on for a good while so that there is time to talk over it. " * 2


class Supervisor(Actor):
    """Speaks every text it is sent; records what the gateway tells it."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.got: list[tuple[str, Message]] = []
        self.subscribe(topics.VAD)

    async def on_message(self, inbound: Inbound) -> None:
        msg, sid = inbound.message, inbound.env.session
        if isinstance(msg, SpeechStart):
            return
        self.got.append((sid, msg))
        if isinstance(msg, SessionText):
            speak = PlayoutSpeak(utterance_id=new_id()[:12], text=msg.text, voice=msg.voice)
            self.send_or_warn(inbound.env.src, speak, sid)

    def tell_gateway(self, msg: Message, sid: str) -> None:
        self.send_or_warn(self.registry.alive("gateway")[0].actor_id, msg, sid)

    def playout(self, kind: PlayoutEventKind) -> list[PlayoutEvent]:
        return [m for _, m in self.got if isinstance(m, PlayoutEvent) and m.event is kind]

    def sent(self, cls: type[Message]) -> list[Message]:
        return [m for _, m in self.got if isinstance(m, cls)]


class Client:
    """A WebSocket client that timestamps everything it receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.got: list[tuple[float, Any]] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in self.ws:
                item = message if isinstance(message, bytes) else json.loads(message)
                self.got.append((time.monotonic(), item))

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.got if isinstance(m, dict) and m.get("type") == kind]

    def frames_after(self, t: float) -> int:
        return sum(1 for at, m in self.got if isinstance(m, bytes) and at > t)

    def frames(self) -> int:
        return sum(1 for _, m in self.got if isinstance(m, bytes))


def run_stack(body: Any) -> None:
    broker_cfg, actor = configs()
    http_port = free_port()
    gateway = Gateway(actor("gateway", settings={"http_port": http_port}))
    router = Router(actor("router"))
    worker = TtsWorker(actor("tts_worker", settings={"default_voice": "mock-440hz"}))
    supervisor = Supervisor(actor("supervisor"))
    vad = Actor(actor("vad"))

    async def main() -> None:
        async with running(Broker(broker_cfg), worker, router, supervisor, vad, gateway):
            await all_up(gateway, router, worker, supervisor, vad)
            await asyncio.sleep(0.3)  # subscriptions reach the event proxy
            async with websockets.connect(f"ws://127.0.0.1:{http_port}/ws") as ws:
                client = Client(ws)
                await until(lambda: client.events("session_start"), 5, "session_start")
                sid = client.events("session_start")[0]["session_id"]
                await until(lambda: supervisor.sent(SessionOpened), 5, "session.opened")
                await body(client, sid, supervisor, vad)
                client.task.cancel()

    asyncio.run(asyncio.wait_for(main(), 50))


async def speak_and_wait_for_audio(client: Client, supervisor: Supervisor) -> str:
    await client.ws.send(json.dumps({"type": "text", "text": LONG}))
    await until(lambda: client.frames() >= 20, 10, "audio")
    return client.events("tts_start")[0]["utterance_id"]


async def speech_start(vad: Actor, sid: str) -> float:
    at = time.monotonic()
    await vad.publish(topics.topic(topics.VAD, sid), SpeechStart(stream_sample=0), session=sid)
    return at


def test_speech_over_the_bot_holds_playout_and_no_words_resumes_it_to_the_end() -> None:
    async def body(client: Client, sid: str, supervisor: Supervisor, vad: Actor) -> None:
        uid = await speak_and_wait_for_audio(client, supervisor)
        await speech_start(vad, sid)
        await until(lambda: client.events("barge_in"), 5, "barge_in")
        await until(lambda: supervisor.playout(PlayoutEventKind.HELD), 5, "held reported")
        held_at = client.got[-1][0]
        await asyncio.sleep(0.4)
        assert client.frames_after(held_at + 0.05) == 0  # silent while held
        assert not client.events("tts_end")
        supervisor.tell_gateway(BargeInOutcome(utterance_id=uid, words=False), sid)
        await until(lambda: client.events("tts_end"), 30, "tts_end")
        end = client.events("tts_end")[0]
        assert end["reason"] == "completed"
        assert client.events("metrics")[-1]["false_interruptions"] == 1
        await until(lambda: supervisor.playout(PlayoutEventKind.ENDED), 5, "ended reported")
        ended = supervisor.playout(PlayoutEventKind.ENDED)[0]
        assert ended.reason is EndReason.COMPLETED and ended.heard == LONG.strip()
        assert ended.frames == end["frames"]

    run_stack(body)


def test_words_over_the_bot_end_its_utterance_barged_in() -> None:
    async def body(client: Client, sid: str, supervisor: Supervisor, vad: Actor) -> None:
        uid = await speak_and_wait_for_audio(client, supervisor)
        await speech_start(vad, sid)
        await until(lambda: supervisor.playout(PlayoutEventKind.HELD), 5, "held reported")
        supervisor.tell_gateway(BargeInOutcome(utterance_id=uid, words=True), sid)
        await until(lambda: client.events("tts_end"), 5, "tts_end")
        end = client.events("tts_end")[0]
        assert end["reason"] == "barged_in"
        await until(lambda: supervisor.playout(PlayoutEventKind.ENDED), 5, "ended reported")
        ended = supervisor.playout(PlayoutEventKind.ENDED)[0]
        assert ended.reason is EndReason.BARGED_IN
        assert 0 < len(ended.heard.split()) < len(LONG.split())  # what was heard, not all
        stopped_at = time.monotonic()
        await asyncio.sleep(0.5)
        assert client.frames_after(stopped_at) == 0

    run_stack(body)


def test_client_controls_act_at_the_gateway_and_the_supervisor_only_hears_of_them() -> None:
    async def body(client: Client, sid: str, supervisor: Supervisor, vad: Actor) -> None:
        await speak_and_wait_for_audio(client, supervisor)
        await client.ws.send(json.dumps({"type": "control", "command": "PAUSE"}))
        await until(lambda: supervisor.sent(Pause), 5, "pause reported")
        paused_at = time.monotonic()
        await asyncio.sleep(0.5)
        assert client.frames_after(paused_at + 0.05) == 0
        await speech_start(vad, sid)  # a client pause is not a barge-in
        await asyncio.sleep(0.3)
        assert not client.events("barge_in")
        await client.ws.send(json.dumps({"type": "control", "command": "RESUME"}))
        await until(lambda: client.frames_after(paused_at + 0.8) > 5, 5, "audio again")
        await client.ws.send(json.dumps({"type": "control", "command": "STOP"}))
        await until(lambda: client.events("tts_end"), 5, "tts_end")
        assert client.events("tts_end")[0]["reason"] == "stopped"
        assert supervisor.sent(Resume) and supervisor.sent(Stop)

    run_stack(body)


def test_a_pause_is_of_one_utterance_and_a_stop_always_reaches_the_supervisor() -> None:
    async def body(client: Client, sid: str, supervisor: Supervisor, vad: Actor) -> None:
        await client.ws.send(json.dumps({"type": "control", "command": "PAUSE"}))
        await client.ws.send(json.dumps({"type": "control", "command": "STOP"}))
        # Nothing plays: the pause is ignored, the stop still drops a reply in the making.
        await until(lambda: supervisor.sent(Stop), 5, "stop reported")
        assert not supervisor.sent(Pause)
        await speak_and_wait_for_audio(client, supervisor)
        await client.ws.send(json.dumps({"type": "control", "command": "PAUSE"}))
        await client.ws.send(json.dumps({"type": "control", "command": "STOP"}))
        await until(lambda: client.events("tts_end"), 5, "tts_end")
        # The next utterance plays, and the person can still talk over it.
        await client.ws.send(json.dumps({"type": "text", "text": LONG}))
        await until(lambda: len(client.events("tts_start")) == 2, 10, "the next utterance")
        await speech_start(vad, sid)
        await until(lambda: client.events("barge_in"), 5, "barge_in")
        # A pause during the hold is the hold's: the outcome resumes playout.
        await client.ws.send(json.dumps({"type": "control", "command": "PAUSE"}))
        await until(lambda: supervisor.playout(PlayoutEventKind.HELD), 5, "held reported")
        uid = client.events("tts_start")[1]["utterance_id"]
        supervisor.tell_gateway(BargeInOutcome(utterance_id=uid, words=False), sid)
        resumed = time.monotonic()
        await until(lambda: client.frames_after(resumed) > 10, 5, "audio after the outcome")

    run_stack(body)


def test_a_pause_right_after_a_stop_does_not_keep_the_stopped_utterance_from_ending() -> None:
    async def body(client: Client, sid: str, supervisor: Supervisor, vad: Actor) -> None:
        await speak_and_wait_for_audio(client, supervisor)
        for command in ("STOP", "PAUSE"):  # one read: handled before playout runs again
            await client.ws.send(json.dumps({"type": "control", "command": command}))
        await until(lambda: client.events("tts_end"), 5, "tts_end of the stopped utterance")
        assert client.events("tts_end")[0]["reason"] == "stopped"
        await until(lambda: supervisor.playout(PlayoutEventKind.ENDED), 5, "ended reported")
        await client.ws.send(json.dumps({"type": "text", "text": "And now the next one."}))
        await until(lambda: len(client.events("tts_end")) == 2, 10, "the next utterance")
        assert client.events("tts_end")[1]["reason"] == "completed"

    run_stack(body)
