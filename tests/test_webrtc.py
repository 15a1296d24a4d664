"""The WebRTC transport against a real aiortc peer, in one process: a real broker, gateway,
router and mock-voice TTS worker on real sockets, the scripted supervisor of
tests/test_client_session.py, and a stand-in VAD that records the microphone frames the gateway
publishes and can say ``speech_start``. The browser itself is tested in tests/test_browser.py."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from actors.gateway import Gateway
from actors.router import Router
from actors.tts_worker import TtsWorker
from bus import topics
from bus.broker import Broker
from bus.runtime import Actor, Inbound
from bus.schema.audio import AudioFrame
from bus.schema.control import BargeInOutcome
from bus.schema.session import PlayoutEventKind, SessionClosed, SessionOpened
from bus.schema.vad import SpeechStart
from tests.support import free_port
from tests.test_client_session import LONG, Supervisor
from tests.test_runtime import all_up, configs, running, until
from transports.webrtc_audio import install_pass_through

pytestmark = pytest.mark.timeout(60)

SILENT_DBFS = -50.0


class Vad(Actor):
    """Records the microphone frames published for VAD."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.frames: list[AudioFrame] = []
        self.subscribe(topics.AUDIO_IN)

    async def on_message(self, inbound: Inbound) -> None:
        if isinstance(inbound.message, AudioFrame):
            self.frames.append(inbound.message)


class Tone(MediaStreamTrack):
    """A paced 48 kHz microphone: a 300 Hz tone at -20 dBFS (silence while ``muted``)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.muted = False
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n * 0.02 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(960) + self._n * 960) / 48000
        samples = np.zeros(960) if self.muted else 0.1 * np.sin(2 * np.pi * 300 * t)
        frame = av.AudioFrame.from_ndarray(
            (samples * 32767).astype("<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, self._n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self._n += 1
        return frame


def dbfs(frame: av.AudioFrame) -> float:
    samples = frame.to_ndarray().astype(np.float64) / 32768
    return float(10 * np.log10(np.mean(samples**2) + 1e-12))


class Browser:
    """An aiortc peer doing what the web page does: microphone track, ``events`` channel,
    offer with every candidate, answer applied; records events and the bot's audio level."""

    def __init__(self, base: str, mic: bool = True) -> None:
        self.base = base
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = Tone() if mic else None
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.audio: list[tuple[float, float]] = []
        """(arrival, dBFS) of every bot frame received."""
        self.session_id = ""
        self.channel = self.pc.createDataChannel("events")
        self.channel.on("message", self._event)
        self._tasks: list[asyncio.Task[None]] = []
        if self.mic is not None:
            self.pc.addTrack(self.mic)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.on("track", self._track)

    def _event(self, message: str) -> None:
        self.events.append((time.monotonic(), json.loads(message)))

    def _track(self, track: MediaStreamTrack) -> None:
        async def read() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                assert isinstance(frame, av.AudioFrame)
                self.audio.append((time.monotonic(), dbfs(frame)))

        self._tasks.append(asyncio.get_running_loop().create_task(read()))

    async def connect(self) -> None:
        status, answer = await self.offer()
        assert status == 200, answer
        self.session_id = answer["session_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        # No 80 ms prefetch here either: what plays after a hold is the gateway's doing.
        install_pass_through(self.pc.getTransceivers()[0].receiver)

    async def offer(self) -> tuple[int, dict[str, Any]]:
        """The offer posted (the answer not applied): status and body."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        return await request("POST", f"{self.base}/webrtc/offer", offer)

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e.get("type") == kind]

    def loud_since(self, t: float) -> int:
        return sum(1 for at, level in self.audio if at > t and level > SILENT_DBFS)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


async def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """Status and JSON body (None if there is none) of one HTTP request."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as http, http.request(method, url, data=data) as response:
        return response.status, await response.json() if response.content_length else None


def run_stack(body: Any, webrtc: dict[str, Any] | None = None) -> None:
    broker_cfg, actor = configs()
    http_port = free_port()
    # ICE on loopback only: the test's traffic stays on this host's loopback.
    webrtc = {"ice_addresses": ["127.0.0.1"], **(webrtc or {})}
    settings = {"http_port": http_port, "webrtc": webrtc}
    gateway = Gateway(actor("gateway", settings=settings))
    router = Router(actor("router"))
    worker = TtsWorker(actor("tts_worker", settings={"default_voice": "mock-440hz"}))
    supervisor = Supervisor(actor("supervisor"))
    vad = Vad(actor("vad"))

    async def main() -> None:
        async with running(Broker(broker_cfg), worker, router, supervisor, vad, gateway):
            await all_up(gateway, router, worker, supervisor, vad)
            await asyncio.sleep(0.3)  # subscriptions reach the event proxy
            await body(f"http://127.0.0.1:{http_port}", gateway, supervisor, vad)

    asyncio.run(asyncio.wait_for(main(), 50))


async def connected(base: str, mic: bool = True) -> Browser:
    browser = Browser(base, mic)
    await browser.connect()
    await until(lambda: browser.pc.connectionState == "connected", 5, "ICE connected")
    await until(lambda: browser.of("session_start"), 5, "session_start on the channel")
    return browser


def test_text_is_spoken_on_the_track_with_events_on_the_channel() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        browser = await connected(base)
        assert browser.of("session_start")[0]["session_id"] == browser.session_id
        await until(lambda: supervisor.sent(SessionOpened), 5, "session.opened")
        opened = supervisor.sent(SessionOpened)[0]
        assert isinstance(opened, SessionOpened) and opened.transport == "webrtc"
        await asyncio.sleep(0.3)
        assert browser.audio and browser.loud_since(0) == 0  # silence while idle
        browser.send({"type": "text", "text": "Hello from the browser."})
        await until(lambda: browser.of("tts_end"), 20, "tts_end")
        end = browser.of("tts_end")[0]
        assert end["reason"] == "completed" and end["frames"] > 20
        await asyncio.sleep(0.3)  # the last frames cross the network
        loud = browser.loud_since(0)
        assert end["frames"] - 3 <= loud <= end["frames"] + 3, (loud, end["frames"])
        assert browser.of("tts_start")[0]["utterance_id"] == end["utterance_id"]
        await browser.close()

    run_stack(body)


def test_microphone_reaches_the_bus_as_16khz_frames() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        browser = await connected(base)
        await asyncio.sleep(1.0)
        mine = [f for f in vad.frames if f.sample_rate == 16000]
        assert len(mine) >= 30, len(mine)  # ~50 per second
        assert [f.sequence for f in mine] == list(range(mine[0].sequence, mine[-1].sequence + 1))
        samples = np.frombuffer(b"".join(f.pcm for f in mine[10:]), "<i2") / 32768
        level = 10 * np.log10(np.mean(samples**2))
        assert -29 < level < -20, level  # the -23 dBFS tone through Opus (the stereo sum: -17)
        spectrum = np.abs(np.fft.rfft(samples))
        assert abs(np.argmax(spectrum) * 16000 / len(samples) - 300) < 10
        await browser.close()

    run_stack(body)


def test_barge_in_silences_the_track_then_a_false_alarm_resumes_it() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        browser = await connected(base)
        browser.send({"type": "text", "text": LONG})
        await until(lambda: browser.loud_since(0) > 25, 10, "bot audio")
        sid = browser.session_id
        stream_sample = vad.frames[-1].stream_sample if vad.frames else 0
        await vad.publish(
            topics.topic(topics.VAD, sid),
            SpeechStart(stream_sample=stream_sample),
            session=sid,
        )
        await until(lambda: browser.of("barge_in"), 5, "barge_in")
        held_at = browser.events[-1][0]
        await asyncio.sleep(0.8)
        # Held from the next frame: one in flight may still come (without the track's flush,
        # the two queued there would too).
        assert browser.loud_since(held_at) <= 2, browser.loud_since(held_at)
        assert browser.loud_since(held_at + 0.3) == 0
        held = supervisor.playout(PlayoutEventKind.HELD)
        assert held
        gateway_id = gateway.id
        supervisor.send_or_warn(
            gateway_id, BargeInOutcome(utterance_id=held[0].utterance_id, words=False), sid
        )
        await until(lambda: browser.of("tts_end"), 30, "tts_end")
        assert browser.of("tts_end")[0]["reason"] == "completed"
        await asyncio.sleep(0.3)
        frames = browser.of("tts_end")[0]["frames"]
        loud = browser.loud_since(0)
        # Nothing lost and nothing twice: what was taken back at the hold played once.
        assert frames - 3 <= loud <= frames + 3, (loud, frames)
        await browser.close()

    run_stack(body)


def test_two_peers_hear_only_their_own_bot() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        a, b = await connected(base), await connected(base)
        assert a.session_id != b.session_id
        a.send({"type": "text", "text": "Only the first peer hears this."})
        await until(lambda: a.of("tts_end"), 20, "tts_end at a")
        await asyncio.sleep(0.3)
        assert a.loud_since(0) > 20
        assert b.loud_since(0) == 0 and not b.of("tts_start")
        assert len(b.audio) > 50  # b's track ran all along: silence, not nothing
        await a.close()
        await b.close()

    run_stack(body)


def test_a_page_without_a_microphone_can_still_make_the_bot_speak() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        browser = await connected(base, mic=False)
        browser.send({"type": "text", "text": "No microphone here."})
        await until(lambda: browser.of("tts_end"), 20, "tts_end")
        assert browser.of("tts_end")[0]["reason"] == "completed"
        await until(lambda: browser.loud_since(0) > 20, 5, "bot audio")
        await browser.close()

    run_stack(body)


def test_bad_messages_on_the_channel_get_errors_and_the_session_goes_on() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        browser = await connected(base)
        browser.channel.send("{not json")
        browser.channel.send(b"\x00\x01")
        browser.send({"type": "session_config", "audio_format": "json", "voice": "mock-440hz"})
        browser.send({"type": "text", "text": "x" * 5000})
        await until(lambda: len(browser.of("error")) >= 4, 5, "four errors")
        codes = [e["code"] for e in browser.of("error")]
        assert codes == ["INVALID_MESSAGE", "INVALID_MESSAGE", "INVALID_MESSAGE", "TEXT_TOO_LONG"]
        browser.send({"type": "text", "text": "Still here."})
        await until(lambda: browser.of("tts_end"), 20, "tts_end")
        # the voice in the refused config still applied; bot audio is on the track, not JSON
        assert browser.of("tts_end")[0]["reason"] == "completed"
        assert not browser.of("audio")
        await browser.close()

    run_stack(body)


def test_signalling_refuses_bad_offers_clearly() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        url = f"{base}/webrtc/offer"
        status, got = await request("POST", url, b"{")
        assert (status, got["error"]["code"]) == (400, "INVALID_MESSAGE")
        status, got = await request("POST", url, {"sdp": "v=0", "type": "answer"})
        assert (status, got["error"]["code"]) == (400, "INVALID_MESSAGE")
        status, got = await request("POST", url, {"sdp": "v=0\r\nnonsense", "type": "offer"})
        assert (status, got["error"]["code"]) == (400, "INVALID_SDP")
        video_only = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video_only.addTransceiver("video", direction="recvonly")
        await video_only.setLocalDescription(await video_only.createOffer())
        status, got = await request(
            "POST", url, {"sdp": video_only.localDescription.sdp, "type": "offer"}
        )
        assert status == 400 and "no audio" in got["error"]["message"]
        await video_only.close()
        status, got = await request("DELETE", f"{base}/webrtc/nosuchsession")
        assert (status, got["error"]["code"]) == (404, "NOT_FOUND")
        assert not gateway.webrtc.peers

    run_stack(body)


def test_delete_ends_the_session_and_leaves_nothing_behind() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        baseline = len(asyncio.all_tasks())
        browser = await connected(base)
        peer = gateway.webrtc.peers[browser.session_id]
        status, _ = await request("DELETE", f"{base}/webrtc/{browser.session_id}")
        assert status == 204
        await until(lambda: browser.of("session_end"), 5, "session_end")
        assert browser.of("session_end")[0]["reason"] == "client_end"
        await until(lambda: not gateway.webrtc.peers, 5, "peer gone")
        await until(lambda: supervisor.sent(SessionClosed), 5, "session.closed")
        await until(lambda: peer.pc.connectionState == "closed", 5, "pc closed")
        assert all(task.done() for task in peer.tasks)
        assert browser.session_id not in gateway.hub.sessions
        await browser.close()
        await until(lambda: len(asyncio.all_tasks()) <= baseline + 2, 10, "tasks back")

    run_stack(body)


def test_a_peer_that_never_connects_or_goes_silent_is_closed() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        # An offer whose answer is never applied: ICE never starts on the page's side.
        ghost = Browser(base)
        assert (await ghost.offer())[0] == 200
        assert len(gateway.webrtc.peers) == 1
        # A peer whose microphone stops sending.
        quiet = await connected(base)
        assert quiet.mic is not None
        quiet.mic.stop()
        await until(lambda: not gateway.webrtc.peers, 10, "both closed")
        closed = gateway.webrtc.metrics.closed
        assert closed.labels(reason="connect_timeout")._value.get() == 1
        assert closed.labels(reason="peer_silent")._value.get() == 1
        # The peer is gone from the gateway before its SessionClosed crosses the bus.
        await until(lambda: len(supervisor.sent(SessionClosed)) == 2, 5, "both sessions closed")
        await ghost.close()
        await quiet.close()

    run_stack(body, webrtc={"connect_timeout_s": 2.0, "silence_timeout_s": 1.5})


def test_sessions_beyond_the_limit_are_refused_busy() -> None:
    async def body(base: str, gateway: Gateway, supervisor: Supervisor, vad: Vad) -> None:
        first = await connected(base)
        second = Browser(base)
        status, got = await second.offer()
        assert (status, got["error"]["code"]) == (503, "BUSY")
        await first.close()
        await second.close()

    run_stack(body, webrtc={"max_sessions": 1})
