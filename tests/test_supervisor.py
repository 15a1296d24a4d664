"""The supervisor actor on a real bus: a spoken turn answered by the echo dialogue, a barge-in
that the barge window resolves, states published for VAD, sessions closed both ways, counters,
and settings refused at start. The gateway is a recording actor (the new gateway is built
elsewhere); the turn-taking rules themselves are tests/test_turns.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from actors.supervisor import Supervisor
from bus import topics
from bus.broker import Broker
from bus.inbound import Via
from bus.runtime import Actor, Inbound
from bus.schema import Message
from bus.schema.asr import Transcript
from bus.schema.control import BargeInOutcome
from bus.schema.session import (
    PlayoutEvent,
    PlayoutEventKind,
    PlayoutSpeak,
    PlayoutText,
    SessionClosed,
    SessionOpened,
    SessionReply,
    StateChanged,
)
from bus.schema.vad import SpeechEnd, SpeechStart
from bus.settings import SettingsError
from bus.topology import ActorConfig
from tests.test_runtime import configs, run, running, until

pytestmark = pytest.mark.timeout(30)


class Gateway(Actor):
    """Records what the supervisor tells it, and the states published for VAD."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.told: list[tuple[str, Message]] = []
        self.published: list[tuple[str, Message]] = []
        self.subscribe(topics.STATE)

    async def on_message(self, inbound: Inbound) -> None:
        seen = self.published if inbound.via is Via.EVENTS else self.told
        seen.append((inbound.env.session, inbound.message))

    def got(self, session: str, kind: type) -> list[Any]:
        return [m for s, m in self.told if s == session and isinstance(m, kind)]

    def states(self, session: str, seen: list[tuple[str, Message]] | None = None) -> list[str]:
        found = self.told if seen is None else seen
        return [m.state for s, m in found if s == session and isinstance(m, StateChanged)]


def test_a_spoken_turn_a_false_interruption_and_both_ways_of_closing() -> None:
    async def body() -> None:
        broker_cfg, actor = configs()
        settings = {"barge_window_ms": 200, "idle_timeout_s": 2.0}
        sup = Supervisor(actor("supervisor", settings=settings))
        gw = Gateway(actor("gateway"))
        async with running(Broker(broker_cfg), sup, gw):
            await until(lambda: gw.registry.get(sup.id), 5, "the supervisor registered")
            await asyncio.sleep(0.2)  # let the SUB subscriptions reach the broker's proxy

            def tell(msg: Message) -> None:
                gw.send_nowait(sup.id, msg, session="s1")

            async def hear(prefix: bytes, msg: Message) -> None:
                await gw.publish(topics.topic(prefix, "s1"), msg, session="s1")

            def wait_for(what: Callable[[], Any], why: str) -> Any:
                return until(what, 5, why)

            tell(SessionOpened(gateway=gw.id))
            await wait_for(lambda: gw.states("s1") == ["LISTENING"], "LISTENING")
            await hear(topics.VAD, SpeechStart(stream_sample=16000, preroll_sample=11200))
            await hear(topics.VAD, SpeechEnd(stream_sample=32000))
            await hear(
                topics.ASR, Transcript(text="Tell me a story.", final=True, start_sample=11200)
            )
            await wait_for(lambda: gw.got("s1", SessionReply), "the echo dialogue's reply")
            (speak,) = gw.got("s1", PlayoutSpeak)
            assert (speak.text, speak.final, speak.answers_sample) == (
                "Tell me a story. ",
                False,
                32000,
            )
            assert gw.got("s1", PlayoutText) == [
                PlayoutText(utterance_id=speak.utterance_id, text="", final=True)
            ]
            uid = speak.utterance_id

            tell(PlayoutEvent(utterance_id=uid, event=PlayoutEventKind.STARTED))
            await hear(topics.VAD, SpeechStart(stream_sample=96000, preroll_sample=91200))
            tell(PlayoutEvent(utterance_id=uid, event=PlayoutEventKind.HELD))
            await wait_for(lambda: gw.got("s1", BargeInOutcome), "the barge window to run out")
            assert gw.got("s1", BargeInOutcome) == [BargeInOutcome(utterance_id=uid, words=False)]
            tell(
                PlayoutEvent(
                    utterance_id=uid, event=PlayoutEventKind.ENDED, heard="Tell me a story."
                )
            )
            expected = ["LISTENING", "THINKING", "SPEAKING", "BARGED_IN", "SPEAKING", "LISTENING"]
            await wait_for(lambda: gw.states("s1") == expected, "LISTENING again")
            await wait_for(lambda: gw.states("s1", gw.published) == expected, "states for VAD")

            tell(SessionClosed(reason="client_closed"))
            await wait_for(lambda: "s1" not in sup.sessions, "s1 forgotten")
            assert not gw.got("s1", SessionClosed)  # the gateway closed it: nothing to tell

            gw.send_nowait(sup.id, SessionOpened(gateway=gw.id), session="s2")
            await until(lambda: gw.got("s2", SessionClosed), 5, "s2's idle timeout")
            assert gw.got("s2", SessionClosed) == [SessionClosed(reason="idle_timeout")]
            assert gw.states("s2") == ["LISTENING", "ENDED"] and not sup.sessions

            registry = sup.metrics.registry
            for name, value in [
                ("duplex_user_turns_total", 1),
                ("duplex_barge_ins_total", 1),
                ("duplex_false_interruptions_total", 1),
                ("duplex_session_transitions_refused_total", 0),
            ]:
                assert registry.get_sample_value(name) == value, name

    run(body)


def test_an_unknown_or_mistyped_setting_fails_at_start_naming_it() -> None:
    with pytest.raises(SettingsError, match="'busy_wait_ms'; allowed: barge_window_ms"):
        Supervisor(
            ActorConfig(kind="supervisor", metrics_port=None, settings={"busy_wait_ms": 5000})
        )
    with pytest.raises(SettingsError, match="echo_overlap: expected a number"):
        Supervisor(
            ActorConfig(kind="supervisor", metrics_port=None, settings={"echo_overlap": "high"})
        )
