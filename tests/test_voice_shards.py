"""Sessions sharded onto VAD and ASR instances: two of each, real gateway, supervisor, worker
and models. Each session is heard by one VAD and one ASR only, the least loaded when it opened;
an ASR killed mid-conversation hands its sessions to the other, and the next turn is heard."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Processes, metric, status, wait_until, word_error_rate
from tests.test_gateway import Stack
from tests.voicekit import Talker, silence, speech

pytestmark = pytest.mark.timeout(150)

INSTANCES = ["vad:vad-a", "vad:vad-b", "asr:asr-a", "asr:asr-b"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("shards")
    procs = Processes(tmp)
    try:
        s = Stack(procs, tmp, "", ["gateway", "supervisor", "router", "tts_worker", *INSTANCES])
        s.wait_ready(voice_in=True)
        wait_until(lambda: {"vad-a", "vad-b", "asr-a", "asr-b"} <= s.ids(), 60, "every instance")
        yield s
    finally:
        procs.close()


def actors(stack: Stack) -> dict[str, dict[str, Any]]:
    found = status(stack.ports.endpoint) or {"actors": []}
    return {a["actor_id"]: a for a in found["actors"]}


def finals(stack: Stack, asr: str) -> float:
    url = actors(stack)[asr]["endpoints"]["metrics"]
    return metric(url, "duplex_asr_transcripts_total", kind="final")


def ask(talker: Talker, question: str, since: float) -> str:
    talker.say(silence(0.3) + speech(question) + silence(0.8))
    _, final = talker.wait_for(
        lambda m: m.get("type") == "transcript" and m.get("final") and m.get("text"),
        15,
        "a final transcript",
        since=since,
    )
    return str(final["text"])


def test_each_session_is_heard_by_one_vad_and_one_asr_and_moves_when_its_asr_dies(
    stack: Stack,
) -> None:
    talkers = [Talker(stack.url), Talker(stack.url)]
    try:
        for t in talkers:
            t.wait_for(lambda m: m.get("state") == "LISTENING", 10, "the session to open")
        # Two sessions, two of each kind: one each (the load each publishes says so).
        wait_until(
            lambda: all(actors(stack)[i.split(":")[1]]["load"] > 0 for i in INSTANCES),
            10,
            "every VAD and ASR to serve a session",
        )
        questions = ["What time does the museum open?", "Please turn off the kitchen lights."]
        for t, question in zip(talkers, questions, strict=True):
            assert word_error_rate(question, ask(t, question, time.monotonic())) < 0.3
        # Each ASR made exactly one final: it heard one session's audio, not both.
        assert (finals(stack, "asr-a"), finals(stack, "asr-b")) == (1, 1)
        first = talkers[0]
        # The ASR that heard the first talker is the one whose final came first... find it by
        # asking the first talker again and seeing whose count moves.
        before = {a: finals(stack, a) for a in ("asr-a", "asr-b")}
        ask(first, "Can you hear me now?", time.monotonic())
        after = {a: finals(stack, a) for a in ("asr-a", "asr-b")}
        (serving,) = [a for a in before if after[a] > before[a]]
        (other,) = [a for a in before if a != serving]
        stack.actors[serving].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: serving not in stack.ids(), 10, "the killed ASR to be purged")
        heard = ask(first, "Where is the nearest train station?", killed)
        assert word_error_rate("Where is the nearest train station?", heard) < 0.3, heard
        assert finals(stack, other) == after[other] + 1  # the other ASR heard it
    finally:
        for t in talkers:
            t.close()


def test_a_session_no_vad_has_room_for_is_told_so(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    try:
        one = "  vad:\n    max_sessions: 1\n"
        s = Stack(procs, tmp_path, one, ["gateway", "supervisor", "vad"])
        # (No TTS worker, so /ready stays 503: the registrations say it is up.)
        wait_until(lambda: {"gateway", "supervisor", "vad"} <= s.ids(), 60, "the actors")
        first = Talker(s.url)
        first.wait_for(lambda m: m.get("state") == "LISTENING", 10, "the first session")
        wait_until(lambda: actors(s)["vad"]["load"] == 1.0, 10, "the VAD to be full")
        second = Talker(s.url)
        try:
            _, error = second.wait_for(
                lambda m: m.get("type") == "error" and m.get("code") == "VOICE_INPUT_LOST",
                10,
                "VOICE_INPUT_LOST",
            )
            assert "full" in error["message"], error
            assert not first.events("error")  # the first keeps its VAD
        finally:
            second.close()
            first.close()
    finally:
        procs.close()
