"""The whole text-to-speech path as a client sees it: real actor processes, real websockets,
the real Piper voice; a second stack with two mock-voice workers for failover and timeouts."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from bus.audio_format import BOT, FRAME_MS, FRAME_S, read_wav
from tests.support import (
    ROOT,
    BrokerPorts,
    Processes,
    duplex,
    free_port,
    metric,
    status,
    transcribe,
    wait_until,
    word_error_rate,
)


class Stack:
    def __init__(self, procs: Processes, tmp: Path, extra: str, actors: list[str]) -> None:
        self.ports = BrokerPorts.pick()
        self.http_port = free_port()
        topo = self.ports.topology(
            tmp,
            extra=(
                "actors:\n"
                f"  gateway:\n    http_port: {self.http_port}\n    max_text_chars: 500\n" + extra
            ),
        )
        self.procs = procs
        self.topology = str(topo)
        self.broker = procs.duplex("broker", "--topology", self.topology, name="broker")
        self.actors = {}
        for actor in actors:
            kind, _, actor_id = actor.partition(":")
            self.actors[actor_id or kind] = procs.duplex(
                "run", kind, "--topology", self.topology, "--id", actor_id or kind, name=actor
            )
        self.url = f"ws://127.0.0.1:{self.http_port}/ws"
        self.http = f"http://127.0.0.1:{self.http_port}"

    def ids(self) -> set[str]:
        data = status(self.ports.endpoint) or {"actors": []}
        return {a["actor_id"] for a in data["actors"]}

    def wait_ready(self, voice_in: bool = False) -> None:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(self.http + "/ready", timeout=2) as response:
                    body = json.loads(response.read())
                return response.status == 200 and (body["voice_in"] or not voice_in)
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_until(ready, 90, "the stack to be ready")


def receive(ws: ClientConnection, until: str, timeout: float = 30) -> list[Any]:
    """Every message up to and including the first JSON event of type ``until``."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        item = message if isinstance(message, bytes) else json.loads(message)
        got.append((time.monotonic(), item))
        if isinstance(item, dict) and item.get("type") == until:
            return got


def events(got: list[Any], kind: str) -> list[dict[str, Any]]:
    return [m for _, m in got if isinstance(m, dict) and m.get("type") == kind]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    procs = Processes(tmp)
    try:
        s = Stack(procs, tmp, "", ["gateway", "supervisor", "router", "tts_worker"])
        s.wait_ready()
        yield s
    finally:
        procs.close()


def test_a_client_following_the_contract_hears_paced_speech(stack: Stack) -> None:
    text = "Good evening. The gateway paces every frame in real time."
    with connect(stack.url) as ws:
        start = json.loads(ws.recv(timeout=10))
        assert start["type"] == "session_start" and start["protocol"] == 1
        audio_out = {"sample_rate": BOT.sample_rate, "frame_ms": FRAME_MS, "encoding": "pcm_s16le"}
        assert start["audio_out"] == audio_out
        ws.send(json.dumps({"type": "text", "text": text}))
        got = receive(ws, "tts_end")
    frames = [(t, m) for t, m in got if isinstance(m, bytes)]
    (tts_start,) = events(got, "tts_start")
    (tts_end,) = events(got, "tts_end")
    assert tts_start["text"] == text and tts_end["utterance_id"] == tts_start["utterance_id"]
    assert tts_end["reason"] == "completed" and tts_end["frames"] == len(frames) > 100
    assert all(len(m) == BOT.frame_bytes for _, m in frames)
    # Paced at real time: the frames arrive over about as long as they play.
    span = frames[-1][0] - frames[0][0]
    played = (len(frames) - 1) * FRAME_S
    assert 0.8 * played < span < 1.3 * played + 0.3
    assert [e["state"] for e in events(got, "state")][:2] == ["LISTENING", "SPEAKING"]
    pcm = b"".join(m for _, m in frames)
    assert word_error_rate(text, transcribe(pcm)) < 0.25


def test_json_audio_mode_sends_base64_frames_with_contiguous_sequence(stack: Stack) -> None:
    with connect(stack.url) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "session_config", "audio_format": "json"}))
        ws.send(json.dumps({"type": "text", "text": "Clients of the older protocol still work."}))
        got = receive(ws, "tts_end")
    audio = events(got, "audio")
    assert [a["sequence"] for a in audio] == list(range(len(audio)))
    assert all(len(base64.b64decode(a["pcm"])) == BOT.frame_bytes for a in audio)
    assert {(a["sample_rate"], a["frame_ms"]) for a in audio} == {(BOT.sample_rate, FRAME_MS)}
    assert events(got, "tts_end")[0]["frames"] == len(audio) > 50


def test_five_concurrent_sessions_each_get_only_their_own_audio(stack: Stack) -> None:
    # Each text is two sentences longer than the last: about a second more audio each.
    texts = [f"Session {n}." + " Here is one more sentence." * (2 * n) for n in range(1, 6)]
    results: dict[int, list[Any]] = {}

    def talk(n: int) -> None:
        with connect(stack.url) as ws:
            ws.recv(timeout=10)
            ws.send(json.dumps({"type": "text", "text": texts[n]}))
            results[n] = receive(ws, "tts_end", timeout=60)

    threads = [threading.Thread(target=talk, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert sorted(results) == [0, 1, 2, 3, 4]
    counts = []
    for n, got in results.items():
        (start,) = events(got, "tts_start")
        (end,) = events(got, "tts_end")
        frames = sum(1 for _, m in got if isinstance(m, bytes))
        assert start["text"] == texts[n] and end["reason"] == "completed"
        assert end["frames"] == frames
        counts.append(frames)
    assert counts == sorted(counts)  # longer text, more audio: nobody got another's frames


def test_bad_input_gets_the_right_error_and_the_session_still_works(stack: Stack) -> None:
    with connect(stack.url) as ws:
        ws.recv(timeout=10)

        def error_for(payload: str | bytes) -> str:
            ws.send(payload)
            (err,) = events(receive(ws, "error", timeout=10), "error")
            return str(err["code"])

        assert error_for("{not json") == "INVALID_MESSAGE"
        assert error_for(json.dumps({"type": "dance"})) == "UNSUPPORTED_TYPE"
        assert error_for(json.dumps({"type": "text", "text": "x" * 501})) == "TEXT_TOO_LONG"
        assert error_for(json.dumps({"type": "text", "text": "   "})) == "INVALID_MESSAGE"
        assert error_for(json.dumps({"type": "control", "command": "JUMP"})) == "INVALID_MESSAGE"
        assert error_for(b"\x01\x02\x03") == "INVALID_MESSAGE"  # PCM needs whole samples
        assert error_for(json.dumps({"type": "session_config", "audio_format": "mp3"})) == (
            "INVALID_MESSAGE"
        )
        assert error_for('{"type": "text", "text": "\\ud800"}') == "INVALID_MESSAGE"
        assert error_for("[" * 10_000 + "]" * 10_000) == "INVALID_MESSAGE"
        assert error_for(json.dumps({"type": "text", "text": "ding \x07 dong"})) == "INVALID_TEXT"
        ws.send(json.dumps({"type": "session_config", "voice": "nobody-here"}))
        (unknown,) = events(receive(ws, "error", timeout=10), "error")
        assert unknown["code"] == "UNKNOWN_VOICE"
        assert "en_US-joe-medium" in unknown["message"]  # the voices there are
        for _ in range(600):  # a flood: over the per-session message rate
            ws.send(json.dumps({"type": "session_config"}))
        limited = receive(ws, "error", timeout=10)
        assert events(limited, "error")[0]["code"] == "RATE_LIMITED"
        time.sleep(1.5)  # the bucket refills
        while True:  # drain what the flood left
            try:
                ws.recv(timeout=0.3)
            except TimeoutError:
                break
        ws.send(json.dumps({"type": "text", "text": "Still working."}))
        got = receive(ws, "tts_end")
        assert events(got, "tts_end")[0]["reason"] == "completed"


def test_http_endpoints_answer_as_documented(stack: Stack) -> None:
    def get(path: str) -> tuple[int, bytes, str]:
        with urllib.request.urlopen(stack.http + path, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")

    assert json.loads(get("/health")[1])["status"] == "ok"
    assert json.loads(get("/ready")[1])["ready"] is True
    assert b"duplex_messages_received_total" in get("/metrics")[1]
    voices = {v["id"]: v for v in json.loads(get("/v1/voices")[1])["voices"]}
    assert voices["piper-en_US-joe-medium"]["resident"] and voices["mock-440hz"]["workers"] == 1
    _, page, kind = get("/")
    assert kind.startswith("text/html") and b'src="/web/app.js"' in page

    def post(body: Any) -> tuple[int, bytes, str]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(stack.http + "/v1/synthesize", data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers.get("Content-Type", "")

    code, body, kind = post({"text": "The web interface can speak as well.", "format": "wav"})
    assert code == 200 and kind == "audio/wav"
    pcm, rate = read_wav(io.BytesIO(body))  # refuses anything but mono 16-bit
    assert rate == BOT.sample_rate
    assert word_error_rate("The web interface can speak as well.", transcribe(pcm)) < 0.25
    assert post(b"not json")[0] == 400
    assert post({"text": "x" * 501})[0] == 413
    # No worker has the voice: the router says so (503 NO_WORKER naming it). Were the router
    # to route it anyway, the worker would refuse it instead (400 UNKNOWN_VOICE).
    code, body, _ = post({"text": "Hi.", "voice": "nobody"})
    error = json.loads(body)["error"]
    assert (code, error["code"]) == (503, "NO_WORKER"), (code, error)
    assert "'nobody'" in error["message"], error


def test_the_web_app_and_its_assets_are_served_and_nothing_else_under_web(stack: Stack) -> None:
    host, port = "127.0.0.1", stack.http_port

    def get(path: str) -> tuple[int, bytes, dict[str, str]]:
        # http.client sends the path as written: no client-side "../" folding.
        connection = http.client.HTTPConnection(host, port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            connection.close()

    code, page, headers = get("/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-cache"
    assert page == (ROOT / "transports/web/index.html").read_bytes()
    for name, kind in [
        ("app.js", "text/javascript"),
        ("chart.js", "text/javascript"),
        ("style.css", "text/css"),
    ]:
        code, body, headers = get(f"/web/{name}")
        assert code == 200 and headers["Content-Type"].split(";")[0] == kind, (name, headers)
        assert headers["Cache-Control"] == "no-cache"
        assert body == (ROOT / "transports/web" / name).read_bytes()
        assert f"/web/{name}".encode() in page or name == "chart.js"
    for path in ["/web/../x", "/web/..%2Fhttp_api.py", "/web/index.html", "/web/nothing.js"]:
        assert get(path)[0] == 404, path


def test_ready_is_503_without_a_worker(procs: Processes, tmp_path: Path) -> None:
    s = Stack(procs, tmp_path, "", ["gateway", "supervisor", "router"])

    def answer() -> tuple[int, dict[str, Any]] | None:
        try:
            urllib.request.urlopen(s.http + "/ready", timeout=2)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
        except (urllib.error.URLError, ConnectionError):
            return None
        return 200, {}

    def settled() -> tuple[int, dict[str, Any]] | None:
        # The gateway answers before it has heard the supervisor and router register.
        got = answer()
        if got is None or {"supervisor", "router"} & set(got[1].get("missing", [])):
            return None
        return got

    code, body = wait_until(settled, 30, "the gateway to see the supervisor and router")
    assert code == 503 and body["missing"] == ["tts_worker"]
    assert body["ready"] is False


def test_a_session_waits_for_a_saturated_worker_instead_of_failing(
    procs: Processes, tmp_path: Path
) -> None:
    extra = "  tts_worker:\n    default_voice: mock-440hz\n    max_streams: 1\n"
    s = Stack(procs, tmp_path, extra, ["gateway", "supervisor", "router", "tts_worker"])
    s.wait_ready()
    with connect(s.url) as first, connect(s.url) as second:
        first.recv(timeout=10)
        second.recv(timeout=10)
        first.send(json.dumps({"type": "text", "text": "A tone for a while. " * 4}))
        receive(first, "tts_start", timeout=10)
        second.send(json.dumps({"type": "text", "text": "My turn."}))
        got = receive(second, "tts_end", timeout=20)  # the worker's one stream frees up
        assert not events(got, "error"), events(got, "error")
        assert events(got, "tts_end")[0]["reason"] == "completed"
        ended = receive(first, "tts_end", timeout=10)
        assert events(ended, "tts_end")[0]["reason"] == "completed"
    actors = (status(s.ports.endpoint) or {"actors": []})["actors"]
    (gateway,) = [a for a in actors if a["kind"] == "gateway"]  # it routes each utterance
    assert metric(gateway["endpoints"]["metrics"], "duplex_route_busy_waits_total") > 0


def test_killing_the_serving_worker_ends_the_utterance_within_3_s_and_the_next_works(
    procs: Processes, tmp_path: Path
) -> None:
    extra = (
        "  tts_worker:\n    default_voice: mock-440hz\n"
        "  supervisor:\n    idle_timeout_s: 4\n  router:\n    ping_interval_s: 0.3\n"
    )
    s = Stack(
        procs,
        tmp_path,
        extra,
        ["gateway", "supervisor", "router", "tts_worker:w1", "tts_worker:w2"],
    )
    s.wait_ready()
    wait_until(lambda: {"w1", "w2"} <= s.ids(), 30, "both workers")
    with connect(s.url) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "text", "text": "A long tone. " * 30}))
        receive(ws, "tts_start", timeout=15)
        time.sleep(0.5)
        busy = [
            a
            for a in (status(s.ports.endpoint) or {"actors": []})["actors"]
            if a["kind"] == "tts_worker" and a["load"] > 0
        ]
        assert len(busy) == 1
        os.kill(s.actors[busy[0]["actor_id"]].pid, signal.SIGKILL)
        killed = time.monotonic()
        got = receive(ws, "tts_end", timeout=10)
        assert time.monotonic() - killed < 3.0
        assert events(got, "tts_end")[0]["reason"] in ("error", "completed")
        ws.send(json.dumps({"type": "text", "text": "The next one works."}))
        got = receive(ws, "tts_end", timeout=15)
        assert events(got, "tts_end")[0]["reason"] == "completed"
        ended = receive(ws, "session_end", timeout=10)  # then nothing for 4 s: idle timeout
        assert events(ended, "session_end")[0]["reason"] == "idle_timeout"


def test_an_utterance_survives_a_broker_restart_while_its_worker_is_frozen(
    procs: Processes, tmp_path: Path
) -> None:
    """The registry loses the worker for a while (a restarted broker's first snapshot lacks the
    frozen worker), yet the worker and the gateway never failed: the utterance must go on where
    it was, complete, with every frame; a dropped utterance must not leave the client waiting."""
    s = Stack(
        procs,
        tmp_path,
        "  tts_worker:\n    default_voice: mock-440hz\n",
        ["gateway", "supervisor", "router", "tts_worker"],
    )
    s.wait_ready()
    text = "A tone that goes on for a while. " * 6
    with connect(s.url) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "text", "text": text}))
        got = receive(ws, "tts_start", timeout=15)
        time.sleep(0.5)
        ws.send(json.dumps({"type": "control", "command": "PAUSE"}))
        got += receive(ws, "state", timeout=5)
        worker = s.actors["tts_worker"]
        worker.send_signal(signal.SIGSTOP)
        try:
            s.broker.send_signal(signal.SIGKILL)
            s.broker.wait(timeout=5)
            s.broker = procs.duplex("broker", "--topology", s.topology, name="broker2")
            wait_until(
                lambda: s.ids() == {"gateway", "supervisor", "router"}, 15, "the others back"
            )
            time.sleep(1.0)  # their first snapshots of the new broker, without the worker
        finally:
            worker.send_signal(signal.SIGCONT)
        wait_until(lambda: "tts_worker" in s.ids(), 15, "the worker back")
        ws.send(json.dumps({"type": "control", "command": "RESUME"}))
        got += receive(ws, "tts_end", timeout=30)
        (end,) = events(got, "tts_end")
        assert end["reason"] == "completed"
        frames = sum(1 for _, m in got if isinstance(m, bytes))
        assert end["frames"] == frames
        # The same text again, undisturbed: the mock voice is deterministic, so no frame was lost.
        ws.send(json.dumps({"type": "text", "text": text}))
        again = receive(ws, "tts_end", timeout=30)
        assert events(again, "tts_end")[0]["reason"] == "completed"
        assert sum(1 for _, m in again if isinstance(m, bytes)) == frames
    assert "utterance lost" not in procs.log_of(s.actors["gateway"])


def test_duplex_chat_speaks_saves_utterances_and_streams_a_wav(
    stack: Stack, tmp_path: Path
) -> None:
    out = tmp_path / "utterances"
    result = duplex(
        "chat", "--url", stack.url, "--say", "Thank you for calling.", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("done") and "completed" in line and "first audio" in line for line in lines
    ), lines
    (saved,) = out.glob("*.wav")
    assert word_error_rate("Thank you for calling.", transcribe(saved)) < 0.25
    streamed = duplex("chat", "--url", stack.url, "--send-wav", str(saved), "--json")
    assert streamed.returncode == 0, streamed.stderr
    kinds = [json.loads(line)["type"] for line in streamed.stdout.splitlines()]
    assert kinds[0] == "session_start" and "error" not in kinds


def test_duplex_chat_interactive_lines_speak_and_commands_control_playout(
    stack: Stack, tmp_path: Path
) -> None:
    out = tmp_path / "typed"
    chat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "chat",
            "--url",
            stack.url,
            "--json",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert chat.stdin is not None and chat.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = chat.stdout

    def read_stdout() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read_stdout, daemon=True).start()

    def type_line(text: str) -> None:
        assert chat.stdin is not None
        chat.stdin.write(text + "\n")
        chat.stdin.flush()

    def until(check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                event: dict[str, Any] = json.loads(lines.get(timeout=0.2))
            except queue.Empty:
                continue
            if check(event):
                return event
        raise AssertionError(f"no {what} within 15 s")

    try:
        until(lambda e: e["type"] == "session_start", "session_start")
        type_line("Typed words are spoken, and this sentence is long enough to pause and stop.")
        until(lambda e: e["type"] == "tts_start", "tts_start")
        type_line("/pause")
        until(lambda e: e["type"] == "state" and e["state"] == "PAUSED", "PAUSED")
        type_line("/resume")
        until(lambda e: e["type"] == "state" and e["state"] == "SPEAKING", "SPEAKING again")
        type_line("/stop")
        ended = until(lambda e: e["type"] == "tts_end", "tts_end")
        assert ended["reason"] == "stopped"
        type_line("That is all for now.")
        last = until(lambda e: e["type"] == "tts_end", "the second tts_end")
        assert last["reason"] == "completed"
        type_line("/quit")
        assert chat.wait(timeout=10) == 0, chat.stderr.read() if chat.stderr else ""
    finally:
        chat.kill()
    assert {p.stem for p in out.glob("*.wav")} == {ended["utterance_id"], last["utterance_id"]}
    heard = transcribe(out / f"{last['utterance_id']}.wav")
    assert word_error_rate("That is all for now.", heard) < 0.25, heard


def test_client_pause_resume_and_stop_control_playout(stack: Stack) -> None:
    text = "This sentence is long enough to pause in the middle, resume, and then stop it."
    with connect(stack.url) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "text", "text": text}))
        got = receive(ws, "tts_start")
        frames = 0
        while frames < 25:
            if isinstance(ws.recv(timeout=10), bytes):
                frames += 1
        ws.send(json.dumps({"type": "control", "command": "PAUSE"}))
        paused = time.monotonic()
        during: list[float] = []
        while time.monotonic() - paused < 0.6:
            try:
                message = ws.recv(timeout=0.1)
            except TimeoutError:
                continue
            if isinstance(message, bytes):
                during.append(time.monotonic() - paused)
            elif json.loads(message).get("type") == "state":
                assert json.loads(message)["state"] == "PAUSED"
        assert all(t < 0.1 for t in during), during  # only what was already on its way
        ws.send(json.dumps({"type": "control", "command": "RESUME"}))
        resumed = 0
        while resumed < 10:
            if isinstance(ws.recv(timeout=5), bytes):
                resumed += 1
        ws.send(json.dumps({"type": "control", "command": "STOP"}))
        got = receive(ws, "tts_end")
        (end,) = events(got, "tts_end")
        assert end["reason"] == "stopped"
        assert end["frames"] >= 25 + len(during) + 10
        ws.send(json.dumps({"type": "text", "text": "After a stop, the next text plays."}))
        assert events(receive(ws, "tts_end"), "tts_end")[0]["reason"] == "completed"
