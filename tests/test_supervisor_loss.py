"""A session outlives its supervisor (issue: no client is ever left hanging). In one process: a
real broker, gateway, router and mock-voice TTS worker on real sockets, a real WebSocket
client, and scripted stand-ins for supervisors that leave the registry mid-session. The gateway
moves the session to another supervisor with the texts not yet begun, or ends it
``supervisor_lost`` with an error within the bound; an utterance playing plays out."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets

from actors.gateway import Gateway
from actors.router import Router
from actors.tts_worker import TtsWorker
from bus.broker import Broker
from bus.envelope import new_id
from bus.runtime import Inbound
from bus.schema.session import PlayoutSpeak, SessionConfig, SessionOpened, SessionText
from tests.support import free_port
from tests.test_client_session import LONG, Client, Supervisor
from tests.test_runtime import all_up, configs, running, until
from transports.session import ADOPT_WAIT_S

pytestmark = pytest.mark.timeout(60)


class Scripted(Supervisor):
    """Speaks the first ``speaks`` texts it is sent (all when None) and records every one."""

    def __init__(self, config: Any, speaks: int | None = None) -> None:
        super().__init__(config)
        self.speaks = speaks

    async def on_message(self, inbound: Inbound) -> None:
        msg, sid = inbound.message, inbound.env.session
        if isinstance(msg, SessionText) and self.speaks is not None:
            self.got.append((sid, msg))
            if self.speaks > 0:
                self.speaks -= 1
                speak = PlayoutSpeak(utterance_id=new_id()[:12], text=msg.text, voice=msg.voice)
                self.send_or_warn(inbound.env.src, speak, sid)
            return
        await super().on_message(inbound)

    def texts(self) -> list[str]:
        return [m.text for m in self.sent(SessionText) if isinstance(m, SessionText)]


Start = Callable[..., Awaitable[Scripted]]
"""``start(speaks, kind="supervisor")``: one more supervisor (speaking that many texts), or a
stand-in of another kind, once the gateway sees it."""


Body = Callable[[Client, Gateway, Start, Scripted | None], Awaitable[None]]


def run(body: Body, first: bool = True) -> None:
    """Broker, gateway, router and worker up, with ``first`` a supervisor that speaks nothing
    (body may change that) and has the session, else none; then a client connected."""
    broker_cfg, actor = configs()
    http_port = free_port()
    gateway = Gateway(actor("gateway", settings={"http_port": http_port}))
    router = Router(actor("router"))
    worker = TtsWorker(actor("tts_worker", settings={"default_voice": "mock-440hz"}))
    started: list[tuple[Scripted, asyncio.Task[None]]] = []

    async def start(speaks: int | None = None, kind: str = "supervisor") -> Scripted:
        s = Scripted(actor(kind), speaks)  # (as another kind: an actor that only registers)
        started.append((s, asyncio.get_running_loop().create_task(s.run())))
        await until(lambda: gateway.registry.get(s.id) is not None, 10, "supervisor seen")
        return s

    async def main() -> None:
        async with running(Broker(broker_cfg), worker, router, gateway):
            await all_up(gateway, router, worker, kinds=("tts_worker",))
            one = await start(0) if first else None
            async with websockets.connect(f"ws://127.0.0.1:{http_port}/ws") as ws:
                client = Client(ws)
                await until(lambda: client.events("session_start"), 5, "session_start")
                try:
                    await body(client, gateway, start, one)
                finally:
                    client.task.cancel()
                    for s, task in started:
                        s.stop()
                        await asyncio.wait_for(task, 10)

    asyncio.run(asyncio.wait_for(main(), 50))


async def text(client: Client, words: str) -> None:
    await client.ws.send(json.dumps({"type": "text", "text": words}))


def test_a_session_moves_to_another_supervisor_with_its_settings_and_texts_not_begun() -> None:
    async def body(client: Client, gateway: Gateway, start: Start, first: Any) -> None:
        # `first` takes the session's texts and never speaks them.
        await until(lambda: first.sent(SessionOpened), 5, "session.opened")
        await client.ws.send(json.dumps({"type": "session_config", "voice": "mock-440hz"}))
        await text(client, "Nobody speaks this one.")
        await until(lambda: first.texts(), 5, "the text at the first supervisor")
        second = await start(None)
        left = time.monotonic()
        first.stop()  # it leaves the registry
        await until(lambda: second.sent(SessionOpened), 3, "the session adopted")
        assert time.monotonic() - left < 3
        await until(lambda: client.events("tts_end"), 10, "the text spoken after all")
        assert second.texts() == ["Nobody speaks this one."]
        (config,) = second.sent(SessionConfig)
        assert isinstance(config, SessionConfig) and config.voice == "mock-440hz"
        assert client.events("tts_start")[0]["text"] == "Nobody speaks this one."
        assert client.events("tts_end")[0]["reason"] == "completed"
        assert not client.events("error") and not client.events("session_end")
        await text(client, "And the next one.")
        await until(lambda: len(client.events("tts_end")) == 2, 10, "the next text")
        assert second.texts()[-1] == "And the next one."

    run(body)


def test_with_no_supervisor_left_the_client_hears_supervisor_lost_and_session_end() -> None:
    async def body(client: Client, gateway: Gateway, start: Start, only: Any) -> None:
        await until(lambda: only.sent(SessionOpened), 5, "session.opened")
        await text(client, "Nobody will ever speak this.")
        await until(lambda: only.texts(), 5, "the text at the supervisor")
        left = time.monotonic()
        only.stop()
        await until(lambda: client.events("session_end"), ADOPT_WAIT_S + 2, "session_end")
        assert time.monotonic() - left < 3
        assert [e["code"] for e in client.events("error")] == ["SUPERVISOR_LOST"]
        assert client.events("session_end")[0]["reason"] == "supervisor_lost"
        await asyncio.wait_for(client.ws.wait_closed(), 5)  # and the server closed it

    run(body)


def test_an_utterance_playing_plays_out_and_texts_sent_meanwhile_follow_it() -> None:
    async def body(client: Client, gateway: Gateway, start: Start, first: Any) -> None:
        first.speaks = 1  # it speaks the long text only
        await until(lambda: first.sent(SessionOpened), 5, "session.opened")
        await text(client, LONG)
        await until(lambda: client.frames() >= 20, 10, "audio")
        second = await start(None)
        first.stop()
        await until(lambda: second.sent(SessionOpened), 3, "the session adopted")
        await text(client, "After the long one.")
        await asyncio.sleep(0.5)
        assert second.texts() == []  # not while the orphan plays: it would cut it
        await until(lambda: len(client.events("tts_end")) == 2, 20, "both spoken")
        first_end, second_end = client.events("tts_end")
        assert first_end["reason"] == "completed" and second_end["reason"] == "completed"
        assert second.texts() == ["After the long one."]

    run(body)


def test_a_session_that_began_with_no_supervisor_is_taken_by_the_first_to_come() -> None:
    async def body(client: Client, gateway: Gateway, start: Start, none: Any) -> None:
        assert none is None
        await until(lambda: client.events("error"), 5, "NO_WORKER")
        assert client.events("error")[0]["code"] == "NO_WORKER"
        await text(client, "Too early.")
        await until(lambda: len(client.events("error")) == 2, 5, "NO_WORKER for the text")
        late = await start(None)
        await until(lambda: late.sent(SessionOpened), 3, "the session adopted")
        await text(client, "Now there is someone.")
        await until(lambda: client.events("tts_end"), 10, "spoken")
        assert late.texts() == ["Now there is someone."]

    run(body, first=False)


def test_when_the_last_vad_or_asr_leaves_every_session_hears_voice_input_lost() -> None:
    async def body(client: Client, gateway: Gateway, start: Start, first: Any) -> None:
        asr = await start(None, kind="asr")
        second = await start(None, kind="asr")
        second.stop()  # another one is left: nothing to say
        await until(lambda: gateway.registry.get(second.id) is None, 5, "one asr gone")
        await asyncio.sleep(0.3)
        assert not client.events("error")
        left = time.monotonic()
        asr.stop()
        await until(lambda: client.events("error"), 3, "VOICE_INPUT_LOST")
        assert time.monotonic() - left < 3
        (error,) = client.events("error")
        assert error["code"] == "VOICE_INPUT_LOST" and "speech recognition" in error["message"]
        first.speaks = 1
        await text(client, "Texts still work.")
        await until(lambda: client.events("tts_end") or len(client.events("error")) > 1, 5, "t")
        assert [e["code"] for e in client.events("error")] == ["VOICE_INPUT_LOST"]

    run(body)
