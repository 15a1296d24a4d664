"""Echo cancellation end to end: real actors (gateway, VAD, ASR, supervisor, router, Piper
worker) on real sockets; a WebSocket client whose loudspeaker plays the bot's audio into its
own microphone through a simulated room (tests/roomkit.py), streaming all along like a real
microphone, and a person (espeak-ng, not the bot's voice) who talks over it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.roomkit import EchoTalker, Room, espeak_missing_reason, other_voice
from tests.support import Processes, metric, word_error_rate
from tests.test_gateway import Stack

STORY = (
    "Once upon a time there was a lighthouse keeper who counted the waves every night. "
    "He wrote each number into a big blue book, and he never missed a single wave. "
    "The book grew so thick that he needed a second shelf, and then a third one."
)
"""About 15 seconds of speech."""
QUESTION = "Wait a moment, what time is it?"

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = espeak_missing_reason()
    if reason:
        pytest.skip(reason)
    tmp: Path = tmp_path_factory.mktemp("echo")
    procs = Processes(tmp)
    try:
        s = Stack(procs, tmp, "", ["gateway", "supervisor", "router", "vad", "asr", "tts_worker"])
        s.wait_ready(voice_in=True)
        yield s
    finally:
        procs.close()


def kind(name: str, **fields: object) -> object:
    return lambda m: m.get("type") == name and all(m.get(k) == v for k, v in fields.items())


def in_a_room(stack: Stack, room: Room, **config: object) -> EchoTalker:
    talker = EchoTalker(stack.url, room, **config)
    talker.wait_for(kind("state", state="LISTENING"), 10, "the session to open")
    return talker


def test_the_bots_own_voice_through_a_loudspeaker_does_not_interrupt_it(stack: Stack) -> None:
    talker = in_a_room(stack, Room(-6, 150))
    try:
        talker.send({"type": "text", "text": STORY})
        talker.wait_for(kind("tts_start"), 10, "the bot to start")
        _, end = talker.wait_for(kind("tts_end"), 60, "the story to end")
        assert end["reason"] == "completed" and end["frames"] > 600  # over 12 s played
        time.sleep(1.0)  # the last of the echo comes back
        assert not talker.events("barge_in")
        assert not [e for e in talker.events("transcript") if e["final"]]
        assert "THINKING" not in [e["state"] for e in talker.events("state")]
        metrics = talker.events("metrics")  # after tts_end: how much echo was cancelled
        assert metrics and metrics[-1]["echo_erle_db"] > 10, metrics
        erle = metric(stack.http + "/metrics", "duplex_echo_erle_db_sum")
        assert metric(stack.http + "/metrics", "duplex_echo_erle_db_count") >= 1 and erle > 0
    finally:
        talker.close()


def test_the_person_talking_over_the_echo_still_barges_in(stack: Stack) -> None:
    talker = in_a_room(stack, Room(-6, 150))
    try:
        talker.send({"type": "text", "text": STORY})
        talker.wait_for(kind("tts_start"), 10, "the bot to start")
        time.sleep(3.0)
        spoke = talker.speak(other_voice(QUESTION))
        barged_at, barge = talker.wait_for(kind("barge_in"), 10, "barge_in", since=spoke)
        _, end = talker.wait_for(kind("tts_end", utterance_id=barge["utterance_id"]), 10, "end")
        assert end["reason"] == "barged_in"
        _, final = talker.wait_for(
            lambda m: m.get("type") == "transcript" and m["final"], 15, "the final", since=spoke
        )
        assert word_error_rate(QUESTION, final["text"]) <= 0.5, final
        # Its own echo in the three seconds before held nothing.
        held = [at for at, m in talker.timed() if isinstance(m, dict) and m["type"] == "barge_in"]
        assert held[0] >= spoke and barged_at >= spoke
    finally:
        talker.close()


def test_with_cancellation_off_the_echo_interrupts_the_bot(stack: Stack) -> None:
    """The switch works: the same room, the canceller off, and the bot stops itself."""
    talker = in_a_room(stack, Room(-6, 150), echo_cancellation=False)
    try:
        talker.send({"type": "text", "text": STORY})
        talker.wait_for(kind("tts_start"), 10, "the bot to start")
        talker.wait_for(kind("barge_in"), 20, "the echo to barge in")
    finally:
        talker.close()
