"""Three hosts made of Linux network namespaces (a bridge, one address each, CURVE on), each
started with ``duplex up HOST``: the broker, gateway, supervisor, router and VAD on ``front``;
a TTS worker and an ASR on ``east`` and on ``west``. Two WebSocket clients on ``front`` hold
spoken conversations; ``east``'s cable is pulled while both hear the bot speak: its actors are
purged, every utterance ends, and both sessions' next questions are heard and answered by
``west``; the cable back in, ``east``'s actors register again and take sessions again.

Nothing here reaches an address outside the namespaces the test made: the bus runs on
10.77.0.0/24 between them (no loopback between hosts), and the clients reach the gateway on
``front``'s own loopback, as a browser on that host would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.peers import LINGER_S
from tests.netkit import Hosts, unavailable
from tests.support import ROOT, duplex, wait_until, word_error_rate
from tests.voicekit import Talker, silence, speech

pytestmark = pytest.mark.timeout(300)

HTTP_PORT = 8080  # each host has its own ports: nothing else on this machine can clash
LONG = (
    "The harbour opens at dawn, when the fishing boats come back with the night's catch. "
    "By nine the market is full of people buying fish, bread and flowers, and the cafes along "
    "the quay put their tables out in the sun."
)


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.hosts = Hosts(["front", "east", "west"])
        try:
            self._start()
        except BaseException:
            self.hosts.close()
            raise

    def _start(self) -> None:
        keys = self.tmp / "keys"
        allowed = keys / "allowed"
        for name in ("broker", "actor", "east", "west"):
            allow = [] if name == "broker" else ["--allow", str(allowed)]
            made = duplex("keys", name, "--dir", str(keys), *allow)
            assert made.returncode == 0, made.stderr
        front, east, west = (self.hosts.address[h] for h in ("front", "east", "west"))
        self.topology = self.tmp / "topology.yaml"
        self.topology.write_text(
            "broker:\n"
            f"  control: tcp://{front}:5550\n"
            f"  events_in: tcp://{front}:5551\n"
            f"  events_out: tcp://{front}:5552\n"
            "  heartbeat_ms: 300\n"
            "  liveness: 3\n"
            "curve:\n"
            "  enabled: true\n"
            f"  keys_dir: {keys}\n"
            f"  allow_dir: {allowed}\n"
            "actors:\n"
            f"  gateway:\n    http_host: 127.0.0.1\n    http_port: {HTTP_PORT}\n"
            "hosts:\n"
            f"  front:\n    address: {front}\n"
            "    actors: [broker, gateway, supervisor, router, vad]\n"
            f"  east:\n    address: {east}\n    actors: [tts_worker, asr]\n    actor_key: east\n"
            f"  west:\n    address: {west}\n    actors: [tts_worker, asr]\n    actor_key: west\n"
        )
        self.up: dict[str, subprocess.Popen[bytes]] = {}
        for host in ("front", "east", "west"):
            argv = [sys.executable, "-m", "cli", "up", host, "--topology", str(self.topology)]
            self.up[host] = self.hosts.run(host, argv, self.tmp / f"{host}.log", ROOT)

    def actors(self) -> list[dict[str, Any]]:
        """``duplex status`` as ``front`` sees it (over CURVE, with front's key pair)."""
        argv = [sys.executable, "-m", "cli", "status", "--json", "--timeout", "1"]
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.hosts.ns("front"),
                *argv,
                "--topology",
                str(self.topology),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
        return list(json.loads(done.stdout)["actors"]) if done.returncode == 0 else []

    def placed(self) -> dict[tuple[str, str], float]:
        """(kind, host) → load of every ASR and TTS worker registered (sessions or streams
        served over the most it takes)."""
        return {
            (a["kind"], a["host"]): float(a["load"])
            for a in self.actors()
            if a["kind"] in ("asr", "tts_worker")
        }

    def ready(self) -> bool:
        def get() -> bool:
            url = f"http://127.0.0.1:{HTTP_PORT}/ready"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.status == 200 and bool(json.loads(response.read())["voice_in"])
            except OSError:
                return False

        return self.hosts.call("front", get)

    def talker(self) -> Talker:
        return self.hosts.call("front", lambda: Talker(f"ws://127.0.0.1:{HTTP_PORT}/ws"))

    def logs(self) -> str:
        return "\n".join(
            f"--- {h}\n" + (self.tmp / f"{h}.log").read_text(errors="replace")[-3000:]
            for h in self.up
        )

    def close(self) -> None:
        self.hosts.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    why = unavailable()
    if why and os.environ.get("CI"):
        pytest.fail(f"no network namespaces on this machine: {why} (CI is set: this must run)")
    if why:
        pytest.skip(f"no network namespaces on this machine: {why}")
    c = Cluster(tmp_path_factory.mktemp("hosts"))
    try:
        yield c
    finally:
        c.close()


EVERY_ENGINE = {("asr", h) for h in ("east", "west")} | {
    ("tts_worker", h) for h in ("east", "west")
}


def heard_it(question: str, heard: str) -> bool:
    """Heard, give or take tiny.en's slips on a short question ("Where's the near station?"
    for "Where is the nearest station?" is 0.4; another question 1.0 or more): what is tested
    is that some ASR heard it."""
    return word_error_rate(question, heard) <= 0.6


def ask(talker: Talker, question: str) -> tuple[str, dict[str, Any]]:
    """Speak ``question``; its final transcript and the reply's ``tts_end``."""
    since = time.monotonic()
    talker.say(silence(0.3) + speech(question) + silence(0.8))
    _, final = talker.wait_for(
        lambda m: m.get("type") == "transcript" and m.get("final") and m.get("text"),
        20,
        f"the final transcript of {question!r}",
        since=since,
    )
    _, end = talker.wait_for(
        lambda m: m.get("type") == "tts_end", 30, "the reply to end", since=since
    )
    return str(final["text"]), end


def test_a_conversation_survives_a_host_losing_its_link_and_the_host_comes_back(
    cluster: Cluster,
) -> None:
    try:
        wait_until(lambda: set(cluster.placed()) == EVERY_ENGINE, 150, "every host's actors")
        wait_until(cluster.ready, 60, "the gateway to hear voices")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None
    hosts_of = {a["actor_id"]: a["host"] for a in cluster.actors()}
    assert {hosts_of[i] for i in hosts_of} == {"front", "east", "west"}
    talkers = [cluster.talker(), cluster.talker()]
    try:
        for t in talkers:
            t.wait_for(lambda m: m.get("state") == "LISTENING", 10, "the session to open")
        # Two sessions, two ASRs: the least loaded takes each, one on each host.
        wait_until(
            lambda: all(cluster.placed()[("asr", h)] > 0 for h in ("east", "west")),
            10,
            "one session on each host's ASR",
        )
        one_session = cluster.placed()[("asr", "west")]  # (max_sessions: 200)
        for t, question in zip(
            talkers, ["What time does the museum open?", "Please turn off the lights."], strict=True
        ):
            heard, end = ask(t, question)
            assert heard_it(question, heard), heard
            assert end["reason"] == "completed", end

        # Both hear the bot at once; the host of a worker speaking loses its cable.
        since = time.monotonic()
        for t in talkers:
            t.send({"type": "text", "text": LONG})
        for t in talkers:
            t.wait_for(lambda m: m.get("type") == "tts_start", 15, "speech", since=since)
        speaking = wait_until(
            lambda: [h for h in ("east", "west") if cluster.placed().get(("tts_worker", h))],
            10,
            "a worker to report its stream",
        )
        down, other = speaking[0], "west" if speaking[0] == "east" else "east"
        cluster.hosts.link(down, up=False)
        pulled = time.monotonic()
        wait_until(
            lambda: set(cluster.placed()) == {("asr", other), ("tts_worker", other)},
            15,
            f"{down}'s actors to be purged",
        )
        purged_s = time.monotonic() - pulled
        ends = [
            t.wait_for(
                lambda m: m.get("type") == "tts_end", 30, "the utterance to end", since=since
            )[1]
            for t in talkers
        ]
        # What the lost worker was speaking ends `error` (docs/protocol.md: no `error` event);
        # the other worker's, if it had one, is whole.
        reasons = [e["reason"] for e in ends]
        assert "error" in reasons and set(reasons) <= {"completed", "error"}, ends

        # Both sessions' next turns are heard (the lost host's session moved to the other ASR)
        # and answered by the other worker.
        for t, question in zip(
            talkers, ["Where is the nearest station?", "Can you hear me now?"], strict=True
        ):
            heard, end = ask(t, question)
            assert heard_it(question, heard), heard
            assert end["reason"] == "completed", end
        assert cluster.placed()[("asr", other)] == pytest.approx(2 * one_session)

        # Out longer than a peer's socket outlives its peer (bus/peers.py), so the gateway's
        # best-effort session.drop to the lost ASR goes with that socket: only the ASR's own
        # "purged: sessions dropped" clears its old session. (Without it, seen on
        # 2026-12-03: the returned ASR, still holding the old session, heard nothing at all.)
        time.sleep(max(0.0, LINGER_S + 1 - (time.monotonic() - pulled)))
        cluster.hosts.link(down, up=True)
        wait_until(lambda: set(cluster.placed()) == EVERY_ENGINE, 30, f"{down}'s actors to return")
        # A new session goes to the returned, idle ASR, which hears it.
        newcomer = cluster.talker()
        talkers.append(newcomer)
        newcomer.wait_for(lambda m: m.get("state") == "LISTENING", 10, "the session to open")
        wait_until(lambda: cluster.placed()[("asr", down)] > 0, 10, f"{down}'s ASR to serve it")
        heard, end = ask(newcomer, "Is the harbour open today?")
        assert heard_it("Is the harbour open today?", heard), heard
        assert end["reason"] == "completed", end
        # The first two sessions, one of them moved, are each heard once by one ASR: nothing the
        # lost host heard while cut off comes back, and it does not hear its old session again.
        for t, question in zip(
            talkers, ["Is it going to rain?", "What is the time?"], strict=False
        ):
            heard, end = ask(t, question)
            assert heard_it(question, heard), heard
        for t in talkers[:2]:
            finals = [m for m in t.events("transcript") if m.get("final") and m.get("text")]
            assert len(finals) == 3, finals
        print(json.dumps({"purged_after_s": round(purged_s, 2)}))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None
    finally:
        for t in talkers:
            t.close()
